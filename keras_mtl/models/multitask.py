"""The two-stream, three-decoder network, single-task baselines, resizing and pretrained loading.

Layer names (`.` separates levels, Keras 3 forbids `/`):

- `flow_stem.*`, `rgb_stem.*`: MobileNetV2 blocks 0-3, one copy per input.
- `fuse.*`: concat [flow, rgb] -> depthwise 3x3 + BN -> 1x1 + BN (no activation); only when
  the model has both inputs.
- `encoder.*`: MobileNetV2 blocks 4-17, shared by all tasks; `encoder.block17.project_bn`
  outputs the shared stride-16 features (`SHARED_FEATURES_LAYER`), `encoder.block17.project`
  is the last shared convolution (`LAST_SHARED_LAYER`).
- `<task>_decoder.*`: one DeepLabV3+ lite decoder per task; its last layer is named `<task>`.

The shared trunk (stems, fusion, encoder) hands off to the task heads (the decoders) at two
layers, recorded by the builder as `model.shared_trunk` (a `SharedTrunk`): the stride-4 fused
features and the stride-16 encoder features. The trainer composes a trunk model and head models
from it to split the backward pass per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from keras_mtl.models.blocks import SEPARATOR, fuse_streams
from keras_mtl.models.decoders import (
    DEFAULT_DEPTH_INIT,
    DEPTH_HEADS,
    deeplabv3plus_lite_decoder,
)
from keras_mtl.models.folding import fold_for_inference
from keras_mtl.models.mobilenetv2 import (
    check_backbone,
    mobilenetv2_encoder,
    mobilenetv2_stem,
    stem_channels,
)
from keras_mtl.tasks import INPUT_NAMES, TASK_NAMES, TASKS, num_channels

OUTPUT_STRIDE = 16
SHARED_FEATURES_LAYER = f"encoder{SEPARATOR}block17{SEPARATOR}project_bn"
LAST_SHARED_LAYER = f"encoder{SEPARATOR}block17{SEPARATOR}project"
FUSE_PREFIX = "fuse"
ENCODER_PREFIX = "encoder"
# Metres per unit of the linear depth head (`MultiTaskNet(depth_scale=...)`): 1 = the original.
DEPTH_SCALE = 1.0
# The depth head of new models (docs/model.md: chosen by the ablation in docs/results.md).
DEPTH_HEAD = "log"
# The head of models saved before `depth_head` existed.
LEGACY_DEPTH_HEAD = "linear"


def stem_prefix(input_name: str) -> str:
    """Layer name prefix of the stem of one input (`flow_stem`, `rgb_stem`)."""
    return f"{input_name}_stem"


def decoder_prefix(task: str) -> str:
    """Layer name prefix of the decoder of one task (`depth_decoder`, ...)."""
    return f"{task}_decoder"


@dataclass(frozen=True)
class SharedTrunk:
    """Where a multi-task network's shared trunk hands off to its task heads, by layer name.

    The trunk runs from the inputs to `output_layers`; each task head reads those layers'
    outputs and otherwise only layers of its own. A network records its trunk when it builds its
    graph (`MultiTaskNet.shared_trunk`), so that a trunk model and head models sharing its layers
    and weights can be composed from it (`trunk_model`, `heads_model`): the trainer splits the
    backward pass there, and GradNorm's handles are read from here.

    Args:
        output_layers: names of the trunk layers whose outputs the heads read, in the order
            the trunk computes them.
        shared_features_layer: the layer whose output is the shared feature map
            (pseudo-GradNorm's per-task gradient norms are taken there).
        last_shared_layer: the last shared convolution; its `kernel` is GradNorm's W.

    Example:

    ```python
    trunk = model.shared_trunk  # SharedTrunk(("fuse.project_bn", "encoder.block17.project_bn"))
    features = trunk.trunk_model(model)(inputs)  # the two hand-off feature maps
    outputs = trunk.heads_model(model)(features)  # equal to model(inputs)
    ```
    """

    output_layers: tuple[str, ...]
    shared_features_layer: str = SHARED_FEATURES_LAYER
    last_shared_layer: str = LAST_SHARED_LAYER

    def outputs(self, model: keras.Model) -> list[keras.KerasTensor]:
        """The hand-off tensors of `model`'s graph, in `output_layers` order."""
        return [model.get_layer(name).output for name in self.output_layers]

    def trunk_model(self, model: keras.Model) -> keras.Model:
        """The trunk of `model` (its inputs -> the hand-off tensors), sharing its layers."""
        return keras.Model(model.input, self.outputs(model), name=f"{model.name}_trunk")

    def heads_model(self, model: keras.Model, tasks: Sequence[str] | None = None) -> keras.Model:
        """The heads of `tasks` (default all; the hand-off tensors -> those outputs), sharing
        `model`'s layers."""
        outputs = model.output if tasks is None else {task: model.output[task] for task in tasks}
        return keras.Model(self.outputs(model), outputs, name=f"{model.name}_heads")


def shared_trunk_of(model: keras.Model) -> SharedTrunk | None:
    """The `SharedTrunk` a network recorded (`MultiTaskNet` does), or None for a model without.

    Args:
        model: a network, or an object whose `.model` is one (the trainer).
    """
    return getattr(unwrap_model(model), "shared_trunk", None)


def _layer_named_by_output(model: keras.Model, tensor: keras.KerasTensor) -> str:
    """Name of the layer of `model` whose output is `tensor`."""
    return next(layer.name for layer in model.layers if layer.output is tensor)


def check_img_size(img_size: Sequence[int]) -> tuple[int, int]:
    """Returns `img_size` as (H, W); ValueError unless both are positive multiples of 16."""
    if len(img_size) != 2:
        raise ValueError(f"img_size must be (height, width), got {tuple(img_size)}")
    height, width = (int(v) for v in img_size)
    if height <= 0 or width <= 0 or height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        raise ValueError(
            f"image size {height}x{width} is not usable: height and width must be positive "
            f"multiples of {OUTPUT_STRIDE} (the network's output stride)"
        )
    return height, width


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskNet(keras.Model):
    """Dense multi-task network: MobileNetV2 streams, stride-4 fusion, one decoder per task.

    Each input (`flow`, `rgb`: H x W x 3, normalised) runs through its own copy of MobileNetV2
    blocks 0-3 (stride 4); with two inputs the stems are fused (concat -> depthwise 3x3 + BN ->
    1x1 + BN, no activation). Blocks 4-17 (stride 16, no 1280 conv) are shared. Each task has a
    DeepLabV3+ lite decoder fed the stride-16 features and the stride-4 fused features.
    Outputs are float32 also under mixed precision: `depth` [B,H,W,1] metres (positive with
    the `log` head), `semantic` [B,H,W,C] logits, `motion` [B,H,W,2] logits.

    Args:
        img_size: input (height, width), multiples of 16.
        tasks: which outputs to build, a subset of `("depth", "semantic", "motion")`.
        input_names: which inputs the model takes, a subset of `("flow", "rgb")`.
        semantic_classes: semantic classes C (5 or 19 in this project).
        backbone: `mobilenetv2` (torchvision blocks) or `mobilenetv2_ericsun` (the t=1 block
            keeps its 1x1 expansion, the original multi-task network).
        width_mult: MobileNetV2 channel multiplier (channels rounded to multiples of 8).
        dropout: channel dropout after each ASPP concat (training only).
        depth_scale: metres per unit of the depth head's last convolution (a `Rescaling`
            layer when not 1). The default, 1, is the original head; larger values make the
            head's initial outputs span tens of metres but also multiply its effective step
            size, which trained worse at lr 3e-3 (docs/model.md). `linear` head only.
        depth_head: `log` (default: `depth = exp(x + b)`, positive, `b` learned from
            `log(depth_init)`) or `linear` (the original head: the convolution is metres).
        depth_init: metres the `log` head predicts before training (the training split's
            median depth, see `keras_mtl.data.median_depth`).
        **kwargs: `name`, `trainable`.

    Attributes:
        shared_trunk: where the shared trunk hands off to the task heads (`SharedTrunk`:
            the stride-4 fused features and the stride-16 encoder features).

    Example:

    ```python
    model = MultiTaskNet(img_size=(64, 128), width_mult=0.25)
    outputs = model({"flow": np.zeros((1, 64, 128, 3)), "rgb": np.zeros((1, 64, 128, 3))})
    outputs["semantic"].shape  # (1, 64, 128, 5)
    ```
    """

    def __init__(
        self,
        img_size: Sequence[int] = (384, 768),
        tasks: Sequence[str] = TASK_NAMES,
        input_names: Sequence[str] = INPUT_NAMES,
        semantic_classes: int = 5,
        backbone: str = "mobilenetv2_ericsun",
        width_mult: float = 1.0,
        dropout: float = 0.2,
        depth_scale: float = DEPTH_SCALE,
        depth_head: str = DEPTH_HEAD,
        depth_init: float = DEFAULT_DEPTH_INIT,
        **kwargs,
    ) -> None:
        height, width = check_img_size(img_size)
        check_backbone(backbone)
        tasks = tuple(tasks)
        # Inputs always in the canonical order: fusion concatenates [flow, rgb].
        input_names = tuple(name for name in INPUT_NAMES if name in tuple(input_names))
        unknown_tasks = set(tasks) - set(TASK_NAMES)
        if not tasks or unknown_tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct names from {TASK_NAMES}, got {tasks}")
        if not input_names:
            raise ValueError(f"input_names must name at least one of {INPUT_NAMES}")
        if semantic_classes < 2:
            raise ValueError(f"semantic_classes must be >= 2, got {semantic_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be positive, got {depth_scale}")
        if depth_head not in DEPTH_HEADS:
            raise ValueError(f"depth_head must be one of {DEPTH_HEADS}, got {depth_head!r}")
        if depth_head == "log" and depth_scale != 1.0:
            raise ValueError("depth_scale applies to the linear depth head only (log head: 1)")
        if not depth_init > 0:
            raise ValueError(f"depth_init must be positive metres, got {depth_init}")

        # === Functional model ===
        inputs = {
            name: keras.Input(shape=(height, width, 3), name=name, dtype="float32")
            for name in input_names
        }
        streams = [
            mobilenetv2_stem(inputs[name], stem_prefix(name), backbone, width_mult)
            for name in input_names
        ]
        if len(streams) > 1:
            stride4 = fuse_streams(streams, stem_channels(width_mult), name=FUSE_PREFIX)
        else:
            stride4 = streams[0]
        stride16 = mobilenetv2_encoder(stride4, ENCODER_PREFIX, width_mult)
        outputs = {
            task: deeplabv3plus_lite_decoder(
                stride16,
                stride4,
                num_channels(task, semantic_classes),
                prefix=decoder_prefix(task),
                output_name=task,
                dropout=dropout,
                output_scale=depth_scale if task == "depth" else 1.0,
                depth_head=depth_head if task == "depth" else None,
                initial_depth=depth_init,
            )
            for task in tasks
        }
        kwargs.setdefault("name", "multi_task_net" if len(tasks) > 1 else f"{tasks[0]}_net")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Trunk / heads hand-off ===
        # Every decoder reads the stride-16 encoder features and the stride-4 shortcut, and
        # nothing else of the trunk.
        self.shared_trunk = SharedTrunk(
            output_layers=tuple(_layer_named_by_output(self, t) for t in (stride4, stride16))
        )

        # === Config ===
        self.img_size = (height, width)
        self.tasks = tasks
        self.input_names = input_names
        self.semantic_classes = semantic_classes
        self.backbone = backbone
        self.width_mult = width_mult
        self.dropout = dropout
        self.depth_scale = depth_scale
        self.depth_head = depth_head
        self.depth_init = float(depth_init)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "img_size": list(self.img_size),
            "tasks": list(self.tasks),
            "input_names": list(self.input_names),
            "semantic_classes": self.semantic_classes,
            "backbone": self.backbone,
            "width_mult": self.width_mult,
            "dropout": self.dropout,
            "depth_scale": self.depth_scale,
            "depth_head": self.depth_head,
            "depth_init": self.depth_init,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiTaskNet:
        # Models saved before `depth_scale`/`depth_head` existed have the original linear head.
        return cls(**{"depth_scale": DEPTH_SCALE, "depth_head": LEGACY_DEPTH_HEAD, **config})


def build_multitask_model(
    img_size: Sequence[int] = (384, 768),
    semantic_classes: int = 5,
    backbone: str = "mobilenetv2_ericsun",
    width_mult: float = 1.0,
    dropout: float = 0.2,
    depth_scale: float = DEPTH_SCALE,
    depth_head: str = DEPTH_HEAD,
    depth_init: float = DEFAULT_DEPTH_INIT,
) -> MultiTaskNet:
    """The multi-task network: inputs `flow`, `rgb`; outputs `depth`, `semantic`, `motion`.

    Args:
        img_size: input (height, width), multiples of 16 (ValueError otherwise).
        semantic_classes: semantic classes (5 or 19).
        backbone: `mobilenetv2_ericsun` (the original) or `mobilenetv2`.
        width_mult: MobileNetV2 channel multiplier.
        dropout: ASPP channel dropout.
        depth_scale: metres per unit of the linear depth head (see `MultiTaskNet`).
        depth_head: `log` (default) or `linear` (the original), see `MultiTaskNet`.
        depth_init: metres the `log` head predicts before training.

    Example:

    ```python
    model = build_multitask_model((384, 768))
    sorted(model.output.keys())  # ['depth', 'motion', 'semantic']
    ```
    """
    return MultiTaskNet(
        img_size=img_size,
        tasks=TASK_NAMES,
        input_names=INPUT_NAMES,
        semantic_classes=semantic_classes,
        backbone=backbone,
        width_mult=width_mult,
        dropout=dropout,
        depth_scale=depth_scale,
        depth_head=depth_head,
        depth_init=depth_init,
    )


def build_single_task_model(
    task: str,
    img_size: Sequence[int] = (384, 768),
    semantic_classes: int = 5,
    backbone: str = "mobilenetv2",
    width_mult: float = 1.0,
    dropout: float = 0.2,
    depth_scale: float = DEPTH_SCALE,
    depth_head: str = DEPTH_HEAD,
    depth_init: float = DEFAULT_DEPTH_INIT,
) -> MultiTaskNet:
    """A single-task baseline: the inputs of `TASKS[task].inputs`, one decoder, output `{task}`.

    Depth and semantic take `rgb` only (no fusion: the decoder shortcut is the RGB stem);
    motion takes `flow` and `rgb` with the same fusion as the multi-task network.

    Example:

    ```python
    model = build_single_task_model("depth", (384, 768))
    list(model.input.keys())  # ['rgb']
    ```
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")
    return MultiTaskNet(
        img_size=img_size,
        tasks=(task,),
        input_names=TASKS[task].inputs,
        semantic_classes=semantic_classes,
        backbone=backbone,
        width_mult=width_mult,
        dropout=dropout,
        depth_scale=depth_scale,
        depth_head=depth_head,
        depth_init=depth_init,
    )


def unwrap_model(model: keras.Model) -> keras.Model:
    """The functional network inside `model`: itself, or `model.model` (the trainer)."""
    if not isinstance(model, MultiTaskNet) and isinstance(
        getattr(model, "model", None), keras.Model
    ):
        return model.model
    return model


def rebuild(
    model: keras.Model, img_size: Sequence[int] | None = None, *, folded: bool = False
) -> keras.Model:
    """The same architecture at another input size, carrying the same weights.

    Every layer is size-independent (convolutions, BN, fixed x4 upsampling), so the weights
    transfer unchanged; outputs match wherever the receptive fields see the same pixels.

    Args:
        model: a `MultiTaskNet` (or an object whose `.model` is one, e.g. the trainer).
        img_size: new (height, width), multiples of 16; None: the model's own.
        folded: return the inference form (`fold_for_inference`: every BatchNorm folded into
            the convolution before it, the decoders' linear tails moved before their
            upsampling; the outputs of `model(x, training=False)` with fewer ops), a plain
            functional `keras.Model` for evaluation and export, not for training.

    Returns:
        A `MultiTaskNet`; with `folded`, the folded functional `keras.Model`.

    Example:

    ```python
    larger = rebuild(model, (512, 1024))
    serving_network = rebuild(model, (384, 768), folded=True)
    ```
    """
    model = unwrap_model(model)
    if not isinstance(model, MultiTaskNet):
        raise ValueError(
            f"rebuild needs a MultiTaskNet (from build_multitask_model/build_single_task_model), "
            f"got {type(model).__name__}"
        )
    config = model.get_config()
    if img_size is not None:
        config["img_size"] = list(check_img_size(img_size))
    if folded and tuple(config["img_size"]) == tuple(model.img_size):
        return fold_for_inference(model)  # a copy already: no rebuild needed
    resized = MultiTaskNet.from_config(config)
    resized.set_weights(model.get_weights())
    return fold_for_inference(resized) if folded else resized
