"""Predictions on a user's own footage: a video or a folder of frames in, overlay pictures out.

For every pair of consecutive frames the optical flow is computed with the flow method and
parameters the model was trained on (`choose_flow`: the record of the training data's flow
folder, found through the run's `config.yaml` beside a `.keras` checkpoint, or a
`flow_method.json` beside an exported model; else the default method), at the footage's own
resolution as the training flow was at the dataset's, stored as the flow PNGs are (u + 128,
v + 128, confidence, rounded to uint8), then frame and flow are resized to the network's input
size as the validation pipeline resizes them (bilinear, flow vectors scaled by the size ratios).
The network runs in batches behind one small interface (`ModelRunner`) for each model format:

- a `.keras` checkpoint (`KerasRunner`; the functional network, inputs normalised here with
  `keras_mtl.data.pipeline.normalize_inputs`);
- an exported SavedModel folder (`SavedModelRunner`; signature `serving_default`, raw pixels);
- a `.tflite` file (`TFLiteRunner`; `ai_edge_litert`'s signature runner, raw pixels).

Each prediction is drawn with `keras_mtl.visualize.prediction_overlay` on the original frame
with one fixed depth range for the whole footage, and written as an MPEG-4 video (to a
temporary file in the same folder, renamed at the end) and/or one PNG per frame (each written
atomically).

The first frame has no previous frame, so no flow: by default predictions start at the second
frame (`first_frame="skip"`); `first_frame="zero_flow"` predicts it too, from zero flow with
zero confidence (the motion output of that frame means little: the network never saw such flow
in training).

Example:

```python
summary = run_prediction(
    "runs/synthetic/model_best.keras", video="in.mp4", out="out.mp4", out_dir="frames"
)
print(summary.frames_written, summary.frames_per_second)
```

Command line: `python predict.py --checkpoint runs/synthetic/model_best.keras --video in.mp4
--out out.mp4` (see `build_parser`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from data_tools import write_png_atomic
from data_tools.flow import (
    DEFAULT_METHOD,
    DEFAULT_PARAMS,
    FLOW_METHODS,
    FarnebackParams,
    FlowParams,
    compute_flow,
    default_params,
    encode_flow,
    method_for_flow_dir,
    method_of,
    params_from_record,
    read_flow_method,
)
from keras_mtl.config import RUN_CONFIG_NAME
from keras_mtl.console import add_verbose_flag
from keras_mtl.data.layout import FLOW_METHOD_FILE, FLOW_OFFSET
from keras_mtl.errors import FlagParser, UserError
from keras_mtl.tasks import INPUT_NAMES, SEMANTIC_CLASS_CHOICES, TASK_NAMES
from keras_mtl.visualize import depth_range_to_inverse, prediction_overlay

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_DEPTH_RANGE: tuple[float, float] = (2.0, 80.0)
DEFAULT_BATCH_SIZE = 8
DEFAULT_FPS = 17.0  # Cityscapes' frame rate: the output video's rate for a folder of frames
FIRST_FRAME_CHOICES: tuple[str, ...] = ("skip", "zero_flow")
VIDEO_SUFFIX = ".mp4"
SIGNATURE = "serving_default"  # the exported models' signature (keras_mtl.export.SIGNATURE)
EXPORT_REPORT = "export_report.json"  # written by export.py beside the exported files
_EXIF_ORIENTATION = 0x0112
_EXIF_SWAPS_SIDES = (5, 6, 7, 8)  # orientations that turn the picture by 90 degrees


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class Frame:
    """One frame of the footage.

    Attributes:
        index: position in the footage, 0 = the first frame.
        name: stem of its PNG output (the image's stem, or `frame_<index:06d>` for a video).
        rgb: uint8 [H, W, 3] pixels in RGB order.
    """

    index: int
    name: str
    rgb: np.ndarray


class FrameSource:
    """Consecutive frames of one size, from a video (`VideoFrames`) or a folder (`ImageFolder`).

    Attributes:
        path: the video file or the folder.
        flag: the command-line flag that named it (for messages).
        size: (height, width) of every frame.
        count: number of frames (a video's is its header's, which may be approximate), or None
            when unknown.
        fps: frame rate of a video, None for a folder.
    """

    path: Path
    flag: str
    size: tuple[int, int]
    count: int | None
    fps: float | None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError


class VideoFrames(FrameSource):
    """The frames of a video file, decoded with OpenCV (`cv2.VideoCapture`).

    Args:
        path: the video (any container and codec this OpenCV's FFmpeg reads).
        flag: how to name it in errors.

    Raises:
        UserError: the file is missing, cannot be opened, or no frame can be decoded.

    Example:
        >>> frames = VideoFrames("in.mp4")
        >>> frames.size, frames.fps
        ((256, 512), 17.0)
    """

    def __init__(self, path: str | os.PathLike, flag: str = "--video") -> None:
        self.path, self.flag = Path(path), flag
        if not self.path.is_file():
            raise UserError(f"{flag} {self.path}: no such file")
        capture = self._open()
        try:
            ok, first = capture.read()
            if not ok or first is None:
                raise UserError(
                    f"{flag} {self.path}: no frame could be decoded (not a video, empty, or a "
                    "codec this OpenCV cannot read)"
                )
            self.size = (int(first.shape[0]), int(first.shape[1]))
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(capture.get(cv2.CAP_PROP_FPS))
        finally:
            capture.release()
        self.count = count if count > 0 else None
        self.fps = fps if math.isfinite(fps) and fps > 0 else None

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(os.fspath(self.path))
        if not capture.isOpened():
            raise UserError(
                f"{self.flag} {self.path}: cannot be opened as a video (not a video file, or a "
                "format this OpenCV cannot read)"
            )
        return capture

    def __iter__(self) -> Iterator[Frame]:
        capture = self._open()
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    return
                if bgr.shape[:2] != self.size:
                    raise UserError(
                        f"{self.flag} {self.path}: frame {index + 1} is {bgr.shape[1]}x"
                        f"{bgr.shape[0]}, the first {self.size[1]}x{self.size[0]}; every frame "
                        "must have one size"
                    )
                yield Frame(index, f"frame_{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()


def natural_sort_key(name: str) -> list[Any]:
    """Sort key that orders the digits in a name by value: `f2.png` before `f10.png`.

    Example:
        >>> sorted(["f10.png", "f2.png", "f1.png"], key=natural_sort_key)
        ['f1.png', 'f2.png', 'f10.png']
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _image_size(path: Path, flag: str) -> tuple[int, int]:
    """(height, width) of an image file as OpenCV will decode it, from its header only."""
    from PIL import Image, UnidentifiedImageError  # pillow comes with matplotlib

    try:
        with Image.open(path) as image:
            width, height = image.size
            # OpenCV applies the EXIF orientation when decoding; a 90-degree turn swaps sides.
            if image.getexif().get(_EXIF_ORIENTATION, 1) in _EXIF_SWAPS_SIDES:
                width, height = height, width
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UserError(f"{flag}: {path} is not a readable image ({error})") from None
    return int(height), int(width)


class ImageFolder(FrameSource):
    """The images of a folder (not its sub-folders), as consecutive frames sorted by name.

    Names are sorted with digits compared by value (`natural_sort_key`), so `frame_2.png`
    comes before `frame_10.png`; with zero-padded numbers this is plain name order. Every
    image's size is read from its header at construction, so a folder of mixed sizes is
    refused before anything is computed.

    Args:
        path: the folder.
        flag: how to name it in errors.

    Raises:
        UserError: not a folder, no images (`IMAGE_SUFFIXES`) in it, an unreadable image, or
            images of different sizes (naming one of each).

    Example:
        >>> frames = ImageFolder("drive/leftImg8bit_sequence/demo/ellwood")
        >>> frames.count, frames.size
        (30, (256, 512))
    """

    def __init__(self, path: str | os.PathLike, flag: str = "--images") -> None:
        self.path, self.flag = Path(path), flag
        if not self.path.is_dir():
            raise UserError(f"{flag} {self.path}: no such folder")
        self.files = sorted(
            (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: natural_sort_key(p.name),
        )
        if not self.files:
            raise UserError(
                f"{flag} {self.path}: no images in it (looked for "
                f"{', '.join('*' + s for s in IMAGE_SUFFIXES)}; sub-folders are not searched)"
            )
        self.size = _image_size(self.files[0], flag)
        for file in self.files[1:]:
            size = _image_size(file, flag)
            if size != self.size:
                raise UserError(
                    f"{flag}: {file} is {size[1]}x{size[0]} but {self.files[0]} is "
                    f"{self.size[1]}x{self.size[0]}; every frame must have one size"
                )
        self.count = len(self.files)
        self.fps = None

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            bgr = cv2.imread(os.fspath(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"{self.flag}: {file} could not be decoded")
            if bgr.shape[:2] != self.size:
                raise UserError(
                    f"{self.flag}: {file} decodes to {bgr.shape[1]}x{bgr.shape[0]}, not "
                    f"{self.size[1]}x{self.size[0]}; every frame must have one size"
                )
            yield Frame(index, file.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def open_frames(
    video: str | os.PathLike | None = None, images: str | os.PathLike | None = None
) -> FrameSource:
    """The footage: a video file or a folder of frames (exactly one of the two).

    Args:
        video: a video file (`--video`).
        images: a folder of consecutive frames (`--images`).

    Raises:
        UserError: neither or both given, or the footage is unreadable (see `VideoFrames`,
            `ImageFolder`).

    Example:
        >>> source = open_frames(video="in.mp4")
    """
    if (video is None) == (images is None):
        raise UserError("give the footage: --video FILE or --images DIR (one of them)")
    return VideoFrames(video) if video is not None else ImageFolder(images)


# ---------------------------------------------------------------------------------------------
# Which flow


@dataclass(frozen=True)
class FlowChoice:
    """The flow method and parameters used for the footage, and why.

    Attributes:
        params: `FarnebackParams` or `DISParams` for `data_tools.flow.compute_flow`.
        source: one line saying where they come from.
        trained_method: the method of the model's training flow, when recorded; else None.
        warning: set when `--flow_method` contradicts the recorded method.
    """

    params: FlowParams
    source: str
    trained_method: str | None = None
    warning: str | None = None

    @property
    def method(self) -> str:
        """The method name: "farneback" or "dis"."""
        return method_of(self.params)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"{path}: not a readable run config ({error}); fix or remove it") from None
    return raw if isinstance(raw, dict) else {}


def _checkpoint_flow(checkpoint: Path) -> tuple[FlowParams | None, str]:
    """The training flow of a `.keras` checkpoint, from the run's `config.yaml` beside it."""
    config_path = checkpoint.parent / RUN_CONFIG_NAME
    if not config_path.is_file():
        return None, f"no {RUN_CONFIG_NAME} beside {checkpoint}"
    raw = _read_yaml(config_path)
    data = raw.get("data") if isinstance(raw.get("data"), dict) else raw
    flow_dir, data_path = data.get("flow_dir"), data.get("data_path")
    if not isinstance(flow_dir, str) or not flow_dir:
        return None, f"{config_path} names no data.flow_dir"
    if isinstance(data_path, str) and Path(data_path).is_dir():
        try:
            record = read_flow_method(data_path, flow_dir)
        except UserError:
            record = False  # the flow folder is gone: fall back to its name below
        folder = Path(data_path) / flow_dir
        if isinstance(record, dict):
            where = f"{folder / FLOW_METHOD_FILE} (data.flow_dir of {config_path})"
            return params_from_record(record, str(folder / FLOW_METHOD_FILE)), where
        if record is None and next(folder.glob("*/*/*.png"), None) is not None:
            # A flow folder without a record was written by the Farneback-only flow tool.
            return FarnebackParams(), (
                f"{folder} holds flow but no {FLOW_METHOD_FILE}, so it is the Farneback flow of "
                "the tool before records"
            )
    method = method_for_flow_dir(flow_dir)
    if method is None:
        return None, (
            f"{config_path}: data.flow_dir {flow_dir!r} is no method's default folder and its "
            f"record under data_path {data_path!r} is not readable here"
        )
    return default_params(method), (
        f"{config_path}: data.flow_dir {flow_dir} is the {method} folder; the dataset "
        f"{data_path!r} is not here to read its record, so {method}'s default parameters"
    )


def _export_flow(model_path: Path) -> tuple[FlowParams | None, str]:
    """The training flow of an exported model: a `flow_method.json` beside it, if any."""
    folders = [model_path] if model_path.is_dir() else []
    folders.append(model_path.parent)
    for folder in folders:
        record_path = folder / FLOW_METHOD_FILE
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError, UnicodeDecodeError) as error:
                raise UserError(f"{record_path}: not a readable flow record ({error})") from None
            return params_from_record(record, str(record_path)), str(record_path)
    # export.py writes it from the run; for an older export, copy the training flow folder's one.
    return None, f"no {FLOW_METHOD_FILE} beside {model_path}"


def trained_flow(model_path: str | os.PathLike) -> tuple[FlowParams | None, str]:
    """The flow parameters a model was trained on, when recorded, and where that was found.

    A `.keras` checkpoint: the run's `config.yaml` beside it names `data.data_path` and
    `data.flow_dir`; that folder's `flow_method.json` (`data_tools.flow.read_flow_method`) gives
    method and parameters (no record but flow files: the seed's Farneback). When the dataset is
    not on this machine, the folder's name gives the method (`method_for_flow_dir`) with its
    default parameters. An exported model (SavedModel folder or `.tflite`): a
    `flow_method.json` in its folder or the folder above.

    Args:
        model_path: `.keras` file, SavedModel folder or `.tflite` file.

    Returns:
        (parameters or None when nothing is recorded, a description of the source).

    Example:
        >>> params, where = trained_flow("runs/synthetic/model_best.keras")
        >>> method_of(params)
        'dis'
    """
    path = Path(model_path)
    if path.suffix.lower() == ".keras":
        return _checkpoint_flow(path)
    return _export_flow(path)


def choose_flow(model_path: str | os.PathLike, flow_method: str | None = None) -> FlowChoice:
    """The flow to compute for a model's footage: the recorded one unless `flow_method` says.

    Args:
        model_path: the model (see `trained_flow`).
        flow_method: "farneback" or "dis" to force a method (`--flow_method`); None = the
            recorded method and parameters, or the default method when nothing is recorded.

    Returns:
        A `FlowChoice`; its `warning` is set when `flow_method` differs from the recorded
        method (the recorded parameters are used when the method is the same).

    Raises:
        UserError: unknown `flow_method`, or an unreadable record.

    Example:
        >>> choice = choose_flow("runs/synthetic/model_best.keras")
        >>> choice.method, choice.source
        ('dis', 'recorded: data/synthetic/leftImg8bit_flow_dis_confidence/flow_method.json ...')
    """
    if flow_method is not None and flow_method not in FLOW_METHODS:
        raise UserError(
            f"--flow_method must be one of {', '.join(FLOW_METHODS)}, got {flow_method!r}"
        )
    params, where = trained_flow(model_path)
    trained = method_of(params) if params is not None else None
    if flow_method is None:
        if params is not None:
            return FlowChoice(params, f"recorded: {where}", trained)
        return FlowChoice(
            DEFAULT_PARAMS,
            f"the default method, as nothing is recorded ({where}); pass --flow_method if the "
            "model was trained on other flow",
        )
    if params is not None and trained == flow_method:
        return FlowChoice(
            params, f"--flow_method {flow_method}, parameters recorded: {where}", trained
        )
    if params is not None:
        warning = (
            f"--flow_method {flow_method} differs from the {trained} flow the model was trained "
            f"on ({where}); its predictions, motion above all, may be worse"
        )
        return FlowChoice(
            default_params(flow_method), f"--flow_method {flow_method}", trained, warning
        )
    return FlowChoice(
        default_params(flow_method), f"--flow_method {flow_method} (nothing recorded: {where})"
    )


# ---------------------------------------------------------------------------------------------
# Network inputs


def resize_inputs(
    rgb: np.ndarray, stored_flow: np.ndarray, size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frame and stored flow at the network's input size, as the validation pipeline resizes.

    Bilinear with half-pixel centres and no antialiasing (what `tf.image.resize` does in
    `keras_mtl.data.augment.resize`); flow u and v are multiplied by the width and height
    ratios, the confidence is resampled as it is. Values stay raw pixels (flow with its +128).

    Args:
        rgb: uint8 [H, W, 3] frame.
        stored_flow: [H, W, 3] flow as stored (u + 128, v + 128, confidence), any dtype.
        size: (height, width) of the network input.

    Returns:
        (flow, rgb) float32 [height, width, 3] raw pixels.

    Example:
        >>> flow, rgb = resize_inputs(frame, encode_flow(compute_flow(frame, previous)), (128, 256))
    """
    height, width = (int(v) for v in size)
    source_height, source_width = rgb.shape[:2]
    offset = np.asarray([FLOW_OFFSET, FLOW_OFFSET, 0.0], np.float32)
    flow = np.asarray(stored_flow, np.float32) - offset
    rgb = np.asarray(rgb, np.float32)
    if (source_height, source_width) != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
        flow *= np.asarray([width / source_width, height / source_height, 1.0], np.float32)
    return flow + offset, rgb


def zero_flow(height: int, width: int) -> np.ndarray:
    """Stored flow of "no motion, no confidence": (128, 128, 0) everywhere, uint8 [H, W, 3].

    Example:
        >>> zero_flow(2, 2)[0, 0].tolist()
        [128, 128, 0]
    """
    stored = np.zeros((height, width, 3), np.uint8)
    stored[..., :2] = int(FLOW_OFFSET)
    return stored


def frame_inputs(
    current: np.ndarray,
    previous: np.ndarray | None,
    params: FlowParams,
    size: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """The raw-pixel network inputs of one frame: its flow since `previous`, both resized.

    The flow is computed at the frames' own resolution with `params`, rounded to its stored
    uint8 form (as the training flow PNGs are), then resized with the frame (`resize_inputs`).

    Args:
        current: uint8 [H, W, 3] RGB frame.
        previous: the frame before it, same size; None = zero flow with zero confidence.
        params: flow parameters (`choose_flow(...).params`).
        size: network input (height, width).

    Returns:
        (flow, rgb) float32 [height, width, 3], raw pixels as the exported models take them.

    Example:
        >>> flow, rgb = frame_inputs(frame, previous_frame, DISParams(), (128, 256))
    """
    if previous is None:
        stored = zero_flow(*current.shape[:2])
    else:
        stored = encode_flow(compute_flow(current, previous, params))
    return resize_inputs(current, stored, size)


# ---------------------------------------------------------------------------------------------
# Models


def _shape(values: Any) -> tuple[int | None, ...]:
    return tuple(None if v is None or int(v) < 0 else int(v) for v in values)


def check_model_signature(
    inputs: Mapping[str, Sequence[int | None]], outputs: Sequence[str], where: str
) -> tuple[int, int]:
    """Checks a model's inputs and outputs against what predictions need; returns (H, W).

    Args:
        inputs: input name -> shape with the batch axis ([B, H, W, C]; None for unknown).
        outputs: output names.
        where: the flag and path, for the error.

    Raises:
        UserError: no `flow` or `rgb` input, not 3 channels each, no fixed common H x W, or
            none of the outputs depth, semantic, motion.

    Example:
        >>> check_model_signature({"flow": (None, 64, 128, 3), "rgb": (None, 64, 128, 3)},
        ...                       ["depth", "semantic", "motion"], "--model m.tflite")
        (64, 128)
    """
    expected = "inputs flow and rgb, each [batch, H, W, 3] (a keras-mtl network or its export)"
    missing = [name for name in INPUT_NAMES if name not in inputs]
    if missing:
        raise UserError(
            f"{where}: the model has no {' or '.join(missing)} input (its inputs: "
            f"{', '.join(sorted(inputs)) or 'none'}); expected {expected}"
        )
    shapes = {name: _shape(inputs[name]) for name in INPUT_NAMES}
    for name, shape in shapes.items():
        if len(shape) != 4 or shape[3] != 3:
            raise UserError(
                f"{where}: input {name} has shape {list(shape)}, not [batch, H, W, 3]; "
                f"expected {expected}"
            )
        if shape[1] is None or shape[2] is None:
            raise UserError(
                f"{where}: input {name} has no fixed size ({list(shape)}); export the model at "
                "a fixed input size (export.py --img_resize H W)"
            )
    if shapes["flow"][1:3] != shapes["rgb"][1:3]:
        raise UserError(
            f"{where}: inputs flow {list(shapes['flow'])} and rgb {list(shapes['rgb'])} differ "
            "in size; expected one H x W"
        )
    if not set(outputs) & set(TASK_NAMES):
        raise UserError(
            f"{where}: the model has none of the outputs {', '.join(TASK_NAMES)} (its outputs: "
            f"{', '.join(sorted(outputs)) or 'none'})"
        )
    return int(shapes["rgb"][1]), int(shapes["rgb"][2])


def standard_outputs(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Outputs of any format in one form: `depth` float32 [B, H, W] metres, `semantic` and
    `motion` int32 [B, H, W] class maps (logits [B, H, W, C] are argmaxed). Other keys dropped.

    Example:
        >>> standard_outputs({"depth": np.ones((1, 2, 2, 1)), "motion": np.zeros((1, 2, 2, 2))})
        {'depth': array(...), 'motion': array(...)}
    """
    result = {}
    for task in TASK_NAMES:
        if task not in outputs:
            continue
        value = np.asarray(outputs[task])
        if task == "depth":
            result[task] = value.reshape(value.shape[:3]).astype(np.float32)
        elif value.ndim == 4:
            result[task] = np.argmax(value, axis=-1).astype(np.int32)
        else:
            result[task] = value.astype(np.int32)
    return result


def _report_semantic_classes(folder: Path) -> int | None:
    """`semantic_classes` of an `export_report.json` in `folder`, if there is one."""
    path = folder / EXPORT_REPORT
    try:
        value = json.loads(path.read_text()).get("semantic_classes")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return int(value) if value in SEMANTIC_CLASS_CHOICES else None


class ModelRunner:
    """One interface to the three model formats: raw-pixel batches in, standard outputs out.

    Attributes:
        path: the model file or folder.
        kind: "keras", "saved_model" or "tflite".
        input_size: (height, width) of the network input.
        semantic_classes: the number of semantic classes when the model says (logits, or an
            `export_report.json` beside an export); else None.
        tasks: the outputs it has, among depth, semantic, motion.

    Example:
        >>> runner = load_runner("exported/model_fp32.tflite")
        >>> out = runner.predict(flow_batch, rgb_batch)  # float32 [B, H, W, 3] raw pixels
        >>> out["semantic"].shape
        (4, 128, 256)
    """

    path: Path
    kind: str
    input_size: tuple[int, int]
    semantic_classes: int | None
    tasks: tuple[str, ...]

    def predict(self, flow: np.ndarray, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Runs one batch.

        Args:
            flow: float32 [B, H, W, 3] stored flow (u + 128, v + 128, confidence).
            rgb: float32 [B, H, W, 3] RGB pixels 0..255.

        Returns:
            `standard_outputs`: depth [B, H, W] metres, semantic and motion [B, H, W] ids.
        """
        flow = np.ascontiguousarray(flow, np.float32)
        rgb = np.ascontiguousarray(rgb, np.float32)
        return standard_outputs(self._run(flow, rgb))

    def _run(self, flow: np.ndarray, rgb: np.ndarray) -> Mapping[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line: format, path, input size."""
        names = {"keras": "Keras checkpoint", "saved_model": "SavedModel", "tflite": "TFLite"}
        height, width = self.input_size
        return f"{names[self.kind]} {self.path} (input {height}x{width})"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def load_keras_network(path: str | os.PathLike, flag: str = "--checkpoint") -> Any:
    """The functional network of a `.keras` file (`model_best.keras` or a trainer's checkpoint).

    The one place predictions load a checkpoint (through `keras_mtl.checkpoints.load_model`,
    which checks the model contract and names the flag and file in its errors).

    Raises:
        UserError: missing file, not a `.keras` archive, or not a keras-mtl network.

    Example:
        >>> network = load_keras_network("runs/synthetic/model_best.keras")
    """
    from keras_mtl.checkpoints import load_model

    return load_model(path, flag=flag)


class KerasRunner(ModelRunner):
    """A `.keras` checkpoint: the functional network, which takes normalised inputs.

    The raw pixels are normalised here with `keras_mtl.data.pipeline.normalize_inputs` (the
    function the training pipeline and the exported graphs use), and the compiled
    `predict_on_batch` runs the batch.

    Args:
        path: `model_best.keras` or a trainer's `checkpoint.keras`.
        flag: how to name it in errors.

    Raises:
        UserError: unloadable file, or inputs/outputs that are not a keras-mtl network's.

    Example:
        >>> runner = KerasRunner("runs/synthetic/model_best.keras")
    """

    kind = "keras"

    def __init__(self, path: str | os.PathLike, flag: str = "--checkpoint") -> None:
        import keras

        self.path = Path(path)
        network = load_keras_network(self.path, flag)
        where = f"{flag} {self.path}"
        if not isinstance(network, keras.Model):
            raise UserError(f"{where}: holds a {type(network).__name__}, not a Keras model")
        inputs = network.input if isinstance(network.input, dict) else None
        if inputs is None:
            inputs = {tensor.name: tensor for tensor in network.inputs}
        outputs = network.output
        if isinstance(outputs, dict):
            self._output_names = list(outputs)
            output_shapes = {name: tensor.shape for name, tensor in outputs.items()}
        else:
            self._output_names = list(getattr(network, "output_names", None) or [])
            tensors = outputs if isinstance(outputs, list | tuple) else [outputs]
            output_shapes = {
                name: tensor.shape
                for name, tensor in zip(self._output_names, tensors, strict=False)
            }
        self.input_size = check_model_signature(
            {name: tensor.shape for name, tensor in inputs.items()}, self._output_names, where
        )
        self.tasks = tuple(t for t in TASK_NAMES if t in self._output_names)
        semantic_shape = output_shapes.get("semantic")
        self.semantic_classes = int(semantic_shape[-1]) if semantic_shape is not None else None
        self._network = network

    def _run(self, flow: np.ndarray, rgb: np.ndarray) -> Mapping[str, Any]:
        from keras_mtl.data.pipeline import normalize_inputs

        flow, rgb = normalize_inputs(flow, rgb)
        outputs = self._network.predict_on_batch({"flow": flow, "rgb": rgb})
        if isinstance(outputs, dict):
            return outputs
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return dict(zip(self._output_names, outputs, strict=False))


class SavedModelRunner(ModelRunner):
    """An exported SavedModel folder: its `serving_default` signature on raw pixels.

    Args:
        path: the folder `export.py` wrote (`exported/saved_model`).
        flag: how to name it in errors.

    Raises:
        UserError: not a SavedModel, no usable signature, or inputs/outputs that are not a
            keras-mtl export's.

    Example:
        >>> runner = SavedModelRunner("exported/saved_model")
    """

    kind = "saved_model"

    def __init__(self, path: str | os.PathLike, flag: str = "--model") -> None:
        import tensorflow as tf

        self.path = Path(path)
        where = f"{flag} {self.path}"
        if not (self.path / "saved_model.pb").is_file():
            raise UserError(f"{where}: not a SavedModel folder (no saved_model.pb in it)")
        try:
            # Keep the loaded object: the signature needs its variables alive.
            self._loaded = tf.saved_model.load(os.fspath(self.path))
        except Exception as error:  # noqa: BLE001 - any load failure is a bad folder
            raise UserError(f"{where}: could not be loaded ({_first_line(error)})") from None
        signatures = dict(self._loaded.signatures)
        if SIGNATURE in signatures:
            self._signature = signatures[SIGNATURE]
        elif len(signatures) == 1:
            self._signature = next(iter(signatures.values()))
        else:
            raise UserError(
                f"{where}: no {SIGNATURE!r} signature (it has {sorted(signatures) or 'none'})"
            )
        input_specs = self._signature.structured_input_signature[1]
        output_specs = self._signature.structured_outputs
        self.input_size = check_model_signature(
            {name: spec.shape.as_list() for name, spec in input_specs.items()},
            list(output_specs),
            where,
        )
        self.tasks = tuple(t for t in TASK_NAMES if t in output_specs)
        semantic = output_specs.get("semantic")
        if semantic is not None and semantic.shape.rank == 4:
            self.semantic_classes = int(semantic.shape[-1])
        else:
            self.semantic_classes = _report_semantic_classes(self.path.parent)

    def _run(self, flow: np.ndarray, rgb: np.ndarray) -> Mapping[str, Any]:
        import tensorflow as tf

        outputs = self._signature(flow=tf.constant(flow), rgb=tf.constant(rgb))
        return {name: value.numpy() for name, value in outputs.items()}


class TFLiteRunner(ModelRunner):
    """A `.tflite` file through LiteRT (`ai_edge_litert`): its signature runner on raw pixels.

    The signature runner resizes the batch axis to each batch it is given.

    Args:
        path: `model_fp32.tflite`, `model_fp16.tflite` or `model_int8.tflite`.
        num_threads: interpreter threads (None = all CPU cores).
        flag: how to name it in errors.

    Raises:
        UserError: not a TFLite file, no signature, or inputs/outputs that are not a keras-mtl
            export's.

    Example:
        >>> runner = TFLiteRunner("exported/model_int8.tflite", num_threads=2)
    """

    kind = "tflite"

    def __init__(
        self, path: str | os.PathLike, num_threads: int | None = None, flag: str = "--model"
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        where = f"{flag} {self.path}"
        if not self.path.is_file():
            raise UserError(f"{where}: no such file")
        try:
            interpreter = Interpreter(
                model_path=os.fspath(self.path), num_threads=num_threads or os.cpu_count() or 1
            )
            signatures = interpreter.get_signature_list()
        except Exception as error:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError
            raise UserError(f"{where}: not a readable TFLite file ({_first_line(error)})") from None
        if SIGNATURE in signatures:
            key = SIGNATURE
        elif len(signatures) == 1:
            key = next(iter(signatures))
        else:
            raise UserError(
                f"{where}: no {SIGNATURE!r} signature (it has {sorted(signatures) or 'none'}); "
                "convert it from the exported SavedModel (export.py)"
            )
        self._runner = interpreter.get_signature_runner(key)
        self._interpreter = interpreter
        input_details = self._runner.get_input_details()
        output_details = self._runner.get_output_details()
        for name, detail in input_details.items():
            if name in INPUT_NAMES and detail["dtype"] != np.float32:
                raise UserError(
                    f"{where}: input {name} is {np.dtype(detail['dtype']).name}, not float32 raw "
                    "pixels (a keras-mtl export keeps float inputs, int8 included)"
                )
        self.input_size = check_model_signature(
            {name: detail["shape_signature"] for name, detail in input_details.items()},
            list(output_details),
            where,
        )
        self.tasks = tuple(t for t in TASK_NAMES if t in output_details)
        semantic = output_details.get("semantic")
        if semantic is not None and len(semantic["shape"]) == 4:
            self.semantic_classes = int(semantic["shape"][-1])
        else:
            self.semantic_classes = _report_semantic_classes(self.path.parent)

    def _run(self, flow: np.ndarray, rgb: np.ndarray) -> Mapping[str, Any]:
        return self._runner(flow=flow, rgb=rgb)


def load_runner(
    path: str | os.PathLike, *, num_threads: int | None = None, flag: str = "--model"
) -> ModelRunner:
    """The runner of a model by its form: `.keras` file, SavedModel folder or `.tflite` file.

    Args:
        path: the model.
        num_threads: LiteRT interpreter threads (TFLite only; None = all cores).
        flag: how to name the path in errors (`--checkpoint` or `--model`).

    Raises:
        UserError: the path does not exist or is none of the three forms, or the model does
            not take flow and rgb inputs of 3 channels.

    Example:
        >>> runner = load_runner("exported/saved_model")
        >>> runner.kind, runner.input_size
        ('saved_model', (128, 256))
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {path}: no such file or folder")
    if path.is_dir():
        return SavedModelRunner(path, flag)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return KerasRunner(path, flag)
    if suffix == ".tflite":
        return TFLiteRunner(path, num_threads, flag)
    raise UserError(
        f"{flag} {path}: not a model this script reads; pass a .keras checkpoint, an exported "
        "SavedModel folder or a .tflite file"
    )


# ---------------------------------------------------------------------------------------------
# Outputs


def check_output_paths(
    out: str | os.PathLike | None,
    out_dir: str | os.PathLike | None,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> None:
    """Refuses outputs that would replace something without `overwrite`, before any work.

    Args:
        out: the video to write (`--out`, a `.mp4` file), or None.
        out_dir: the folder of PNGs (`--out_dir`), or None.
        overwrite: allow replacing an existing video and writing into a non-empty folder.
        inputs: the footage's paths, which are never overwritten.

    Raises:
        UserError: neither output given, `--out` not a `.mp4`, an existing output without
            `overwrite`, an output that is the footage, or a folder that cannot be written.

    Example:
        >>> check_output_paths("out.mp4", None)
    """
    if out is None and out_dir is None:
        raise UserError("give an output: --out FILE.mp4 (a video) and/or --out_dir DIR (PNGs)")
    sources = {Path(p).resolve() for p in inputs}
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != VIDEO_SUFFIX:
            raise UserError(f"--out {out}: must name a {VIDEO_SUFFIX} file (MPEG-4 video)")
        if out.resolve() in sources:
            raise UserError(f"--out {out}: is the input footage; name another file")
        if out.is_dir():
            raise UserError(f"--out {out}: is a folder; name a {VIDEO_SUFFIX} file")
        if out.exists() and not overwrite:
            raise UserError(f"--out {out}: exists; pass --overwrite to replace it")
        _check_writable(out.parent, "--out")
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.resolve() in sources:
            raise UserError(f"--out_dir {out_dir}: is the input folder; name another folder")
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out_dir {out_dir}: exists and is not a folder")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
            raise UserError(
                f"--out_dir {out_dir}: exists and is not empty; pass --overwrite to write into "
                "it (files of the same names are replaced), or name a new folder"
            )
        _check_writable(out_dir, "--out_dir")


def _check_writable(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"{flag}: cannot write to {folder} ({error.strerror or error})") from None


class AtomicVideoWriter:
    """An MPEG-4 (mp4v) video written to a temporary file beside `path`, renamed on success.

    Used as a context manager: leaving it by an exception deletes the temporary file, so an
    interrupted run never leaves a partial video under the final name. Frames are RGB uint8;
    an odd height or width is padded to even (MPEG-4 needs even sizes) with white, the
    legend's background. Every frame must have the first one's size.

    Args:
        path: the `.mp4` to write.
        fps: frames per second.

    Example:
        >>> with AtomicVideoWriter("out.mp4", 17.0) as video:
        ...     video.write(picture)
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width) as written, padded
        self._writer: cv2.VideoWriter | None = None
        self._temporary: Path | None = None

    def __enter__(self) -> AtomicVideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=VIDEO_SUFFIX
        )
        os.close(handle)
        self._temporary = Path(temporary)
        return self

    def write(self, picture: np.ndarray) -> None:
        """Appends one RGB uint8 [H, W, 3] picture."""
        height, width = picture.shape[:2]
        padded = (height + height % 2, width + width % 2)
        if self._writer is None:
            self.size = padded
            self._writer = cv2.VideoWriter(
                os.fspath(self._temporary),
                cv2.VideoWriter_fourcc(*"mp4v"),
                self.fps,
                (padded[1], padded[0]),
            )
            if not self._writer.isOpened():
                raise UserError(
                    f"--out {self.path}: this OpenCV cannot write MP4 (mp4v); install "
                    "opencv-python-headless from requirements.txt (it ships FFmpeg)"
                )
        if padded != self.size:
            # cv2.VideoWriter silently drops frames of another size.
            raise ValueError(f"picture size {padded} differs from the video's {self.size}")
        if padded != (height, width):
            canvas = np.full(padded + (3,), 255, np.uint8)
            canvas[:height, :width] = picture
            picture = canvas
        self._writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if self._writer is not None:
            self._writer.release()
        try:
            if exc_type is None and self.frames > 0:
                os.replace(self._temporary, self.path)
        finally:
            if self._temporary is not None and self._temporary.exists():
                self._temporary.unlink()


# ---------------------------------------------------------------------------------------------
# The whole run


@dataclass
class PredictionSummary:
    """What a run did.

    Attributes:
        frames_read: frames of the footage.
        frames_written: frames predicted and drawn (one fewer than read with `first_frame`
            "skip").
        seconds: wall time of the loop (reading, flow, network, drawing, writing).
        timings: seconds per stage: `read`, `flow` (flow and resizing), `network`, `write`
            (drawing the overlays and writing them).
        video: the video written, or None.
        png_dir: the PNG folder written, or None.
        png_files: the PNGs written, in order.
        picture_size: (height, width) of each overlay picture (PNG size; the video pads it to
            even).
        batch_size: network batch size.
    """

    frames_read: int
    frames_written: int
    seconds: float
    timings: dict[str, float]
    video: Path | None
    png_dir: Path | None
    png_files: list[Path] = field(default_factory=list)
    picture_size: tuple[int, int] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    @property
    def frames_per_second(self) -> float:
        """Frames written per second of wall time, everything included."""
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0


def _check_settings(
    depth_range: Sequence[float], batch_size: int, first_frame: str, fps: float | None
) -> tuple[float, float]:
    """Raises UserError, naming the flag, for an out-of-range setting; returns the depth range."""
    try:
        depth_range_to_inverse(depth_range)
    except (TypeError, ValueError):
        raise UserError(
            f"--depth_range {' '.join(map(str, depth_range))}: give NEAR FAR in metres with "
            "0 < NEAR < FAR"
        ) from None
    if batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    if first_frame not in FIRST_FRAME_CHOICES:
        raise UserError(
            f"--first_frame must be one of {', '.join(FIRST_FRAME_CHOICES)}, got {first_frame!r}"
        )
    if fps is not None and not (math.isfinite(fps) and 0 < fps <= 1000):
        raise UserError(f"--fps must be in (0, 1000], got {fps}")
    return float(depth_range[0]), float(depth_range[1])


def predict_footage(
    source: FrameSource,
    runner: ModelRunner,
    flow_params: FlowParams,
    *,
    out: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    depth_range: Sequence[float] = DEFAULT_DEPTH_RANGE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    first_frame: str = "skip",
    fps: float | None = None,
    semantic_classes: int = 5,
    progress: bool = True,
) -> PredictionSummary:
    """Predicts every frame of `source` and writes the overlay video and/or PNGs.

    Frame k's input is its flow since frame k - 1 (`frame_inputs`); frames go through the
    network `batch_size` at a time (the last batch is padded by repeating its last frame, so
    every call has one shape and no retracing or reallocation happens). Each prediction is drawn
    on the original frame by `prediction_overlay` with the fixed `depth_range`, so colours mean
    the same depth in every frame. Output paths are not checked here (`check_output_paths`).

    Args:
        source: the footage (`open_frames`).
        runner: the model (`load_runner`).
        flow_params: flow parameters (`choose_flow(...).params`).
        out: the `.mp4` to write (atomically: a temporary file renamed at the end), or None.
        out_dir: folder for one PNG per frame (`<name>.png`, each written atomically), or None.
        depth_range: (near, far) metres of the depth colour scale.
        batch_size: frames per network call.
        first_frame: "skip" (no flow for the first frame: predictions start at the second) or
            "zero_flow" (predict it from zero flow with zero confidence).
        fps: the video's frame rate; None = the source video's, or `DEFAULT_FPS` for images.
        semantic_classes: palette and class names of the overlay (5 or 19).
        progress: show a tqdm progress bar.

    Returns:
        A `PredictionSummary`.

    Raises:
        UserError: bad `depth_range`, `batch_size`, `first_frame` or `fps`, unreadable
            frames, or footage too short to predict anything.

    Example:
        >>> runner = load_runner("exported/model_fp32.tflite")
        >>> summary = predict_footage(open_frames(video="in.mp4"), runner, DISParams(),
        ...                           out="out.mp4")
    """
    depth_range = _check_settings(depth_range, batch_size, first_frame, fps)
    fps = float(fps if fps is not None else source.fps or DEFAULT_FPS)
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    skip_first = first_frame == "skip"
    expected = None if source.count is None else max(source.count - int(skip_first), 0)
    if expected is not None:
        batch_size = max(1, min(batch_size, expected))
    timings = dict.fromkeys(("read", "flow", "network", "write"), 0.0)
    summary = PredictionSummary(0, 0, 0.0, timings, None, out_dir, batch_size=batch_size)
    pending: list[tuple[Frame, np.ndarray, np.ndarray]] = []

    def flush(video: AtomicVideoWriter | None) -> None:
        if not pending:
            return
        start = time.perf_counter()
        count = len(pending)
        padding = [pending[-1]] * (batch_size - count)  # one shape for every call
        flows = np.stack([item[1] for item in pending + padding])
        rgbs = np.stack([item[2] for item in pending + padding])
        outputs = runner.predict(flows, rgbs)
        timings["network"] += time.perf_counter() - start
        start = time.perf_counter()
        for position, (frame, _, _) in enumerate(pending):
            prediction = {task: value[position] for task, value in outputs.items()}
            picture = prediction_overlay(
                frame.rgb, prediction, semantic_classes, depth_range=depth_range
            )
            summary.picture_size = (int(picture.shape[0]), int(picture.shape[1]))
            if video is not None:
                video.write(picture)
            if out_dir is not None:
                png = out_dir / f"{frame.name}.png"
                write_png_atomic(png, picture, rgb=True)
                summary.png_files.append(png)
            summary.frames_written += 1
            bar.update()
        timings["write"] += time.perf_counter() - start
        pending.clear()

    loop_start = time.perf_counter()
    with (
        tqdm(total=expected, desc="predict", unit="frame", disable=not progress) as bar,
        AtomicVideoWriter(out, fps) if out is not None else contextlib.nullcontext() as video,
    ):
        previous: np.ndarray | None = None
        frames = iter(source)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            timings["read"] += time.perf_counter() - start
            if frame is None:
                break
            summary.frames_read += 1
            if previous is None and skip_first:
                previous = frame.rgb
                continue
            start = time.perf_counter()
            flow, rgb = frame_inputs(frame.rgb, previous, flow_params, runner.input_size)
            timings["flow"] += time.perf_counter() - start
            pending.append((frame, flow, rgb))
            previous = frame.rgb
            if len(pending) == batch_size:
                flush(video)
        flush(video)
        if summary.frames_written == 0:
            raise UserError(
                f"{source.flag} {source.path}: {summary.frames_read} frame(s); predictions need "
                "two consecutive frames (or --first_frame zero_flow to predict a single one)"
            )
    summary.seconds = time.perf_counter() - loop_start
    if out is not None:
        summary.video = Path(out)
    return summary


def run_prediction(
    model_path: str | os.PathLike,
    *,
    video: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    flow_method: str | None = None,
    depth_range: Sequence[float] = DEFAULT_DEPTH_RANGE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    first_frame: str = "skip",
    fps: float | None = None,
    semantic_classes: int | None = None,
    num_threads: int | None = None,
    model_flag: str = "--model",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PredictionSummary:
    """Everything `predict.py` does: checks, model, flow choice, predictions, outputs.

    Cheap checks come first (footage readable, outputs free, flags in range), so bad input
    fails in a second, before the model loads and nothing is written.

    Args:
        model_path: `.keras` checkpoint, exported SavedModel folder or `.tflite` file.
        video: a video file (or `images`).
        images: a folder of consecutive frames (or `video`).
        out: the overlay video to write (`.mp4`).
        out_dir: the folder of per-frame PNGs.
        overwrite: replace an existing video, write into a non-empty folder.
        flow_method: force a flow method (see `choose_flow`); None = the recorded one.
        depth_range: (near, far) metres of the depth colours, the same for every frame.
        batch_size: frames per network call.
        first_frame: "skip" or "zero_flow" (see `predict_footage`).
        fps: output frame rate (default: the video's, 17 for images).
        semantic_classes: 5 or 19 for the palette; None = what the model says, else 5.
        num_threads: LiteRT threads for a `.tflite` model.
        model_flag: the flag that named `model_path` (`--checkpoint` or `--model`), for errors.
        progress: show a progress bar.
        log: where notes go (one line each); warnings go to stderr.

    Returns:
        The `PredictionSummary`.

    Raises:
        UserError: any bad input, naming the flag or file.

    Example:
        >>> summary = run_prediction("exported/saved_model", images="frames", out_dir="pred",
        ...                          model_flag="--model")
    """
    source = open_frames(video=video, images=images)
    check_output_paths(out, out_dir, overwrite=overwrite, inputs=[source.path])
    _check_settings(depth_range, batch_size, first_frame, fps)
    if source.count == 1 and first_frame == "skip":
        raise UserError(
            f"{source.flag} {source.path}: one frame; predictions need two consecutive frames "
            "(or --first_frame zero_flow to predict it from zero flow)"
        )
    if semantic_classes is not None and semantic_classes not in SEMANTIC_CLASS_CHOICES:
        raise UserError(f"--semantic_classes must be 5 or 19, got {semantic_classes}")
    choice = choose_flow(model_path, flow_method)
    runner = load_runner(model_path, num_threads=num_threads, flag=model_flag)

    height, width = source.size
    count = "?" if source.count is None else source.count
    log(f"footage: {source.path}, {count} frames of {width}x{height}")
    log(f"model: {runner.describe()}")
    classes = _semantic_classes(runner, semantic_classes, model_flag, log)
    in_height, in_width = runner.input_size
    if abs(math.log((width / height) / (in_width / in_height))) > 0.05:
        log(
            f"note: the frames ({width}x{height}) are stretched to the network's "
            f"{in_width}x{in_height} (another aspect ratio; nothing is cropped)"
        )
    log(f"flow: {choice.method}, {choice.source}")
    if choice.warning:
        print(f"warning: {choice.warning}", file=sys.stderr)
    if first_frame == "skip":
        log(
            "first frame: it has no previous frame, hence no flow; predictions start at the "
            "second frame (--first_frame zero_flow predicts it from zero flow and confidence)"
        )
    else:
        log(
            "first frame: no previous frame; predicted from zero flow with zero confidence "
            "(its motion output means little)"
        )
    return predict_footage(
        source,
        runner,
        choice.params,
        out=out,
        out_dir=out_dir,
        depth_range=depth_range,
        batch_size=batch_size,
        first_frame=first_frame,
        fps=fps,
        semantic_classes=classes,
        progress=progress,
    )


def _semantic_classes(
    runner: ModelRunner, wanted: int | None, flag: str, log: Callable[[str], None]
) -> int:
    known = runner.semantic_classes
    if wanted is not None and known is not None and wanted != known:
        raise UserError(
            f"--semantic_classes {wanted}: the model {flag} {runner.path} has {known} classes"
        )
    if wanted is not None:
        return wanted
    if known is not None:
        return known
    if "semantic" in runner.tasks:
        log(
            "note: the model outputs class maps and no export_report.json says how many "
            "semantic classes; drawing 5 (pass --semantic_classes 19 for Cityscapes' 19)"
        )
    return 5


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The `predict.py` argument parser."""
    parser = FlagParser(
        prog="predict.py",
        description="Predict depth, semantic classes and moving objects on your own footage "
        "(a video or a folder of frames) and write an overlay video and/or per-frame PNGs.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a .keras checkpoint (model_best.keras)")
    model.add_argument(
        "--model", help="an exported model: SavedModel folder or .tflite file (or a .keras)"
    )
    footage = parser.add_mutually_exclusive_group(required=True)
    footage.add_argument("--video", help="the input video (any format OpenCV reads)")
    footage.add_argument("--images", help="a folder of consecutive frames, sorted by name")
    parser.add_argument("--out", help="the overlay video to write (.mp4)")
    parser.add_argument("--out_dir", help="a folder for one overlay PNG per frame")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--flow_method",
        choices=FLOW_METHODS,
        default=None,
        help="flow method (default: the one the model was trained on, when recorded; "
        f"else {DEFAULT_METHOD})",
    )
    parser.add_argument(
        "--depth_range",
        nargs=2,
        type=float,
        default=list(DEFAULT_DEPTH_RANGE),
        metavar=("NEAR", "FAR"),
        help="depth colour scale in metres, the same for every frame (default: 2 80)",
    )
    parser.add_argument(
        "--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="frames per call"
    )
    parser.add_argument(
        "--first_frame",
        choices=FIRST_FRAME_CHOICES,
        default="skip",
        help="the first frame has no flow: skip it (default) or predict it from zero flow",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help=f"output frame rate (default: the video's, {DEFAULT_FPS:g} for images)",
    )
    parser.add_argument(
        "--semantic_classes",
        type=int,
        choices=SEMANTIC_CLASS_CHOICES,
        default=None,
        help="palette: 5 or 19 (default: what the model says)",
    )
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: all)")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python predict.py ...`; returns 0, raises UserError on bad input."""
    args = build_parser().parse_args(argv)
    model_flag = "--checkpoint" if args.checkpoint is not None else "--model"
    summary = run_prediction(
        args.checkpoint if args.checkpoint is not None else args.model,
        video=args.video,
        images=args.images,
        out=args.out,
        out_dir=args.out_dir,
        overwrite=args.overwrite,
        flow_method=args.flow_method,
        depth_range=args.depth_range,
        batch_size=args.batch_size,
        first_frame=args.first_frame,
        fps=args.fps,
        semantic_classes=args.semantic_classes,
        num_threads=args.threads,
        model_flag=model_flag,
    )
    timings = summary.timings
    print(
        f"predicted {summary.frames_written} of {summary.frames_read} frames in "
        f"{summary.seconds:.1f} s: {summary.frames_per_second:.2f} frames/s (flow "
        f"{timings['flow']:.1f} s, network {timings['network']:.1f} s, drawing and writing "
        f"{timings['write']:.1f} s, reading {timings['read']:.1f} s; batch {summary.batch_size})"
    )
    if summary.video is not None:
        print(f"wrote {summary.video}")
    if summary.png_dir is not None:
        print(f"wrote {len(summary.png_files)} PNGs to {summary.png_dir}")
    return 0
