"""The network: MobileNetV2 streams, stride-4 fusion, shared encoder, one decoder per task.

Public API: `build_multitask_model`, `build_single_task_model`, `rebuild`, `load_pretrained`,
`fold_for_inference` (the inference form: BatchNorm folded into the convolutions, decoder tails
before their upsampling; also `rebuild(..., folded=True)`), `BatchNormalization` (the
training BatchNorm),
`MultiTaskNet`, the trunk / heads structure `SharedTrunk` (`model.shared_trunk`,
`shared_trunk_of(model)`), and the layer-name handles `SHARED_FEATURES_LAYER` (output = shared
stride-16 encoder features) and `LAST_SHARED_LAYER` (last shared conv; its `kernel` is
GradNorm's W).
"""

from keras_mtl.models.blocks import SEPARATOR, BatchNormalization
from keras_mtl.models.decoders import DEFAULT_DEPTH_INIT, DEPTH_HEADS, ExpDepth
from keras_mtl.models.folding import fold_batch_norms, fold_for_inference, fold_linear_tails
from keras_mtl.models.mobilenetv2 import BACKBONES
from keras_mtl.models.multitask import (
    DEPTH_HEAD,
    DEPTH_SCALE,
    LAST_SHARED_LAYER,
    OUTPUT_STRIDE,
    SHARED_FEATURES_LAYER,
    MultiTaskNet,
    SharedTrunk,
    build_multitask_model,
    build_single_task_model,
    check_img_size,
    rebuild,
    shared_trunk_of,
    unwrap_model,
)
from keras_mtl.models.pretrained import load_pretrained

__all__ = [
    "BACKBONES",
    "DEFAULT_DEPTH_INIT",
    "DEPTH_HEAD",
    "DEPTH_HEADS",
    "DEPTH_SCALE",
    "ExpDepth",
    "BatchNormalization",
    "LAST_SHARED_LAYER",
    "OUTPUT_STRIDE",
    "SEPARATOR",
    "SHARED_FEATURES_LAYER",
    "MultiTaskNet",
    "SharedTrunk",
    "build_multitask_model",
    "build_single_task_model",
    "check_img_size",
    "fold_batch_norms",
    "fold_for_inference",
    "fold_linear_tails",
    "load_pretrained",
    "rebuild",
    "shared_trunk_of",
    "unwrap_model",
]
