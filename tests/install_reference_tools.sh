#!/usr/bin/env bash
# Optional test-only references on a CPU PyTorch: torch-fidelity, for the Inception/FID parity
# tests (tests/test_eval_inception.py), and pytorch-pretrained-biggan (the PyTorch port of the
# TF-Hub BigGAN-deep generators), for tests/test_tfhub_weights.py; both without their
# download-only dependencies. Only a locally available CPU wheel of torch is used
# (pip's --find-links, e.g. /opt/wheels): from PyPI, torch would pull several GB of CUDA
# packages. Without it the parity tests are skipped and this script still succeeds.
set -u
if python -c "import importlib.util as u, torch; assert u.find_spec('torch_fidelity') and \
    u.find_spec('pytorch_pretrained_biggan')" 2>/dev/null; then
  exit 0
fi
if pip install -q --no-index --no-deps "torch==2.13.0" 2>/dev/null \
    && pip install -q "torch==2.13.0" && pip install -q --no-deps "torch-fidelity==0.4.0" \
    && pip install -q --no-deps "pytorch-pretrained-biggan==0.1.1"; then
  echo "reference tools installed: $(python -c 'import torch; print("torch", torch.__version__)'), torch-fidelity 0.4.0, pytorch-pretrained-biggan 0.1.1"
else
  echo "note: no local CPU torch wheel; the torch-fidelity and pytorch-pretrained-biggan comparisons will be skipped"
fi
exit 0
