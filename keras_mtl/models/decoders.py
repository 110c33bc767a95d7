"""DeepLabV3+ "lite" decoder: one per task, fed stride-16 and stride-4 features; depth heads."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_mtl.models.blocks import (
    SEPARATOR,
    conv_bn,
    depthwise_bn,
    depthwise_separable,
)

ASPP_CHANNELS = 256
ASPP_DILATIONS: tuple[int, ...] = (2, 4, 6)
SHORTCUT_CHANNELS = 48
UPSAMPLE_FACTOR = 4

# How the depth decoder's last convolution becomes metres (`MultiTaskNet(depth_head=...)`):
# `linear`: the convolution is metres (the original head); `log`: it is log-metres around a
# learned offset, `depth = exp(x + b)`, always positive.
DEPTH_HEADS: tuple[str, ...] = ("linear", "log")
DEFAULT_DEPTH_INIT = 20.0  # metres: log head's initial output when no training data says better
# Bounds of the log head's exponent (1 mm .. 10 km): keeps exp finite in float32 and float16
# activations without touching any depth a camera sees.
LOG_DEPTH_BOUNDS = (math.log(1e-3), math.log(1e4))
LOG_HEAD_INIT_VARIANCE = 1e-2  # variance scale of the log head's last convolution


@keras.saving.register_keras_serializable(package="keras_mtl")
class ExpDepth(keras.layers.Layer):
    """`depth = exp(clip(x + b, LOG_DEPTH_BOUNDS))`: log-depth to metres, always positive.

    `b` is one trainable scalar initialised to `log(initial_depth)`, so a head whose convolution
    starts near 0 predicts `initial_depth` everywhere (the training split's median depth), and
    a unit change of `x` is a constant *relative* change of depth at any distance.

    Args:
        initial_depth: metres predicted for `x = 0` before training.
        **kwargs: `name`, `dtype`.

    Example:

    ```python
    layer = ExpDepth(initial_depth=15.0)
    layer(np.zeros((1, 4, 4, 1), "float32"))  # 15.0 everywhere
    ```
    """

    def __init__(self, initial_depth: float = DEFAULT_DEPTH_INIT, **kwargs) -> None:
        super().__init__(**kwargs)
        if not initial_depth > 0:
            raise ValueError(f"initial_depth must be positive metres, got {initial_depth}")
        self.initial_depth = float(initial_depth)

    def build(self, input_shape) -> None:
        self.log_depth_offset = self.add_weight(
            name="log_depth_offset",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_depth)),
            trainable=True,
        )

    def call(self, inputs):
        low, high = LOG_DEPTH_BOUNDS
        return ops.exp(ops.clip(inputs + self.log_depth_offset, low, high))

    def get_config(self) -> dict:
        return {**super().get_config(), "initial_depth": self.initial_depth}


def deeplabv3plus_lite_decoder(
    features: keras.KerasTensor,
    shortcut: keras.KerasTensor,
    out_channels: int,
    prefix: str,
    output_name: str,
    dropout: float = 0.2,
    output_scale: float = 1.0,
    depth_head: str | None = None,
    initial_depth: float = DEFAULT_DEPTH_INIT,
) -> keras.KerasTensor:
    """DeepLabV3+ lite head: ASPP (no image pooling) + stride-4 shortcut + two bilinear x4.

    - ASPP: 1x1 -> 256 (+BN+ReLU) and depthwise-separable branches with dilation 2, 4, 6
      (dw3x3 +BN+ReLU, 1x1 -> 256 +BN+ReLU); concat (1024 ch); SpatialDropout2D; 1x1 -> 256
      +BN+ReLU.
    - Shortcut: 1x1 -> 48 +BN+ReLU on the stride-4 features.
    - Bilinear x4 of the ASPP output, concat with the shortcut (304 ch), dw3x3 +BN (no
      activation), 1x1 -> `out_channels` (no BN, no bias, no activation), bilinear x4.

    The last convolution and the last upsampling are float32 under any dtype policy, so the
    outputs (logits, metres) are float32 also under mixed precision.

    Args:
        features: stride-16 encoder features.
        shortcut: stride-4 features (the fused stems).
        out_channels: output channels (1 depth, C semantic, 2 motion).
        prefix: layer name prefix, e.g. `depth_decoder`.
        output_name: name of the final layer (the model's output name, e.g. `depth`).
        dropout: channel dropout rate after the ASPP concat (training only).
        output_scale: constant multiplying the last convolution's output (1 = none); only
            for the `linear` depth head (the `depth_scale` ablation).
        depth_head: None for class logits; `linear` (the convolution is metres) or `log`
            (upsampled in log space, then `ExpDepth`: positive metres) for depth.
        initial_depth: metres the `log` head predicts before training.

    Returns:
        The output at 16x the resolution of `features`.
    """
    sep = SEPARATOR
    branches = [conv_bn(features, ASPP_CHANNELS, 1, name=f"{prefix}{sep}aspp_1x1")]
    for rate in ASPP_DILATIONS:
        branches.append(
            depthwise_separable(
                features, ASPP_CHANNELS, name=f"{prefix}{sep}aspp_d{rate}", dilation_rate=rate
            )
        )
    x = keras.layers.Concatenate(name=f"{prefix}{sep}aspp_concat")(branches)
    x = keras.layers.SpatialDropout2D(dropout, name=f"{prefix}{sep}aspp_dropout")(x)
    x = conv_bn(x, ASPP_CHANNELS, 1, name=f"{prefix}{sep}aspp_project")

    skip = conv_bn(shortcut, SHORTCUT_CHANNELS, 1, name=f"{prefix}{sep}shortcut")
    x = keras.layers.UpSampling2D(
        UPSAMPLE_FACTOR, interpolation="bilinear", name=f"{prefix}{sep}upsample_aspp"
    )(x)
    x = keras.layers.Concatenate(name=f"{prefix}{sep}concat")([x, skip])
    x = depthwise_bn(x, name=f"{prefix}{sep}fuse_depthwise", activation=False)
    x = keras.layers.Conv2D(
        out_channels,
        1,
        use_bias=False,
        # fan-in scaling keeps the initial logits at unit scale; He-over-fan-out with only C
        # outputs gave logits of std ~10 and initial cross-entropies of ~7 instead of log C.
        kernel_initializer=keras.initializers.VarianceScaling(
            # The log depth head starts at ~depth_init everywhere (log-depth std ~0.1 for
            # unit-scale features) instead of spreading its first guesses over e^(+-2).
            scale=LOG_HEAD_INIT_VARIANCE if depth_head == "log" else 1.0,
            mode="fan_in",
            distribution="untruncated_normal",
        ),
        dtype="float32",
        name=f"{prefix}{sep}classifier",
    )(x)
    if depth_head == "log":
        # Interpolating log-depth keeps the x4 upsampling scale-free (geometric means).
        x = keras.layers.UpSampling2D(
            UPSAMPLE_FACTOR,
            interpolation="bilinear",
            dtype="float32",
            name=f"{prefix}{sep}upsample",
        )(x)
        return ExpDepth(initial_depth, dtype="float32", name=output_name)(x)
    if depth_head not in (None, "linear"):
        raise ValueError(f"unknown depth_head {depth_head!r}; choose one of {DEPTH_HEADS}")
    if output_scale != 1.0:
        x = keras.layers.Rescaling(
            output_scale, dtype="float32", name=f"{prefix}{sep}output_scale"
        )(x)
    return keras.layers.UpSampling2D(
        UPSAMPLE_FACTOR, interpolation="bilinear", dtype="float32", name=output_name
    )(x)
