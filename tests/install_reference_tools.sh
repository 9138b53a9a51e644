#!/usr/bin/env bash
# Optional test-only reference: torch-fidelity on a CPU PyTorch, for the Inception/FID parity
# tests (tests/test_eval_inception.py). Only a locally available CPU wheel of torch is used
# (pip's --find-links, e.g. /opt/wheels): from PyPI, torch would pull several GB of CUDA
# packages. Without it the parity tests are skipped and this script still succeeds.
set -u
if python -c "import importlib.util as u, torch; assert u.find_spec('torch_fidelity')" 2>/dev/null; then
  exit 0
fi
if pip install -q --no-index --no-deps "torch==2.13.0" 2>/dev/null \
    && pip install -q "torch==2.13.0" && pip install -q --no-deps "torch-fidelity==0.4.0"; then
  echo "reference tools installed: $(python -c 'import torch; print("torch", torch.__version__)'), torch-fidelity 0.4.0"
else
  echo "note: no local CPU torch wheel; the torch-fidelity comparisons will be skipped"
fi
exit 0
