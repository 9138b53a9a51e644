"""Workdir files on local disks and behind URLs (TensorFlow's in-memory ram:// file system
stands in for gs://, which needs the network)."""
import numpy as np
import pytest
from PIL import Image

from gan_core import files, images


@pytest.mark.parametrize("root", ["local", "ram://gan_core_files_test"])
def test_append_read_and_png(root, tmp_path):
  root = str(tmp_path) if root == "local" else root
  files.makedirs(root + "/run")
  path = root + "/run/metrics.jsonl"
  assert not files.exists(path)
  files.append_text(path, '{"step": 1}\n')
  files.append_text(path, '{"step": 2}\n')
  assert files.read_text(path) == '{"step": 1}\n{"step": 2}\n'
  image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
  images.save_png(root + "/run/grid.png", image)
  assert files.exists(root + "/run/grid.png")
  gray = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
  assert files.png_bytes(gray)[:8] == b"\x89PNG\r\n\x1a\n"
  if root == str(tmp_path):
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "run" / "grid.png")), image)
