"""DeepLabV3+ "lite" decoder: one per task, fed stride-16 and stride-4 features."""

from __future__ import annotations

import keras

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


def deeplabv3plus_lite_decoder(
    features: keras.KerasTensor,
    shortcut: keras.KerasTensor,
    out_channels: int,
    prefix: str,
    output_name: str,
    dropout: float = 0.2,
    output_scale: float = 1.0,
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
        output_scale: constant multiplying the last convolution's output (1 = none). The
            depth head uses it so that unit-scale activations mean metres at road-scene scale.

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
            scale=1.0, mode="fan_in", distribution="untruncated_normal"
        ),
        dtype="float32",
        name=f"{prefix}{sep}classifier",
    )(x)
    if output_scale != 1.0:
        x = keras.layers.Rescaling(
            output_scale, dtype="float32", name=f"{prefix}{sep}output_scale"
        )(x)
    return keras.layers.UpSampling2D(
        UPSAMPLE_FACTOR, interpolation="bilinear", dtype="float32", name=output_name
    )(x)
