"""The one loader of trained models: `.keras` checkpoints (trainer or network) and SavedModels.

Importing this module registers every class a keras-mtl `.keras` file can hold (the network and
its layers, the weighting methods, the trainer), so loading never depends on what the caller
imported before. A file is accepted when it holds a model with the keras-mtl contract: named
inputs among `flow`, `rgb` (H x W x 3) and outputs named by task with the task's channels
(depth 1, semantic 5 or 19, motion 2). Anything else (missing, not a `.keras` archive, not a
model, a model without the contract) is one `UserError` line naming the flag and the file.

Evaluate, export, tune and `train.py --pretrained` all load through here (`--pretrained` also
takes `imagenet` or a `keras.applications.MobileNetV2` weights file, `initialise_from_checkpoint`).

Example:

```python
network = load_model("runs/synthetic/checkpoint.keras")  # the trainer's functional network
model_contract(network).tasks  # ("depth", "semantic", "motion")
```
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import keras

# The models, weighting and trainer modules register the classes a `.keras` file may hold
# (MultiTaskTrainer lives in `keras_mtl.training.trainer`, which never imports this module).
import keras_mtl.weighting  # noqa: F401
from keras_mtl.errors import UserError
from keras_mtl.models import load_pretrained, rebuild, unwrap_model
from keras_mtl.models.imagenet import IMAGENET, initialise_from_mobilenetv2
from keras_mtl.tasks import INPUT_NAMES, SEMANTIC_CLASS_CHOICES, TASK_NAMES, num_channels
from keras_mtl.training.trainer import MultiTaskTrainer

KERAS_SUFFIX = ".keras"
SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_SIGNATURE = "serving_default"
INPUT_CHANNELS = 3
MAX_MESSAGE_CHARS = 300  # a library's error text can run to pages; one line is kept


@dataclass(frozen=True)
class ModelContract:
    """What a keras-mtl model takes and gives.

    Attributes:
        inputs: its input names, in `INPUT_NAMES` order (a subset of flow, rgb).
        tasks: its output names, in `TASK_NAMES` order.
        img_size: (H, W) of its inputs, None when the size is free (a SavedModel).
        semantic_classes: channels of the `semantic` output; None without one or for class maps.
    """

    inputs: tuple[str, ...]
    tasks: tuple[str, ...]
    img_size: tuple[int, int] | None
    semantic_classes: int | None

    @property
    def multitask(self) -> bool:
        """Both inputs and all three tasks."""
        return self.inputs == INPUT_NAMES and self.tasks == TASK_NAMES


@dataclass(frozen=True)
class ServingModel:
    """The `serving_default` signature of a SavedModel written by export.py.

    Attributes:
        signature: callable(flow=..., rgb=...) on raw 0..255 pixels -> dict of task outputs.
        contract: its inputs and tasks (`semantic_classes` None: class maps do not tell).
        saved_model: the loaded object; the signature's variables live as long as it does.
    """

    signature: Any
    contract: ModelContract
    saved_model: Any


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text or type(error).__name__)[:MAX_MESSAGE_CHARS]


def _expected(multitask: bool) -> str:
    if multitask:
        return f"expected inputs {list(INPUT_NAMES)} and outputs {list(TASK_NAMES)}"
    channels = ", ".join(
        f"{task} {' or '.join(map(str, _channel_choices(task)))}" for task in TASK_NAMES
    )
    return (
        f"expected inputs among {list(INPUT_NAMES)} and outputs among {list(TASK_NAMES)} "
        f"with channels {channels}"
    )


def _channel_choices(task: str) -> tuple[int, ...]:
    return SEMANTIC_CLASS_CHOICES if task == "semantic" else (num_channels(task),)


def _contract_problem(
    inputs: Mapping[str, Sequence], outputs: Mapping[str, Sequence], class_maps: bool
) -> str | None:
    """What breaks the contract (None: nothing), given input and output shapes by name."""
    if (
        not inputs
        or not outputs
        or set(inputs) - set(INPUT_NAMES)
        or set(outputs) - set(TASK_NAMES)
    ):
        return f"named inputs {sorted(inputs)} and outputs {sorted(outputs)}"
    sizes = {tuple(shape[1:3]) for shape in inputs.values()}
    if len(sizes) > 1 or any(
        len(shape) != 4 or shape[-1] != INPUT_CHANNELS for shape in inputs.values()
    ):
        return f"inputs {dict(inputs)} are not [B, H, W, 3] of one size"
    for task, shape in outputs.items():
        if class_maps and task != "depth" and len(shape) == 3:
            continue  # an exported int32 class map [B, H, W]
        allowed = _channel_choices(task)
        if shape[-1] not in allowed:
            return f"output {task} has {shape[-1]} channels, not {' or '.join(map(str, allowed))}"
    return None


def _contract_of(
    inputs: Mapping[str, Sequence], outputs: Mapping[str, Sequence], class_maps: bool
) -> ModelContract:
    size = tuple(next(iter(inputs.values()))[1:3])
    semantic = outputs.get("semantic")
    return ModelContract(
        inputs=tuple(name for name in INPUT_NAMES if name in inputs),
        tasks=tuple(task for task in TASK_NAMES if task in outputs),
        img_size=None if None in size else (int(size[0]), int(size[1])),
        semantic_classes=int(semantic[-1]) if semantic is not None and len(semantic) == 4 else None,
    )


def _check(
    kind: str,
    inputs: Mapping[str, Sequence],
    outputs: Mapping[str, Sequence],
    where: str,
    multitask: bool,
    class_maps: bool = False,
) -> ModelContract:
    problem = _contract_problem(inputs, outputs, class_maps)
    contract = None if problem else _contract_of(inputs, outputs, class_maps)
    if contract is not None and multitask and not contract.multitask:
        problem = f"inputs {list(contract.inputs)} and outputs {list(contract.tasks)}"
    if problem:
        what = "multi-task model" if multitask else "model"
        raise UserError(
            f"{where}: not a keras-mtl {what} (a {kind} with {problem}; {_expected(multitask)})"
        )
    return contract


def _shapes(structure: Any) -> dict[str, tuple]:
    if not isinstance(structure, Mapping):
        return {}
    return {name: tuple(tensor.shape) for name, tensor in structure.items()}


def model_contract(model: Any, where: str = "model", multitask: bool = False) -> ModelContract:
    """Checks that `model` is a keras-mtl network and says what it takes and gives.

    Args:
        model: a functional network, or the trainer holding one (its `.model` is checked).
        where: how the error names the model, e.g. `"--checkpoint runs/x/model_best.keras"`.
        multitask: require both inputs and all three tasks (export).

    Returns:
        Its `ModelContract`.

    Raises:
        UserError: not a keras.Model, or inputs/outputs outside the contract.

    Example:

    ```python
    model_contract(build_single_task_model("depth", (64, 128))).inputs  # ("rgb",)
    ```
    """
    if not isinstance(model, keras.Model):
        raise UserError(f"{where}: holds a {type(model).__name__}, not a keras-mtl model")
    network = unwrap_model(model)
    try:
        inputs, outputs = _shapes(network.input), _shapes(network.output)
    except (AttributeError, ValueError):  # a subclassed model that was never called
        inputs, outputs = {}, {}
    return _check(type(network).__name__, inputs, outputs, where, multitask)


def _check_keras_file(path: str, flag: str) -> None:
    if not os.path.exists(path):
        raise UserError(
            f"{flag} {path} does not exist: pass a .keras file written by train.py "
            "(model_best.keras or checkpoint.keras)"
        )
    if not path.endswith(KERAS_SUFFIX) or not zipfile.is_zipfile(path):
        raise UserError(
            f"{flag} {path} is not a Keras .keras archive: pass model_best.keras or "
            "checkpoint.keras from a training run"
        )


def load_model(
    path: str | os.PathLike,
    *,
    flag: str = "--checkpoint",
    multitask: bool = False,
    img_size: Sequence[int] | None = None,
) -> keras.Model:
    """The functional network of a `.keras` file: `model_best.keras`, or a trainer's
    `checkpoint.keras` (its `.model`), checked against the keras-mtl contract.

    Args:
        path: the `.keras` file.
        flag: the command-line flag that named it, for error messages.
        multitask: require the multi-task network (both inputs, all three tasks).
        img_size: (H, W) to rebuild the network at, when it was saved at another size.

    Returns:
        The functional `keras.Model` (not compiled).

    Raises:
        UserError: the file is missing, not a `.keras` archive, cannot be loaded, holds no
            model, or a model without the contract; or it cannot be rebuilt at `img_size`.

    Example:

    ```python
    network = load_model("runs/x/checkpoint.keras", multitask=True, img_size=(384, 768))
    ```
    """
    path = os.fspath(path)
    _check_keras_file(path, flag)
    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to load is a bad file for the user
        raise UserError(
            f"{flag} {path}: not a keras-mtl model (Keras could not load it: {_first_line(error)})"
        ) from None
    network = loaded.model if isinstance(loaded, MultiTaskTrainer) else loaded
    model_contract(network, where=f"{flag} {path}", multitask=multitask)
    network = unwrap_model(network)
    if img_size is not None:
        network = at_input_size(network, img_size, source=path)
    return network


def at_input_size(
    model: keras.Model, img_size: Sequence[int], source: str = "the model"
) -> keras.Model:
    """`model` itself when its inputs are `img_size` (H, W), else the same network rebuilt at
    that size with the same weights (`keras_mtl.models.rebuild`).

    Raises:
        UserError: naming `--img_resize`, when the network cannot be rebuilt at that size.

    Example:

    ```python
    at_input_size(build_multitask_model((64, 128)), (128, 256)).input["rgb"].shape  # 128x256
    ```
    """
    height, width = (int(value) for value in img_size)
    current = model_contract(model, where=source).img_size
    if current == (height, width):
        return model
    try:
        return rebuild(model, (height, width))
    except ValueError as error:
        raise UserError(
            f"--img_resize {height} {width}: {source} takes {current[0]}x{current[1]} inputs and "
            f"cannot be rebuilt at this size ({_first_line(error)})"
        ) from None


def initialise_from_checkpoint(
    model: keras.Model, path: str | os.PathLike, flag: str = "--pretrained"
) -> dict[str, Any]:
    """Initialises `model` from what `--pretrained` names, chosen by the file's content:

    - `imagenet`: Keras' ImageNet MobileNetV2 weights at the model's width, into both stems and
      the encoder (`keras_mtl.models.imagenet`, downloaded on first use);
    - an HDF5 file: the weights of a `keras.applications.MobileNetV2(include_top=False)`
      (`save_weights` `.weights.h5`, or Keras' downloaded `.h5`), mapped the same way;
    - a `.keras` file: any keras-mtl network, single- or multi-task, or a trainer, copied
      where names and shapes match (`keras_mtl.models.load_pretrained`: a single-stream stem
      feeds both streams, one decoder feeds every decoder).

    Args:
        model: the network to initialise (or the trainer holding it).
        path: `imagenet`, an HDF5 weights file, or a `.keras` file.
        flag: the flag that named it, for error messages.

    Returns:
        `{"source": path, "copied": {target layer: source layer}, "skipped": {layer: reason}}`;
        from MobileNetV2 weights also `file`, `sha256`, `initialised`, `unused` and
        `conversions` (`keras_mtl.models.imagenet.load_mobilenetv2_weights`).

    Raises:
        UserError: naming the flag: a missing file, a file that is neither a `.keras` archive
            nor HDF5, weights of another network or width, no ImageNet weights at this width,
            a failed download, or as `load_model`.

    Example:

    ```python
    report = initialise_from_checkpoint(model, "runs/semantic/model_best.keras")
    report = initialise_from_checkpoint(model, "imagenet")
    ```
    """
    text = os.fspath(path)
    if text == IMAGENET:
        return initialise_from_mobilenetv2(model, IMAGENET, flag)
    if not os.path.isfile(text):
        raise UserError(
            f"{flag} {text} does not exist: pass imagenet, a .keras file written by train.py "
            "(model_best.keras or checkpoint.keras) or a keras.applications.MobileNetV2 "
            ".weights.h5"
        )
    if h5py.is_hdf5(text):
        return initialise_from_mobilenetv2(model, text, flag)
    if not zipfile.is_zipfile(text):
        raise UserError(
            f"{flag} {text} is not a Keras .keras archive nor an HDF5 weights file: pass "
            "model_best.keras or checkpoint.keras from a training run, a "
            "keras.applications.MobileNetV2 .weights.h5, or imagenet"
        )
    report = load_pretrained(model, load_model(text, flag=flag))
    report["source"] = text
    return report


def load_saved_model(path: str | os.PathLike, flag: str = "--checkpoint") -> ServingModel:
    """The `serving_default` signature of a SavedModel folder written by export.py.

    Raises:
        UserError: the folder has no `saved_model.pb`, cannot be loaded, has no such signature,
            or its inputs/outputs are not the keras-mtl ones.

    Example:

    ```python
    serving = load_saved_model("exported/saved_model")
    serving.signature(flow=flow_pixels, rgb=rgb_pixels)["depth"]  # metres
    ```
    """
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        raise UserError(
            f"{flag} {path} is a folder without {SAVED_MODEL_FILE}: pass a .keras file or the "
            "saved_model folder written by export.py"
        )
    try:
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures[SAVED_MODEL_SIGNATURE]
    except Exception as error:  # noqa: BLE001 - any failure to load is a bad folder for the user
        raise UserError(
            f"{flag} {path}: not a SavedModel with a {SAVED_MODEL_SIGNATURE!r} signature "
            f"({_first_line(error)}); pass the saved_model folder written by export.py"
        ) from None
    inputs = {
        name: tuple(spec.shape) for name, spec in signature.structured_input_signature[1].items()
    }
    outputs = _shapes(signature.structured_outputs)
    contract = _check("SavedModel", inputs, outputs, f"{flag} {path}", False, class_maps=True)
    return ServingModel(signature=signature, contract=contract, saved_model=loaded)


__all__ = [
    "ModelContract",
    "ServingModel",
    "at_input_size",
    "initialise_from_checkpoint",
    "load_model",
    "load_saved_model",
    "model_contract",
]
