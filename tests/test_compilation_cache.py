"""The persistent compilation cache (gan_core/compilation_cache.py): where it goes, that a
restarted run reads it (nothing recompiled, the same result), and that a bad directory
never stops a run."""
import os
import subprocess

import jax
import numpy as np

from gan_core import compilation_cache
from conftest import REPO, cli_command, restore_latest


def test_where_the_cache_goes(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation_cache.default_dir() == str(tmp_path / "xdg" / "gan_jax" / "xla")
  before = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    assert compilation_cache.enable() == str(tmp_path / "xdg" / "gan_jax" / "xla")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "env"))  # JAX's variable
    assert compilation_cache.enable() == str(tmp_path / "env")
    assert compilation_cache.enable(str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "flag")
    assert compilation_cache.enable("off") is None
    assert jax.config.jax_compilation_cache_dir is None
    (tmp_path / "a_file").write_text("x")  # Not a directory: reported, and no cache.
    assert compilation_cache.enable(str(tmp_path / "a_file" / "cache")) is None
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def _entries(cache):
  return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()
          and not p.name.startswith(".")}


def test_a_restarted_run_reads_its_programs_from_the_cache(tmp_path):
  """Run 1 fills the cache; run 2 (a fresh workdir, the same config) writes nothing new,
  i.e. every program it needed was read from the cache, and trains to the same state."""
  cache = tmp_path / "cache"
  # JAX stores only programs that took >= 1 s to compile; small ones (the sampler) sit near
  # that line on a loaded machine, so whether run 1 or run 2 stored them was timing. Storing
  # every program makes "run 2 writes nothing" depend on the cache alone.
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  for name in ("first", "second"):
    # JAX_LOG_COMPILES makes JAX report every persistent-cache hit as a warning.
    result = subprocess.run(cli_command("biggan", tmp_path / name, 2), cwd=REPO,
                            env={**env, "JAX_LOG_COMPILES": "1"}, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    hit = "Persistent compilation cache hit for 'jit__train_iteration'"
    if name == "first":
      written = _entries(cache)
      assert written, "nothing was cached"
      assert hit not in result.stderr
    else:
      assert hit in result.stderr, result.stderr[-3000:]
  assert _entries(cache) == written
  _, first, _ = restore_latest(tmp_path / "first")
  _, second, _ = restore_latest(tmp_path / "second")
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)
