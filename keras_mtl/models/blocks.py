"""Convolution building blocks shared by the encoder streams, the fusion and the decoders.

Every convolution has no bias and is followed by BatchNorm (as in the original network);
activations are ReLU. Layer names are hierarchical with `.` as the separator (Keras 3
forbids `/` in layer names): e.g. `rgb_stem.block2.depthwise_bn`.

Only Keras layers that TFLite maps to builtin ops are used (Conv2D, DepthwiseConv2D,
BatchNormalization, ReLU, Add, Concatenate), so the exported graph needs no custom ops.
"""

from __future__ import annotations

import keras

SEPARATOR = "."
# PyTorch BatchNorm defaults (momentum 0.1 there = 0.9 here, eps 1e-5): the original network's
# statistics and any ported weights behave the same.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_initializer() -> keras.initializers.Initializer:
    """He-normal over fan-out, torchvision's initialisation of MobileNetV2 convolutions."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's momentum and epsilon."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    activation: bool = True,
) -> keras.KerasTensor:
    """Conv2D (no bias, `same` padding) + BatchNorm (+ ReLU).

    Layers: `{name}`, `{name}_bn`, `{name}_relu`.

    Args:
        x: input tensor (NHWC).
        filters: output channels.
        kernel_size: square kernel size.
        name: name of the convolution; the BN and ReLU append `_bn` / `_relu`.
        strides: convolution stride.
        activation: whether a ReLU follows the BatchNorm.

    Returns:
        The output tensor.
    """
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=name,
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def depthwise_bn(
    x: keras.KerasTensor,
    name: str,
    strides: int = 1,
    dilation_rate: int = 1,
    activation: bool = True,
) -> keras.KerasTensor:
    """Depthwise 3x3 (no bias, `same` padding) + BatchNorm (+ ReLU).

    Layers: `{name}`, `{name}_bn`, `{name}_relu`.

    Args:
        x: input tensor (NHWC).
        name: name of the depthwise convolution.
        strides: stride (1 or 2; strided convolutions are never dilated here).
        dilation_rate: dilation of the 3x3 kernel.
        activation: whether a ReLU follows the BatchNorm.

    Returns:
        The output tensor, same channels as `x`.
    """
    x = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        dilation_rate=dilation_rate,
        padding="same",
        use_bias=False,
        depthwise_initializer=conv_initializer(),
        name=name,
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def inverted_residual(
    x: keras.KerasTensor,
    filters: int,
    expansion: float,
    strides: int,
    name: str,
    keep_expansion: bool = False,
) -> keras.KerasTensor:
    """MobileNetV2 inverted residual block.

    [1x1 expand + BN + ReLU] -> depthwise 3x3 (stride) + BN + ReLU -> 1x1 project + BN (linear),
    plus a residual add when the stride is 1 and the channels are unchanged.

    Layers: `{name}.expand(_bn, _relu)`, `{name}.depthwise(_bn, _relu)`, `{name}.project(_bn)`,
    `{name}.add`.

    Args:
        x: input tensor (NHWC).
        filters: output channels.
        expansion: expansion ratio t (hidden channels = round(in * t)).
        strides: stride of the depthwise convolution.
        name: block name prefix, e.g. `encoder.block7`.
        keep_expansion: keep the 1x1 expansion even when t == 1 (the "ericsun" variant).

    Returns:
        The output tensor.
    """
    in_channels = x.shape[-1]
    hidden = int(round(in_channels * expansion))
    shortcut = x
    if expansion != 1 or keep_expansion:
        x = conv_bn(x, hidden, 1, name=f"{name}{SEPARATOR}expand")
    x = depthwise_bn(x, name=f"{name}{SEPARATOR}depthwise", strides=strides)
    x = conv_bn(x, filters, 1, name=f"{name}{SEPARATOR}project", activation=False)
    if strides == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}{SEPARATOR}add")([shortcut, x])
    return x


def depthwise_separable(
    x: keras.KerasTensor,
    filters: int,
    name: str,
    dilation_rate: int = 1,
) -> keras.KerasTensor:
    """Depthwise 3x3 (dilated) + BN + ReLU, then 1x1 + BN + ReLU (an ASPP branch).

    Layers: `{name}.depthwise(_bn, _relu)`, `{name}.project(_bn, _relu)`.
    """
    x = depthwise_bn(x, name=f"{name}{SEPARATOR}depthwise", dilation_rate=dilation_rate)
    return conv_bn(x, filters, 1, name=f"{name}{SEPARATOR}project")


def fuse_streams(streams: list[keras.KerasTensor], filters: int, name: str) -> keras.KerasTensor:
    """Fusion of the per-input stems: concat -> depthwise 3x3 + BN -> 1x1 + BN, no activation.

    Layers: `{name}.concat`, `{name}.depthwise(_bn)`, `{name}.project(_bn)`. There is no
    activation after either BatchNorm (as in the original network).

    Args:
        streams: stride-4 features of each input, in input order (flow, rgb).
        filters: output channels (24 at width 1.0).
        name: name prefix, e.g. `fuse`.

    Returns:
        The fused stride-4 features.
    """
    x = keras.layers.Concatenate(name=f"{name}{SEPARATOR}concat")(streams)
    x = depthwise_bn(x, name=f"{name}{SEPARATOR}depthwise", activation=False)
    return conv_bn(x, filters, 1, name=f"{name}{SEPARATOR}project", activation=False)
