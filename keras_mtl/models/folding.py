"""The inference form of a trained network: BatchNorm folded away, linear decoder tails
moved before their upsampling. The same function as `model(x, training=False)`, fewer ops.

**BatchNorm folding** (`fold_batch_norms`).

In inference a BatchNorm is a per-channel affine map, `z = a * y + b` with
`a = gamma / sqrt(moving_variance + epsilon)` and `b = beta - a * moving_mean`, and a convolution
is linear in its kernel, so a convolution followed by a BatchNorm is one convolution with its
output channels' kernels multiplied by `a` and a bias `b` (plus `a` times the old bias, if any).
The folded network computes the same function without the BatchNorms' elementwise passes over
every activation (about a third of this network's inference time on a CPU, docs/results.md),
and the exported graphs (SavedModel, TFLite, ONNX) are convolutions, activations and resizes
only.

`fold_batch_norms` rewrites any functional Keras model: every `Conv2D` / `DepthwiseConv2D`
(channels-last, no activation) whose output only feeds one `BatchNormalization` (last axis)
absorbs it, keeping its own layer name; every other layer is copied with its weights.

**Linear tails** (`fold_linear_tails`). Each decoder ends in
`classifier(depthwise(concat([upsample(aspp), shortcut])))`: a bilinear x4 upsampling of 256
channels, a 304-channel concatenation and a depthwise 3x3 at stride 4, all linear, for 1-5 output
channels: a fifth of the folded network's time on a CPU for 2% of its multiply-adds, moving
memory. A 1x1 convolution commutes with a per-channel upsampling (both linear, one mixes channels
per pixel, the other pixels per channel), and a depthwise 3x3 followed by a 1x1 convolution to C
channels is, per tap t of the 3x3 window, a 1x1 convolution K_t = depthwise_t * classifier whose
result is shifted by t. So the upsampled inputs' part becomes: one 1x1 convolution to 9*C "tap"
channels at the low resolution, the upsampling of those 9*C channels, and a fixed sum of the
shifted taps (a one-hot depthwise 3x3 and a 0/1 1x1 convolution); the other inputs (the
shortcut) keep their share of the depthwise and classifier. Exact up to float rounding,
including the zero padding at the borders; applied where it also costs fewer multiply-adds
(every decoder of this network, 1 to 19 output channels).

`fold_for_inference` applies both. The results are plain functional `keras.Model`s with the same
inputs and outputs (names included): inference networks (the BatchNorms' statistics can no
longer move), not ones to train.

Example:

```python
model = build_multitask_model((64, 128), width_mult=0.25)
inference = fold_for_inference(model)
inference(inputs)["depth"]  # equal to model(inputs, training=False)["depth"] to ~1e-6
```
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import tree

FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _producer(tensor: keras.KerasTensor) -> keras.layers.Layer:
    """The layer whose output `tensor` is (Keras records it on every symbolic tensor)."""
    return tensor._keras_history.operation


class _Graph:
    """`model`'s own graph: each layer's call in it, and how often each tensor is read.

    A layer also gains calls (nodes) outside `model` when sub-models sharing it are called, as
    the trainer does with the trunk and heads; only the calls inside `model` count here.
    """

    def __init__(self, model: keras.Model) -> None:
        nodes = [
            node
            for depth_nodes in model._nodes_by_depth.values()
            for node in depth_nodes
            if node.operation is not None and not node.is_input
        ]
        calls = Counter(node.operation.name for node in nodes)
        self._inputs = {
            node.operation.name: list(node.input_tensors)
            for node in nodes
            if calls[node.operation.name] == 1
        }
        self._reads = Counter(id(tensor) for node in nodes for tensor in node.input_tensors)
        self._reads.update(id(tensor) for tensor in tree.flatten(model.outputs))

    def called_once(self, layer: keras.layers.Layer) -> bool:
        return layer.name in self._inputs

    def inputs(self, layer: keras.layers.Layer) -> list[keras.KerasTensor]:
        """The tensors `layer` reads in this graph (flattened; a layer called once)."""
        return self._inputs[layer.name]

    def read_once(self, tensor: keras.KerasTensor) -> bool:
        """Exactly one layer reads `tensor`, it is no model output, and its producer is
        called once."""
        return self._reads[id(tensor)] == 1 and self.called_once(_producer(tensor))


def _linear(layer: keras.layers.Layer) -> bool:
    return layer.activation in (None, keras.activations.linear)


def _clone_rewritten(model: keras.Model, replaced: set[str], call) -> keras.Model:
    """A copy of `model` whose layers named in `replaced` are handled by `call(layer, *args,
    **kwargs)` (which builds and weights whatever replaces them); the other layers are copied
    with their weights."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in replaced:
            return layer  # handed to `call`, which never calls it
        return layer.__class__.from_config(layer.get_config())

    def call_or_copy(layer: keras.layers.Layer, *args, **kwargs):
        if layer.name in replaced:
            return call(layer, *args, **kwargs)
        return layer(*args, **kwargs)

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call_or_copy)
    copied = {layer.name for layer in model.layers} - replaced
    for layer in copy.layers:
        if layer.weights and layer.name in copied:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


def foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """The BatchNorms of `model` that can be folded, by the name of the convolution before each.

    A pair qualifies when the BatchNorm normalises the last axis (plain, no `renorm`) and reads
    the output of a channels-last `Conv2D` (not grouped) or `DepthwiseConv2D` without activation
    that nothing else reads (no other layer, not a model output), each layer called once.

    Args:
        model: a functional `keras.Model`.

    Returns:
        `{convolution name: the BatchNormalization layer after it}`.
    """
    graph = _Graph(model)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.renorm:
            continue
        if not graph.called_once(layer) or layer.axis not in (-1, 3):
            continue
        (source,) = graph.inputs(layer)
        convolution = _producer(source)
        if (
            isinstance(convolution, FOLDABLE_CONVOLUTIONS)
            and graph.read_once(source)
            and convolution.data_format == "channels_last"
            and _linear(convolution)
            and getattr(convolution, "groups", 1) == 1
        ):
            pairs[convolution.name] = layer
    return pairs


def folded_weights(
    convolution: keras.layers.Layer, batch_norm: keras.layers.BatchNormalization
) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of `convolution` with the inference-mode `batch_norm` after it folded in.

    Computed in float64 and returned as float32.

    Example:

    ```python
    kernel, bias = folded_weights(model.get_layer("fuse.project"),
                                  model.get_layer("fuse.project_bn"))
    ```
    """
    channels = batch_norm.moving_mean.shape[0]
    gamma = (
        np.asarray(batch_norm.gamma.numpy(), np.float64) if batch_norm.scale else np.ones(channels)
    )
    beta = (
        np.asarray(batch_norm.beta.numpy(), np.float64) if batch_norm.center else np.zeros(channels)
    )
    mean = np.asarray(batch_norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(batch_norm.moving_variance.numpy(), np.float64)
    scale = gamma / np.sqrt(variance + batch_norm.epsilon)

    if isinstance(convolution, keras.layers.DepthwiseConv2D):
        kernel = np.asarray(convolution.kernel.numpy(), np.float64)
        # (kh, kw, in, multiplier): output channel c * multiplier + m is kernel[..., c, m].
        kernel = kernel * scale.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    else:
        kernel = np.asarray(convolution.kernel.numpy(), np.float64) * scale  # output axis last
    old_bias = (
        np.asarray(convolution.bias.numpy(), np.float64)
        if convolution.use_bias
        else np.zeros(channels)
    )
    bias = (old_bias - mean) * scale + beta
    return kernel.astype(np.float32), bias.astype(np.float32)


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """`model` for inference with its BatchNorms folded into the convolutions before them.

    Args:
        model: a functional `keras.Model` (a `MultiTaskNet` or any network built with the
            functional API).

    Returns:
        A new functional `keras.Model` with the same inputs, outputs, dtype policies and layer
        names, minus the folded BatchNorms; the folded convolutions carry a bias. Its weights
        are copies: training `model` further does not change it. BatchNorms that cannot be
        folded (see `foldable_pairs`) stay, in inference mode.

    Example:

    ```python
    folded = fold_batch_norms(model)
    [layer for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # []
    ```
    """
    pairs = foldable_pairs(model)
    norms = {batch_norm.name for batch_norm in pairs.values()}

    def call(layer: keras.layers.Layer, *args, **kwargs):
        if layer.name in norms:
            return args[0]  # its convolution applied it already
        convolution = layer.__class__.from_config({**layer.get_config(), "use_bias": True})
        output = convolution(*args, **kwargs)
        convolution.set_weights(list(folded_weights(layer, pairs[layer.name])))
        return output

    return _clone_rewritten(model, set(pairs) | norms, call)


# --------------------------------------------------------------------------------------------
# Linear tails


@dataclass(frozen=True)
class LinearTail:
    """`head(depthwise(concat(inputs)))`, each layer read only by the next, all linear.

    Attributes:
        head: a 1x1 `Conv2D` to C channels (the decoder's classifier).
        depthwise: a stride-1, undilated, `same`-padded `DepthwiseConv2D` (multiplier 1).
        concat: the `Concatenate` (last axis) of the depthwise's input.
        upsamplings: per concatenated input, the `UpSampling2D` that made it (read only by the
            concatenation), or None for an input kept at its resolution.
        input_channels: channels of each concatenated input.
    """

    head: keras.layers.Conv2D
    depthwise: keras.layers.DepthwiseConv2D
    concat: keras.layers.Concatenate
    upsamplings: tuple[keras.layers.UpSampling2D | None, ...]
    input_channels: tuple[int, ...]

    @property
    def taps(self) -> int:
        height, width = self.depthwise.kernel_size
        return height * width

    def macs_per_pixel(self) -> tuple[float, float]:
        """Multiply-adds per output pixel (before, after folding), convolutions only."""
        taps, classes = self.taps, int(self.head.filters)
        channels = self.input_channels
        before = sum(channels) * (taps + classes)
        after = taps * classes * (1 + classes)  # shifting and summing the taps
        for count, upsampling in zip(channels, self.upsamplings, strict=True):
            if upsampling is None:
                after += count * (taps + classes)
            else:
                after += count * taps * classes / float(np.prod(upsampling.size))
        return float(before), float(after)


def linear_tails(model: keras.Model) -> dict[str, LinearTail]:
    """The linear tails of `model` worth folding, by the name of their head.

    A tail qualifies when it has the shape of `LinearTail`, at least one concatenated input is
    upsampled, and folding it costs fewer multiply-adds (`LinearTail.macs_per_pixel`).
    """
    graph = _Graph(model)
    tails = {}
    for head in model.layers:
        if not (
            isinstance(head, keras.layers.Conv2D)
            and graph.called_once(head)
            and tuple(head.kernel_size) == (1, 1)
            and tuple(head.strides) == (1, 1)
            and head.groups == 1
            and head.data_format == "channels_last"
            and _linear(head)
        ):
            continue
        (features,) = graph.inputs(head)
        depthwise = _producer(features)
        if not (
            isinstance(depthwise, keras.layers.DepthwiseConv2D)
            and graph.read_once(features)
            and tuple(depthwise.strides) == (1, 1)
            and tuple(depthwise.dilation_rate) == (1, 1)
            and depthwise.depth_multiplier == 1
            and depthwise.padding == "same"
            and depthwise.data_format == "channels_last"
            and _linear(depthwise)
        ):
            continue
        (concatenated,) = graph.inputs(depthwise)
        concat = _producer(concatenated)
        if not (
            isinstance(concat, keras.layers.Concatenate)
            and graph.read_once(concatenated)
            and concat.axis in (-1, 3)
        ):
            continue
        parts = graph.inputs(concat)
        upsamplings = tuple(
            _producer(tensor)
            if isinstance(_producer(tensor), keras.layers.UpSampling2D)
            and _producer(tensor).data_format == "channels_last"
            and graph.read_once(tensor)
            else None
            for tensor in parts
        )
        channels = tuple(int(tensor.shape[-1]) for tensor in parts)
        tail = LinearTail(head, depthwise, concat, upsamplings, channels)
        before, after = tail.macs_per_pixel()
        if any(upsamplings) and after < before:
            tails[head.name] = tail
    return tails


def _weights(variable) -> np.ndarray:
    return np.asarray(variable.numpy(), np.float64)


def _fold_tail(tail: LinearTail, inputs: Sequence[keras.KerasTensor]) -> keras.KerasTensor:
    """Builds the folded tail on `inputs` (the concatenation's inputs, with the upsampled ones
    at their low resolution) and sets its weights; the output is named as the head."""
    head, depthwise = tail.head, tail.depthwise
    policy = head.dtype_policy  # the classifier's precision (float32 under mixed precision)
    taps, classes = tail.taps, int(head.filters)
    kernel_height, kernel_width = depthwise.kernel_size
    spatial = _weights(depthwise.kernel)[..., 0].reshape(taps, -1)  # [tap, channel]
    classifier = _weights(head.kernel)[0, 0]  # [channel, class]
    channels = classifier.shape[0]
    depthwise_bias = _weights(depthwise.bias) if depthwise.use_bias else np.zeros(channels)
    head_bias = _weights(head.bias) if head.use_bias else np.zeros(classes)
    starts = np.cumsum([0, *tail.input_channels])

    def layer(cls, weights: Sequence[np.ndarray], output, *args, **kwargs) -> keras.KerasTensor:
        instance = cls(*args, dtype=policy, **kwargs)
        result = instance(output)
        instance.set_weights([w.astype(np.float32) for w in weights])
        return result

    upsampled, kept, kept_channels = [], [], []
    for index, (tensor, upsampling) in enumerate(zip(inputs, tail.upsamplings, strict=True)):
        channels = slice(starts[index], starts[index + 1])
        if upsampling is None:
            kept.append(tensor)
            kept_channels.append(np.arange(starts[index], starts[index + 1]))
            continue
        # K[c, t * classes + o] = depthwise[t, c] * classifier[c, o]: every tap's 1x1.
        tap_kernel = spatial[:, channels, None] * classifier[None, channels, :]  # [t, c, o]
        tap_kernel = tap_kernel.transpose(1, 0, 2).reshape(1, 1, -1, taps * classes)
        taps_name = f"{head.name}_taps{index}"
        result = layer(
            keras.layers.Conv2D,
            [tap_kernel],
            tensor,
            taps * classes,
            1,
            use_bias=False,
            name=taps_name,
        )
        upsampling_config = {**upsampling.get_config(), "name": f"{taps_name}_upsample"}
        upsampling_config.pop("dtype", None)
        upsampled.append(layer(keras.layers.UpSampling2D, [], result, **upsampling_config))

    summed = upsampled[0]
    if len(upsampled) > 1:
        summed = keras.layers.Add(dtype=policy, name=f"{head.name}_taps")(upsampled)
    # Channel t * classes + o moves by tap t (a one-hot depthwise), then the taps are summed.
    shift = np.zeros((kernel_height, kernel_width, taps * classes, 1))
    for tap in range(taps):
        row, column = divmod(tap, kernel_width)
        shift[row, column, tap * classes : (tap + 1) * classes, 0] = 1.0
    summed = layer(
        keras.layers.DepthwiseConv2D,
        [shift],
        summed,
        (kernel_height, kernel_width),
        padding="same",
        use_bias=False,
        name=f"{head.name}_shift",
    )
    up_channels = np.concatenate(
        [
            np.arange(starts[i], starts[i + 1])
            for i, upsampling in enumerate(tail.upsamplings)
            if upsampling is not None
        ]
    )
    tap_sum = np.tile(np.eye(classes), (taps, 1)).reshape(1, 1, taps * classes, classes)
    # Where nothing else follows, this is the head itself: its bias and its name.
    up_bias = depthwise_bias[up_channels] @ classifier[up_channels]
    if not kept:
        return layer(
            keras.layers.Conv2D,
            [tap_sum, up_bias + head_bias],
            summed,
            classes,
            1,
            name=head.name,
        )
    summed = layer(
        keras.layers.Conv2D,
        [tap_sum, up_bias],
        summed,
        classes,
        1,
        name=f"{head.name}_tap_sum",
    )
    # The inputs kept at their resolution keep their share of the depthwise and classifier.
    kept_index = np.concatenate(kept_channels)
    rest = kept[0]
    if len(kept) > 1:
        rest = keras.layers.Concatenate(dtype=policy, name=f"{head.name}_kept")(kept)
    rest_kernel = _weights(depthwise.kernel)[:, :, kept_index]
    rest = layer(
        keras.layers.DepthwiseConv2D,
        [rest_kernel, depthwise_bias[kept_index]],
        rest,
        (kernel_height, kernel_width),
        padding="same",
        name=f"{head.name}_kept_depthwise",
    )
    rest = layer(
        keras.layers.Conv2D,
        [classifier[kept_index].reshape(1, 1, -1, classes), head_bias],
        rest,
        classes,
        1,
        name=f"{head.name}_kept_classifier",
    )
    return keras.layers.Add(dtype=policy, name=head.name)([summed, rest])


def fold_linear_tails(model: keras.Model) -> keras.Model:
    """`model` with its linear decoder tails computed before their upsampling.

    Args:
        model: a functional `keras.Model`, usually with its BatchNorms folded already (a tail
            whose depthwise convolution is followed by a BatchNorm is not linear in this form).

    Returns:
        A new functional `keras.Model` with the same inputs and outputs; each folded tail's
        upsampling, concatenation, depthwise convolution and head are replaced by
        `<head>_taps<i>` (1x1 convolutions at the low resolution), `<head>_taps<i>_upsample`,
        `<head>_shift` and the head's own name (the sum of the taps), plus `<head>_kept_*` for
        the inputs kept at their resolution. A model without such tails comes back copied.

    Example:

    ```python
    tails = fold_linear_tails(fold_batch_norms(model))
    tails.get_layer("depth_decoder.classifier_taps0").kernel.shape  # (1, 1, 256, 9)
    ```
    """
    tails = linear_tails(model)
    by_concat = {tail.concat.name: tail for tail in tails.values()}
    by_upsampling = {u.name for tail in tails.values() for u in tail.upsamplings if u is not None}
    depthwise = {tail.depthwise.name for tail in tails.values()}
    concat_inputs: dict[str, list[keras.KerasTensor]] = {}

    def call(layer: keras.layers.Layer, *args, **kwargs):
        # Graph order: upsamplings, then the concatenation, the depthwise, the head. Until the
        # head, each passes a placeholder on (nothing outside the tail reads these tensors).
        if layer.name in by_upsampling:
            return args[0]  # the low-resolution input: the head upsamples its taps instead
        if layer.name in by_concat:
            concat_inputs[layer.name] = list(args[0])
            return args[0][0]
        if layer.name in depthwise:
            return args[0]
        tail = tails[layer.name]
        return _fold_tail(tail, concat_inputs[tail.concat.name])

    replaced = set(tails) | set(by_concat) | by_upsampling | depthwise
    return _clone_rewritten(model, replaced, call)


def fold_for_inference(model: keras.Model) -> keras.Model:
    """The inference form of `model`: BatchNorms folded into the convolutions
    (`fold_batch_norms`), then the linear decoder tails moved before their upsampling
    (`fold_linear_tails`). Same outputs as `model(x, training=False)` up to float rounding.

    Args:
        model: a functional `keras.Model` (a `MultiTaskNet`, any functional network).

    Returns:
        A new functional `keras.Model`, same inputs and outputs (names, dtypes), for
        evaluation and export (not for training).

    Example:

    ```python
    inference = fold_for_inference(build_multitask_model((64, 128), width_mult=0.25))
    sorted(inference.output)  # ["depth", "motion", "semantic"]
    ```
    """
    return fold_linear_tails(fold_batch_norms(model))
