"""Input data: the embedded digits set, image folders and tfds datasets."""
from gan_core.data.pipeline import IndexedPipeline, TfdsPipeline, build_pipeline
from gan_core.data.sources import (ArraySource, DataError, ImageFolderSource, center_crop_resize,
                                   digits_source)

__all__ = ["ArraySource", "DataError", "ImageFolderSource", "IndexedPipeline", "TfdsPipeline",
           "build_pipeline", "center_crop_resize", "digits_source"]
