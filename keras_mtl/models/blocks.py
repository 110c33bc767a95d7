"""Convolution building blocks shared by the encoder streams, the fusion and the decoders.

Every convolution has no bias and is followed by BatchNorm (as in the original network);
activations are ReLU. Layer names are hierarchical with `.` as the separator (Keras 3
forbids `/` in layer names): e.g. `rgb_stem.block2.depthwise_bn`.

The BatchNorm is this module's `BatchNormalization`: Keras' layer (same weights, names, config
and arithmetic) computed by TensorFlow's fused kernel, about a third of the training step faster
on a CPU (docs/results.md). For inference and export the BatchNorms are folded into the
convolutions (`keras_mtl.models.folding`). Only Keras layers that TFLite maps to builtin ops are
used (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add, Concatenate), so the exported
graph needs no custom ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import keras
import tensorflow as tf

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


# Input dtypes TensorFlow's fused batch-norm kernel takes (its statistics are float32 always).
FUSED_DTYPES = ("float32", "float16", "bfloat16")


def _biased_variance_factor(inputs: tf.Tensor) -> tf.Tensor | float:
    """(n - 1) / n for the n values per channel of `inputs` (1 for n = 1, as the kernel's
    Bessel correction); a Python number when the shape is static (one op fewer per layer)."""
    static = inputs.shape[:-1]
    if static.is_fully_defined():
        count = float(math.prod(static))
        return (count - 1.0) / count if count > 1 else 1.0
    count = tf.cast(
        tf.size(inputs, out_type=tf.int64) // tf.shape(inputs, out_type=tf.int64)[-1], "float32"
    )
    return tf.where(count > 1.0, (count - 1.0) / count, 1.0)


@keras.saving.register_keras_serializable(package="keras_mtl")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    Registered as `keras_mtl>BatchNormalization`. It keeps Keras' class name on purpose: a
    `.keras` file stores each layer's weights under a key made from its class name
    (`layers/batch_normalization_12/vars`), so only a layer of that name reads the weights of
    networks saved with `keras.layers.BatchNormalization`, and writes files that network reads.

    Keras 3 computes BatchNorm as separate elementwise ops (moments, then `x * a + b`), which
    took about a third of this network's time on a CPU. This layer calls
    `tf.raw_ops.FusedBatchNormV3` instead (one kernel forward, one backward), and is otherwise
    the Keras layer: the same weights (`gamma`, `beta`, `moving_mean`, `moving_variance`, same
    names and order), the same config and the same arithmetic, so checkpoints saved with either
    layer load into the other and train identically:

    - training (`training=True` and the layer trainable): normalises with the batch mean and
      biased variance of this replica's batch (no cross-replica synchronisation, as Keras'
      default), and moves the statistics as Keras does,
      `moving = moving * momentum + batch * (1 - momentum)`, with the biased variance (the
      kernel reports the unbiased one; it is converted back);
    - inference: normalises with the moving statistics;
    - float16 / bfloat16 inputs (mixed precision): statistics and normalisation in float32
      inside the kernel, output in the input's dtype, as Keras (which casts around the ops).

    Cases the fused kernel does not cover (a rank other than 4, a normalised axis other than
    the last, a mask, `renorm`, `synchronized`, another dtype, a non-TensorFlow backend) run
    Keras' own computation.

    Args:
        **kwargs: those of `keras.layers.BatchNormalization` (`momentum`, `epsilon`, `name`,
            ...).

    Example:

    ```python
    layer = keras_mtl.models.BatchNormalization(momentum=0.9, epsilon=1e-5)
    x = np.random.normal(size=(2, 8, 8, 16)).astype("float32")
    y = layer(x, training=True)  # equal to keras.layers.BatchNormalization's, to ~1e-6
    ```
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,), "float32")
        beta = self.beta if self.center else tf.zeros((channels,), "float32")
        gamma, beta = tf.cast(gamma, "float32"), tf.cast(beta, "float32")
        if training and self.trainable:
            empty = tf.constant([], "float32")  # no running statistics given: batch statistics
            fused = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=gamma,
                offset=beta,
                mean=empty,
                variance=empty,
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format="NHWC",
                is_training=True,
            )
            # The kernel returns the unbiased (n - 1) variance for running averages; Keras
            # averages the biased one, which the kernel normalised with.
            variance = fused.batch_variance * _biased_variance_factor(inputs)
            mean = tf.stop_gradient(fused.batch_mean)
            variance = tf.stop_gradient(variance)
            moving_mean = tf.cast(self.moving_mean, "float32")
            moving_variance = tf.cast(self.moving_variance, "float32")
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            fused = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=gamma,
                offset=beta,
                mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon,
                exponential_avg_factor=1.0,
                data_format="NHWC",
                is_training=False,
            )
        return tf.cast(fused.y, self.compute_dtype)


# The BatchNorm class the builders use; `batch_norm_class` swaps it while a network is built.
_batch_norm_class: type[keras.layers.BatchNormalization] = BatchNormalization


@contextlib.contextmanager
def batch_norm_class(cls: type[keras.layers.BatchNormalization]) -> Iterator[None]:
    """Networks built inside use `cls` for their BatchNorms (default: this module's
    `BatchNormalization`, on the fused kernel).

    For comparisons with Keras' own layer (benchmarks, tests): the weights are the same, so a
    network built either way loads the other's weights.

    Example:

    ```python
    with batch_norm_class(keras.layers.BatchNormalization):
        stock = build_multitask_model((384, 768))  # the elementwise Keras BatchNorm
    ```
    """
    global _batch_norm_class
    previous, _batch_norm_class = _batch_norm_class, cls
    try:
        yield
    finally:
        _batch_norm_class = previous


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's momentum and epsilon (the fused `BatchNormalization` by
    default)."""
    return _batch_norm_class(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


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
