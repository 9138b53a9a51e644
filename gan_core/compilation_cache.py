"""JAX's persistent compilation cache, on by default for single-process runs.

Compiling a BigGAN iteration takes minutes on a CPU and tens of seconds on accelerators, and
a restarted or resumed run compiles exactly the same programs again. With the cache, XLA's
compiled executables are written to a directory the first time and read back by every later
run with the same program, JAX/XLA version, flags and devices (JAX keys the entries by all
of them, so a stale entry is never used).

Where: `--compilation_cache=DIR` (also `gs://...`), else JAX's own `JAX_COMPILATION_CACHE_DIR`,
else, for a single-process run, `$XDG_CACHE_HOME/gan_jax/xla` (`~/.cache/gan_jax/xla`).
`--compilation_cache=off` disables it. A multi-process run gets no default: JAX writes the
cache from process 0 only, so with a per-machine directory process 0 would load programs that
the others compile, and CPU collectives time out waiting for them (launch/local.sh); give
such runs a directory every process reads (docs/scaling.md). Only programs that took at
least a second to compile are stored (JAX's threshold). A local directory that cannot be
created or written is reported once and the run compiles as before: a cache never stops a run.
"""
from __future__ import annotations

import os
import tempfile

from absl import logging

OFF = ("off", "none", "false", "0")


def default_dir() -> str:
  """$XDG_CACHE_HOME/gan_jax/xla, i.e. ~/.cache/gan_jax/xla by default."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "gan_jax", "xla")


def enable(spec: str | None = None) -> str | None:
  """Turns the cache on and returns the directory in use (None: off).

  `spec`: a directory, 'off', or None for JAX_COMPILATION_CACHE_DIR / the default above.
  Call after `jax.distributed` is initialised (the default depends on the process count).
  """
  import jax
  if spec is None:
    spec = (jax.config.jax_compilation_cache_dir
            or (default_dir() if jax.process_count() == 1 else None))
    if spec is None:
      return None
  if not spec or spec.strip().lower() in OFF:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  path = spec if "://" in spec else os.path.abspath(os.path.expanduser(spec))
  if "://" not in path:
    try:
      os.makedirs(path, exist_ok=True)
      with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test"):
        pass
    except OSError as e:
      logging.warning("Compilation cache %s is not usable (%s); compiling without it. Pass "
                      "--compilation_cache=DIR to move it or =off to silence this.", path, e)
      jax.config.update("jax_compilation_cache_dir", None)
      return None
  jax.config.update("jax_compilation_cache_dir", path)
  logging.info("Compilation cache: %s", path)
  return path
