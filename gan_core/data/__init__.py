"""Input data: random-access sources (digits, image folders, prepared datasets, tfds
ArrayRecord) read through one deterministic, exactly resumable grain pipeline."""
from gan_core.data.pipeline import (IndexedPipeline, build_pipeline, build_source,
                                    default_num_workers)
from gan_core.data.sources import (ArraySource, DataError, ImageFolderSource, center_crop_resize,
                                   digits_source, get_examples)

__all__ = ["ArraySource", "DataError", "ImageFolderSource", "IndexedPipeline", "build_pipeline",
           "build_source", "center_crop_resize", "default_num_workers", "digits_source",
           "get_examples"]
