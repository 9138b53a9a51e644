"""Sample-quality evaluation: FID, IS, KID (a JAX port of the FID Inception), SWD, MS-SSIM.

`gan_core.eval.compute(metrics, fake=..., real=... | stats=...)` is the Python API
(`gan_core/eval/api.py`); the metrics are listed in `gan_core/eval/registry.py`.
"""


def __getattr__(name):  # Lazy: configs import gan_core.eval.config without JAX.
  if name == "compute":
    from gan_core.eval.api import compute
    return compute
  raise AttributeError(f"module 'gan_core.eval' has no attribute {name!r}")
