"""tensorflow-datasets datasets read by index (`tfds.data_source`, ArrayRecord files).

Random access is what makes a batch a pure function of (seed, position): resuming
at position 1e9 costs what resuming at 0 costs, every epoch is a true global
shuffle, and the global batch does not depend on the number of processes. tfds
datasets prepared as TFRecord files (tfds' default) can only be read
sequentially; they are refused with the command that converts them in place.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gan_core.data.sources import DataError, center_crop_resize
from gan_core.errors import first_line
from gan_core.images import box_downsample_uint8

RANDOM_ACCESS_FORMATS = ("array_record", "parquet")


class TfdsSource:
  """One split of a tfds dataset, decoded with PIL (center crop, bilinear resize)."""

  def __init__(self, name: str, image_size: int, data_dir: str | None = None,
               split: str = "train", download: bool = False):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    tf.config.set_visible_devices([], "GPU")  # tfds imports TensorFlow; keep it off the GPUs.
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
      raise DataError(f"unknown tfds dataset {name!r} ({first_line(e)}). Use a tfds name such as "
                      "'imagenet2012' or 'cifar10', 'digits', a prepared dataset "
                      "(python -m gan_core.data.prepare) or a path to an image folder.") from e
    if not builder.is_prepared() and download:
      builder.download_and_prepare(file_format="array_record")
    features = builder.info.features
    if "image" not in features:
      raise DataError(f"tfds dataset {name!r} has no 'image' feature (features: "
                      f"{list(features.keys())})")
    file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
    if builder.is_prepared() and str(file_format) not in RANDOM_ACCESS_FORMATS:
      raise DataError(
          f"tfds dataset {name!r} in {builder.data_dir!r} is stored as {file_format}, which can "
          "only be read sequentially (resuming would re-read every example consumed so far). "
          "Convert it in place to ArrayRecord with `tfds convert_format --dataset_version_dir="
          f"{builder.data_dir} --out_file_format=array_record`, prepare it anew with `tfds build "
          f"{name} --file_format=array_record`, or turn its images into a prepared dataset with "
          "`python -m gan_core.data.prepare`.")
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                      decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:
      manual = ""
      if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        manual = (f" This dataset needs a manual download into {builder.data_dir_root}/"
                  f"downloads/manual: {builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
      raise DataError(
          f"tfds dataset {name!r} (split {split!r}) is not prepared in {builder.data_dir!r} "
          f"({first_line(e)}). Prepare it with `tfds build {name} --file_format=array_record` "
          "(or set config.data_dir to where it is, or config.download_dataset=True to let the "
          f"run download it).{manual}") from e
    self.name = name
    self.has_labels = "label" in features
    self.num_classes = features["label"].num_classes if self.has_labels else 0
    self.image_size = image_size

  def __len__(self) -> int:
    return len(self._source)

  def load(self, index: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    example = self._source[index]
    encoded = example["image"]
    try:
      if isinstance(encoded, bytes):
        image = Image.open(io.BytesIO(encoded))
      else:  # Sources that decode anyway (tfds.testing.mock_data) give arrays.
        pixels = np.asarray(encoded)
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1:] == (1,) else pixels)
      with image:
        pixels = center_crop_resize(image, self.image_size)
    except Exception as e:
      raise DataError(f"cannot decode example {index} of tfds dataset {self.name!r} "
                      f"({type(e).__name__}: {e}).") from e
    label = int(example["label"]) if self.has_labels else 0
    return box_downsample_uint8(pixels, downscale), label
