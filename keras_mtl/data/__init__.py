"""Reading the Cityscapes multitask layout: discovery, decoding, tf.data pipeline.

`keras_mtl.data.layout` and `keras_mtl.data.labels` need only numpy; the pipeline functions
(`make_dataset`, `load_frame`, `list_stems`, `median_depth`, `normalize_inputs`) import TensorFlow and are loaded
on first use, so data tools that only write files stay light.
"""

from __future__ import annotations

from typing import Any

_PIPELINE_NAMES = ("list_stems", "load_frame", "make_dataset", "median_depth", "normalize_inputs")

__all__ = list(_PIPELINE_NAMES)


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from keras_mtl.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_mtl.data' has no attribute {name!r}")
