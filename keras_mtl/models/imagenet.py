"""Initialising the MobileNetV2 streams and encoder from `keras.applications.MobileNetV2`.

`--pretrained imagenet` fetches Keras' ImageNet weights for the model's width (through
`keras.utils.get_file`, which uses the copy in `~/.keras/models/` or `$KERAS_HOME/models/` when
there is one); `--pretrained FILE.weights.h5` reads weights that a
`keras.applications.MobileNetV2(include_top=False)` saved (`save_weights`), or Keras' own
downloaded `..._no_top.h5` file. Either way a Keras MobileNetV2 of the model's width is built
and its weights are copied into the network (docs/model.md, "ImageNet initialisation"):

- Blocks 0-3 (Keras `Conv1` .. `block_2_*`) go to every stem (`flow_stem.*`, `rgb_stem.*`),
  blocks 4-17 (`block_3_*` .. `block_16_*`) to `encoder.*`; Keras' 1280-channel `Conv_1` has
  no counterpart. Convolution kernels, BatchNorm gamma, beta and moving mean are copied as they
  are, except where the two networks compute differently:
- BatchNorm epsilon: Keras' layers use 1e-3, this network 1e-5 (PyTorch's); the moving
  variance gets `1e-3 - 1e-5` added, so each BatchNorm computes in inference exactly what the
  Keras layer did (for channels of tiny variance the epsilon is not negligible).
- Input normalisation: Keras' MobileNetV2 takes `x / 127.5 - 1`, this network `(x - 128) / 64`
  (`keras_mtl.data.pipeline.normalize_inputs`, ~[-2, 2]). The first convolution's kernel is
  multiplied by `64 / 127.5` and its BatchNorm's moving mean shifted by the kernel's response to
  the remaining `0.5 / 127.5` offset, so the first layer sees ImageNet's input range (exact
  away from the bottom/right padding).
- The `mobilenetv2_ericsun` backbone's extra 1x1 expansion of block 1 (no Keras counterpart) is
  initialised as an identity: kernel = identity, BatchNorm set so that it returns its input
  in inference and, in training, for inputs with the statistics the preceding BatchNorm + ReLU
  produce (a ReLU of a Gaussian with that BatchNorm's beta and gamma). Its input comes out of a
  ReLU, so the following ReLU changes nothing: the block starts equal to the pretrained one.
- Activations: Keras' MobileNetV2 uses ReLU6, this network ReLU (as the original); activations
  above 6, rare in ImageNet's network, are not clipped here. This is not compensated.

Example:

```python
source = mobilenetv2_from_file(imagenet_weights_file(1.0), 1.0)
report = load_mobilenetv2_weights(model, source)
report["copied"]["flow_stem.block0"]  # "Conv1"
```
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from keras_mtl.data.pipeline import NORMALIZATION_OFFSET, NORMALIZATION_SCALE
from keras_mtl.errors import UserError
from keras_mtl.models.blocks import SEPARATOR
from keras_mtl.models.mobilenetv2 import NUM_BLOCKS, STEM_BLOCKS
from keras_mtl.models.multitask import ENCODER_PREFIX, stem_prefix, unwrap_model
from keras_mtl.tasks import INPUT_NAMES

IMAGENET = "imagenet"  # the --pretrained value that asks for Keras' ImageNet weights
# Widths (alpha) Keras publishes ImageNet MobileNetV2 weights for.
IMAGENET_WIDTHS: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Keras has weights trained at 96..224 pixels; 224 is the closest to this network's inputs.
IMAGENET_ROWS = 224
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
# Keras' `mobilenet_v2.preprocess_input`: x / 127.5 - 1.
KERAS_INPUT_OFFSET = 127.5
KERAS_INPUT_SCALE = 127.5
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5", ".hdf5")  # what `Model.load_weights` reads
FLAG = "--pretrained"


def imagenet_file_name(width_mult: float) -> str:
    """The file Keras downloads for ImageNet MobileNetV2 without top at `width_mult`.

    Example:

    ```python
    imagenet_file_name(0.35)  # "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    ```
    """
    return (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
        f"{float(width_mult)}_{IMAGENET_ROWS}_no_top.h5"
    )


def keras_models_dir() -> str:
    """Where `keras.utils.get_file` keeps downloaded models: `$KERAS_HOME/models`, else
    `~/.keras/models` (Keras falls back to `/tmp/.keras/models` when that is not writable)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def check_imagenet_width(width_mult: float, flag: str = FLAG) -> None:
    """Raises a `UserError` naming `--width_mult` unless Keras has ImageNet weights for it."""
    if not any(math.isclose(width_mult, width) for width in IMAGENET_WIDTHS):
        raise UserError(
            f"{flag} {IMAGENET}: Keras has no ImageNet MobileNetV2 weights for --width_mult "
            f"{width_mult}; use one of {', '.join(map(str, IMAGENET_WIDTHS))}"
        )


def imagenet_weights_file(width_mult: float, flag: str = FLAG) -> str:
    """The local path of Keras' ImageNet MobileNetV2 (no top) weights at `width_mult`,
    downloading them on first use (`keras.utils.get_file`, cached in `keras_models_dir()`).

    Raises:
        UserError: no weights at this width (naming `--width_mult` and the allowed values),
            or the download failed (naming the file, its URL and where to put it by hand).

    Example:

    ```python
    path = imagenet_weights_file(1.0)  # ~/.keras/models/mobilenet_v2_..._1.0_224_no_top.h5
    ```
    """
    check_imagenet_width(width_mult, flag)
    width_mult = next(w for w in IMAGENET_WIDTHS if math.isclose(width_mult, w))
    name = imagenet_file_name(width_mult)
    url = IMAGENET_BASE_URL + name
    try:
        return keras.utils.get_file(name, url, cache_subdir="models")
    except Exception as error:  # noqa: BLE001 - no network, proxy, HTTP error: one user line
        # Keras' message repeats the URL; once in the line is enough.
        reason = " ".join(str(error).replace(url, "it").split())[:200] or type(error).__name__
        raise UserError(
            f"{flag} {IMAGENET}: could not download {name} from {url} ({reason}); without "
            f"internet, fetch that URL elsewhere and put the file in {keras_models_dir()} "
            "(~/.keras/models/, or $KERAS_HOME/models/ when KERAS_HOME is set), or pass "
            f"{flag} /path/to/{name}"
        ) from None


def mobilenetv2_from_file(
    path: str | os.PathLike, width_mult: float, flag: str = FLAG
) -> keras.Model:
    """A `keras.applications.MobileNetV2(alpha=width_mult, include_top=False)` holding the
    weights of `path` (a `save_weights` `.weights.h5`, or Keras' downloaded `.h5`).

    Raises:
        UserError: naming `--pretrained` and the file, when its suffix is not one Keras reads
            or its weights are not those of that network (another width, another model).

    Example:

    ```python
    source = mobilenetv2_from_file("mobilenet_v2_0.35.weights.h5", 0.35)
    ```
    """
    path = os.fspath(path)
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise UserError(
            f"{flag} {path}: an HDF5 weights file must be named *.weights.h5 (Keras' "
            "save_weights) or *.h5, as Keras reads it by its suffix; rename it"
        )
    source = keras.applications.MobileNetV2(
        weights=None, alpha=width_mult, include_top=False, input_shape=(None, None, 3)
    )
    try:
        with warnings.catch_warnings():
            # A file of another network makes Keras warn once per layer before it raises.
            warnings.filterwarnings("ignore", "Skipping nested container", UserWarning)
            source.load_weights(path)
    except Exception as error:  # noqa: BLE001 - any failure means the file is not that network
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise UserError(
            f"{flag} {path}: not the weights of keras.applications.MobileNetV2(alpha="
            f"{width_mult}, include_top=False), the width of --width_mult {width_mult} "
            f"(Keras: {reason})"
        ) from None
    return source


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (recorded so a run names its weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keras_layer_names(block: int) -> dict[str, str]:
    """The Keras MobileNetV2 layers of block `block` (this network's numbering, 0-17), by the
    suffix of this network's layer name within the block.

    Keras names block 0 `Conv1`, block 1 `expanded_conv_*` (t=1, no expansion) and blocks
    2-17 `block_1_*` .. `block_16_*`.

    Example:

    ```python
    keras_layer_names(3)["expand_bn"]  # "block_2_expand_BN"
    ```
    """
    if block == 0:
        return {"": "Conv1", "_bn": "bn_Conv1"}
    prefix = "expanded_conv_" if block == 1 else f"block_{block - 1}_"
    parts = ("depthwise", "project") if block == 1 else ("expand", "depthwise", "project")
    names = {}
    for part in parts:
        names[f"{SEPARATOR}{part}"] = f"{prefix}{part}"
        names[f"{SEPARATOR}{part}_bn"] = f"{prefix}{part}_BN"
    return names


def layer_map(target_names: Iterable[str]) -> dict[str, str]:
    """Target layer -> Keras MobileNetV2 layer, for the layers of `target_names` that have one.

    Blocks 0-3 map into every stem present (`flow_stem`, `rgb_stem`), blocks 4-17 into
    `encoder`.

    Example:

    ```python
    layer_map(["rgb_stem.block0", "encoder.block4.expand"])
    # {"rgb_stem.block0": "Conv1", "encoder.block4.expand": "block_3_expand"}
    ```
    """
    target_names = set(target_names)
    mapping = {}
    for block in range(NUM_BLOCKS):
        if block < STEM_BLOCKS:
            prefixes = [stem_prefix(name) for name in INPUT_NAMES]
        else:
            prefixes = [ENCODER_PREFIX]
        for prefix in prefixes:
            for suffix, source in keras_layer_names(block).items():
                name = f"{prefix}{SEPARATOR}block{block}{suffix}"
                if name in target_names:
                    mapping[name] = source
    return mapping


def _relu_of_gaussian(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ReLU(z), z ~ N(mean, std^2), per channel."""
    std = np.maximum(np.abs(std), 1e-6)
    ratio = mean / std
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(ratio / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * ratio**2) / math.sqrt(2.0 * math.pi)
    first = mean * cdf + std * pdf
    second = (mean**2 + std**2) * cdf + mean * std * pdf
    return first, np.maximum(second - first**2, 0.0)


def _identity_expansion(model: keras.Model, block: str) -> dict[str, str]:
    """Initialises the ericsun `{block}.expand` (+ `_bn`) of one stem as an identity."""
    conv = model.get_layer(f"{block}{SEPARATOR}expand")
    bn = model.get_layer(f"{block}{SEPARATOR}expand_bn")
    channels = conv.kernel.shape[-1]
    previous = model.get_layer(block.rsplit(SEPARATOR, 1)[0] + f"{SEPARATOR}block0_bn")
    gamma, beta = (np.asarray(w, "float64") for w in previous.get_weights()[:2])
    # The input is ReLU(BN(...)): in inference about ReLU(N(beta, gamma^2)) per channel.
    mean, variance = _relu_of_gaussian(beta, gamma)
    scale = np.sqrt(variance + bn.epsilon)
    conv.set_weights([np.eye(channels, dtype="float32").reshape(conv.kernel.shape)])
    # (x - mean) / sqrt(variance + eps) * scale + mean == x: identity in inference for any
    # input, and in training for inputs with those statistics.
    bn.set_weights([w.astype("float32") for w in (scale, mean, mean, variance)])
    how = (
        "no Keras counterpart (the ericsun t=1 expansion): identity kernel, BatchNorm "
        "returning its input (statistics of the ReLU of block0_bn's Gaussian)"
    )
    return {conv.name: how, bn.name: how}


def _convert_weights(
    target: keras.layers.Layer, source: keras.layers.Layer, first_conv: bool
) -> list[np.ndarray]:
    """The source layer's weights as the target layer must hold them (module docstring)."""
    weights = source.get_weights()
    if isinstance(target, keras.layers.BatchNormalization):
        gamma, beta, mean, variance = weights
        # Same normalisation in inference despite the other epsilon.
        variance = variance + np.float32(source.epsilon - target.epsilon)
        return [gamma, beta, mean, variance]
    if first_conv:
        # x_keras = x_here * 64 / 127.5 + 0.5 / 127.5 for the same pixel value.
        (kernel,) = weights
        return [kernel * np.float32(NORMALIZATION_SCALE / KERAS_INPUT_SCALE)]
    return weights


def _input_offset_shift(kernel: np.ndarray) -> np.ndarray:
    """What the constant part of Keras' input adds to each output of the first convolution:
    offset * sum of the kernel per output channel (with the kernel as Keras held it)."""
    offset = (NORMALIZATION_OFFSET - KERAS_INPUT_OFFSET) / KERAS_INPUT_SCALE
    return (offset * kernel.sum(axis=(0, 1, 2))).astype("float32")


def load_mobilenetv2_weights(model: keras.Model, source_model: keras.Model) -> dict[str, Any]:
    """Copies a `keras.applications.MobileNetV2` (no top) into both stems and the encoder.

    Args:
        model: the network to initialise (a `MultiTaskNet` of either backbone, single- or
            multi-task, or the trainer holding one), of the same width as `source_model`.
        source_model: `keras.applications.MobileNetV2(alpha=..., include_top=False)` with the
            weights to copy (`mobilenetv2_from_file`).

    Returns:
        `{"source": source_model.name, "copied": {target layer: Keras layer}, "initialised":
        {target layer: how} (the ericsun expansion), "skipped": {target layer: reason},
        "unused": {Keras layer: reason}, "conversions": [what was changed on the way]}`.
        Layers whose shapes differ from the Keras layer's are skipped with both shapes.

    Example:

    ```python
    report = load_mobilenetv2_weights(model, mobilenetv2_from_file(path, 0.35))
    report["copied"]["encoder.block17.project"]  # "block_16_project"
    ```
    """
    network = unwrap_model(model)
    target_layers = {layer.name: layer for layer in network.layers if layer.weights}
    source_layers = {layer.name: layer for layer in source_model.layers if layer.weights}
    mapping = layer_map(target_layers)
    copied: dict[str, str] = {}
    initialised: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, source_name in mapping.items():
        target, source = target_layers[name], source_layers.get(source_name)
        if source is None:
            skipped[name] = f"{source_name} is not in {source_model.name}"
            continue
        target_shapes = [tuple(w.shape) for w in target.weights]
        source_shapes = [tuple(w.shape) for w in source.weights]
        if target_shapes != source_shapes:
            skipped[name] = f"shape mismatch with {source_name}: {source_shapes} vs {target_shapes}"
            continue
        first_conv = source_name == "Conv1"
        target.set_weights(_convert_weights(target, source, first_conv))
        copied[name] = source_name
    for name in sorted(copied):
        if copied[name] == "bn_Conv1" and copied.get(name[: -len("_bn")]) == "Conv1":
            gamma, beta, mean, variance = target_layers[name].get_weights()
            shift = _input_offset_shift(source_layers["Conv1"].kernel.numpy())
            target_layers[name].set_weights([gamma, beta, mean - shift, variance])
    for input_name in INPUT_NAMES:
        block = f"{stem_prefix(input_name)}{SEPARATOR}block1"
        if f"{block}{SEPARATOR}expand" in target_layers:
            initialised.update(_identity_expansion(network, block))
    for name in target_layers:
        if name not in copied and name not in initialised and name not in skipped:
            skipped[name] = "no counterpart in MobileNetV2: keeps its random initialisation"
    used = set(copied.values())
    unused = {
        name: "no counterpart here (the 1280-channel last convolution)"
        if name.startswith("Conv_1")
        else "not copied (see skipped)"
        for name in source_layers
        if name not in used
    }
    conversions = [
        f"BatchNorm moving_variance += {source_epsilon(source_layers)} - {target_epsilon(network)}"
        " (Keras' epsilon vs this network's: same normalisation in inference)",
        f"first convolution kernel *= {NORMALIZATION_SCALE} / {KERAS_INPUT_SCALE}, its "
        f"BatchNorm's moving_mean -= kernel response to the {NORMALIZATION_OFFSET} - "
        f"{KERAS_INPUT_OFFSET} offset (Keras' x / 127.5 - 1 inputs vs this network's "
        "(x - 128) / 64)",
    ]
    return {
        "source": source_model.name,
        "copied": copied,
        "initialised": initialised,
        "skipped": skipped,
        "unused": unused,
        "conversions": conversions,
    }


def source_epsilon(layers: dict[str, keras.layers.Layer]) -> float:
    """Epsilon of the (first) BatchNorm among `layers` (Keras' MobileNetV2: 1e-3)."""
    return next(
        float(layer.epsilon)
        for layer in layers.values()
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def target_epsilon(model: keras.Model) -> float:
    """Epsilon of the first BatchNorm of `model` (this network: 1e-5)."""
    return source_epsilon({layer.name: layer for layer in model.layers})


def initialise_from_mobilenetv2(
    model: keras.Model, pretrained: str | os.PathLike, flag: str = FLAG
) -> dict[str, Any]:
    """Initialises `model` from Keras' ImageNet weights (`pretrained == "imagenet"`) or a
    `keras.applications.MobileNetV2` weights file, at the model's width.

    Args:
        model: a `MultiTaskNet` (or the trainer holding one).
        pretrained: `"imagenet"`, or the path of an HDF5 weights file.
        flag: the flag that named it, for error messages.

    Returns:
        The report of `load_mobilenetv2_weights`, with `source` the value given, `file` the
        weights file read and `sha256` its hash.

    Raises:
        UserError: a width without ImageNet weights, a failed download, or a file that does
            not hold MobileNetV2 weights of this width (see `imagenet_weights_file` and
            `mobilenetv2_from_file`).

    Example:

    ```python
    report = initialise_from_mobilenetv2(model, "imagenet")
    report["file"]  # ~/.keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
    ```
    """
    network = unwrap_model(model)
    width_mult = float(network.width_mult)
    if os.fspath(pretrained) == IMAGENET:
        path = imagenet_weights_file(width_mult, flag)
    else:
        path = os.fspath(pretrained)
    report = load_mobilenetv2_weights(network, mobilenetv2_from_file(path, width_mult, flag))
    keras_name = report.pop("source")
    return {
        "source": os.fspath(pretrained),
        "file": os.path.abspath(path),
        "sha256": file_sha256(path),
        "keras_model": f"keras.applications.MobileNetV2 ({keras_name})",
        **report,
    }
