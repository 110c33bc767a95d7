"""Decoding frames of the Cityscapes multitask layout and the tf.data input pipeline.

Files are found by stem (`keras_mtl.data.layout`), their headers checked in Python (so a bad
file raises a `UserError` naming it before any training starts), the camera JSON parsed once per
frame, and everything else runs as native TensorFlow ops inside `tf.data`.

A PNG whose header is fine but whose data does not decode is found only while decoding. Each
frame is decoded in a small dataset of its own whose errors are caught (`ignore_errors`); a frame
that yields nothing is replaced by an empty one marked undecoded, and only then is Python asked
which file it was and why (`tf.py_function`). The dataset then stops with an error carrying one
line that names the file relative to the data root (`keras_mtl.errors.bad_input_report` reads it
back), or with `skip_bad_frames` logs that line once and leaves the frame out.

Training order is a pure function of (seed, sample index): sample k (counted over the whole
run) is position k mod N of pass k div N (N frames), each pass shuffled with a seed of its own
(seed, pass), and its augmentation is drawn from (seed, k). A stream started at batch b
(`first_batch`, resume) is exactly the tail of the stream started at batch 0.

Example:

```python
train = make_dataset("data/synthetic", "train", img_resize=(128, 256), batch_size=8,
                     training=True, seed=1)
inputs, targets = next(iter(train))
inputs["flow"].shape  # (8, 128, 256, 3), normalised (x - 128) / 64
targets["semantic"].dtype  # int32, 255 = ignore
```

Partial labels (`labels="partial"`): a frame needs only its inputs (rgb, flow); each task's
label files are optional. A missing label becomes an all-ignore target (depth 0, classes 255,
so losses and metrics skip it as they skip any invalid pixel) and the dataset yields a third
element, the per-sample label masks `{task: float32 [B]}` (1 = the frame has the task's
label), which Keras passes to `train_step`/`test_step` as the sample weights:

```python
train = make_dataset("data/partial", "train", img_resize=(128, 256), batch_size=8,
                     training=True, labels="partial", min_labelled_frames=10)
inputs, targets, label_masks = next(iter(train))
label_masks["motion"]  # [8] 1.0 / 0.0
```
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mtl.data import augment, layout
from keras_mtl.data.labels import LABEL_ID_TO_TRAIN_ID
from keras_mtl.data.layout import FLOW_DIR, FLOW_OFFSET, MAX_DEPTH, MIN_DEPTH, FrameFiles
from keras_mtl.errors import BAD_INPUT_CLOSE, BAD_INPUT_OPEN, UserError, bad_input_text
from keras_mtl.tasks import IGNORE_INDEX

# Stored pixel values x (RGB, and flow as u + 128, v + 128, confidence) -> (x - 128) / 64.
NORMALIZATION_OFFSET = 128.0
NORMALIZATION_SCALE = 64.0
_PNG_KEYS = ("rgb", "flow", "semantic", "motion", "disparity")
# Partial labels: the task whose label each optional PNG is.
_LABEL_TASK_OF_PNG = {"disparity": "depth", "semantic": "semantic", "motion": "motion"}
# In the line that names a frame that does not decode (what the tools may add to it follows).
UNDECODABLE = "regenerate or remove this frame"


def normalize_inputs(flow, rgb):
    """Normalises the network inputs: `(x - 128) / 64` per channel on stored pixel values.

    Works on numpy arrays, TensorFlow tensors and Keras symbolic tensors alike (plain
    arithmetic), so the exported serving graph can apply exactly the same function.

    Args:
        flow: flow as stored (u + 128, v + 128, confidence), any float dtype.
        rgb: RGB pixels 0..255.

    Returns:
        (normalised flow, normalised rgb).
    """
    flow = (flow - NORMALIZATION_OFFSET) / NORMALIZATION_SCALE
    rgb = (rgb - NORMALIZATION_OFFSET) / NORMALIZATION_SCALE
    return flow, rgb


def denormalize_inputs(flow, rgb):
    """Undoes `normalize_inputs`: network inputs back to stored pixel values, `x * 64 + 128`.

    For pictures and SavedModels that take raw pixels; numpy arrays and tensors alike.

    Args:
        flow: normalised flow.
        rgb: normalised RGB.

    Returns:
        (flow as stored: u + 128, v + 128, confidence; rgb 0..255, not clipped).

    Example:

    ```python
    flow, rgb = denormalize_inputs(inputs["flow"][0], inputs["rgb"][0])
    u, v = flow[..., 0] - FLOW_OFFSET, flow[..., 1] - FLOW_OFFSET  # pixels
    ```
    """
    flow = flow * NORMALIZATION_SCALE + NORMALIZATION_OFFSET
    rgb = rgb * NORMALIZATION_SCALE + NORMALIZATION_OFFSET
    return flow, rgb


def list_stems(
    data_path: str | Path,
    split: str,
    flow_dir: str = FLOW_DIR,
    semantic_classes: int = 5,
    labels: str = "strict",
) -> list[str]:
    """Sorted stems `<city>_<seq>_<frame>` of `split` that have every modality (`labels=
    "strict"`) or the inputs (`labels="partial"`, label files optional).

    Raises:
        UserError: missing root or folder, frames with a missing modality (named), empty split.
    """
    frames = layout.discover_frames(data_path, split, semantic_classes, flow_dir, labels)
    return [frame.stem for frame in frames]


# ---------------------------------------------------------------------------------------------
# Decoding (TensorFlow ops; used by both load_frame and the pipeline).


def disparity_to_depth(disparity: tf.Tensor, fx_baseline: tf.Tensor) -> tf.Tensor:
    """Cityscapes disparity PNG values p -> depth in metres, 0 where p = 0 (invalid).

    depth = fx * baseline / ((p - 1) / 256), clipped to [MIN_DEPTH, MAX_DEPTH]; p = 1 (zero
    disparity, infinitely far) gives MAX_DEPTH.
    """
    pixels = tf.cast(disparity, tf.float32)
    disparity_px = (pixels - 1.0) / 256.0
    depth = tf.math.divide_no_nan(tf.cast(fx_baseline, tf.float32), disparity_px)
    depth = tf.where(disparity_px > 0, depth, MAX_DEPTH)
    depth = tf.clip_by_value(depth, MIN_DEPTH, MAX_DEPTH)
    return tf.where(pixels > 0, depth, 0.0)


def decode_png(path: tf.Tensor, key: str) -> tf.Tensor:
    """Decodes one modality's PNG to its stored dtype: uint8 HxWx3 (rgb, flow) or HxWx1
    (labels), uint16 HxWx1 (disparity)."""
    contents = tf.io.read_file(path)
    if key == "disparity":
        # Without dtype=uint16 decode_png silently returns the high byte only.
        return tf.io.decode_png(contents, channels=1, dtype=tf.uint16)
    channels = 3 if key in ("rgb", "flow") else 1
    return tf.io.decode_png(contents, channels=channels, dtype=tf.uint8)


_PNG_DTYPES = {"disparity": tf.uint16}  # every other PNG is 8-bit
_PNG_CHANNELS = {"rgb": 3, "flow": 3}  # every other PNG is one channel


def _decode_frame(record: dict) -> dict:
    """A frame record with its PNGs decoded to their stored dtypes (`pixels`), `decoded` True.

    A record of `labels="partial"` carries `labelled` (`{task: bool}`): a label it lacks
    (empty path) decodes to zeros at the RGB frame's size, which `_raw_to_example` turns into
    an all-ignore target.
    """
    if "labelled" not in record:
        pixels = {key: decode_png(record["paths"][key], key) for key in _PNG_KEYS}
        return {**record, "pixels": pixels, "decoded": tf.constant(True)}
    pixels = {key: decode_png(record["paths"][key], key) for key in ("rgb", "flow")}
    size = tf.shape(pixels["rgb"])[:2]
    for key, task in _LABEL_TASK_OF_PNG.items():
        dtype = _PNG_DTYPES.get(key, tf.uint8)
        pixels[key] = tf.cond(
            record["labelled"][task],
            lambda key=key: decode_png(record["paths"][key], key),
            lambda dtype=dtype: tf.zeros(tf.concat([size, [1]], 0), dtype),
        )
    return {**record, "pixels": pixels, "decoded": tf.constant(True)}


def _undecoded_frame(record: dict) -> dict:
    """The stand-in of a frame that did not decode: empty images, `decoded` False."""
    pixels = {
        key: tf.zeros([0, 0, _PNG_CHANNELS.get(key, 1)], _PNG_DTYPES.get(key, tf.uint8))
        for key in _PNG_KEYS
    }
    return {**record, "pixels": pixels, "decoded": tf.constant(False)}


def _decode_or_mark(record: dict) -> tf.data.Dataset:
    """One element: the decoded frame, or its undecoded stand-in when any PNG fails.

    The decoding runs in a dataset of its own so that its error can be caught
    (`ignore_errors`) without losing which frame it was; the frame's paths travel with it.
    """
    frame = tf.data.Dataset.from_tensors(record)
    decoded = frame.map(_decode_frame).ignore_errors()
    return decoded.concatenate(frame.map(_undecoded_frame)).take(1)


def decode_frames(records: tf.data.Dataset) -> tf.data.Dataset:
    """Decodes a dataset of frame records in parallel, in order, never failing on a bad PNG.

    Args:
        records: elements `{"paths": {key: path}, ...}` (see `frame_records`).

    Returns:
        The same elements plus `pixels` (`{key: image}`) and `decoded` (False for a frame
        whose PNGs did not all decode: its images are then empty, see `bad_frame_line`).

    Example:

    ```python
    stems, columns = frame_records("data/synthetic", "val")
    frames = decode_frames(tf.data.Dataset.from_tensor_slices(columns))
    ```
    """
    return records.interleave(
        _decode_or_mark,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def bad_frame_line(data_path: str | Path, paths: dict[str, str]) -> tuple[str, str]:
    """Which file of a frame does not decode, and why: (path relative to `data_path`, reason).

    Decodes the frame's PNGs again, one by one (only ever called for a frame that failed).

    Args:
        data_path: the dataset root the user gave.
        paths: the frame's PNG paths by key (`rgb`, `flow`, `semantic`, `motion`, `disparity`).

    Example:

    ```python
    bad_frame_line("data", {"rgb": "data/leftImg8bit/train/a/a_1_2_leftImg8bit.png", ...})
    # ("leftImg8bit/train/a/a_1_2_leftImg8bit.png", "corrupt PNG data (Invalid PNG data, ...)")
    ```
    """
    for key in _PNG_KEYS:
        path = paths[key]
        if not path:  # a label the frame does not have (`labels="partial"`)
            continue
        try:
            decode_png(tf.constant(path), key)
        except tf.errors.NotFoundError as error:
            return _relative(path, data_path), f"cannot be read ({_first_line(error.message)})"
        except tf.errors.OpError as error:
            return _relative(path, data_path), f"corrupt PNG data ({_first_line(error.message)})"
    return _relative(paths["rgb"], data_path), "its frame could not be read (read error)"


def _relative(path: str, data_path: str | Path) -> str:
    try:
        return Path(os.path.relpath(path, data_path)).as_posix()
    except ValueError:  # another drive (Windows)
        return path


def _first_line(text: str) -> str:
    """TensorFlow's own words of an eager error, without its op and device decorations."""
    text = re.sub(r"\{\{function_node [^}]*\}\}", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*", "", text).strip()
    return text.splitlines()[0] if text else "no message"


def _corrupt_png(data_path: str | Path, path: str | Path, error: tf.errors.OpError) -> UserError:
    """The one line naming a PNG (relative to `data_path`) that does not decode."""
    relative = _relative(str(path), data_path)
    return UserError(
        f"--data_path {data_path}: {relative}: corrupt PNG data "
        f"({_first_line(error.message)}); {UNDECODABLE}"
    )


def _frame_paths(values: list) -> dict[str, str]:
    return {key: value.numpy().decode() for key, value in zip(_PNG_KEYS, values, strict=True)}


def _check_decoded(element: dict, data_path: str | Path) -> tf.Operation:
    """An in-graph guard: fails, naming the file (one line), when the frame did not decode."""

    def report(*paths) -> bytes:
        relative, reason = bad_frame_line(data_path, _frame_paths(list(paths)))
        return bad_input_text(
            f"--data_path {data_path}: {relative}: {reason}; {UNDECODABLE} "
            f"(`python -m data_tools.check --data_path {data_path} --deep` lists every bad file)"
        ).encode()

    def describe() -> tf.Tensor:
        line = tf.py_function(report, [element["paths"][key] for key in _PNG_KEYS], tf.string)
        line.set_shape([])
        return line

    message = tf.cond(element["decoded"], lambda: tf.constant(""), describe)
    return tf.debugging.Assert(element["decoded"], [message])


def _skipper(data_path: str | Path, split: str, frame_count: int):
    """A `filter` predicate that keeps decoded frames and logs each bad frame once.

    Raises (inside the pipeline) when every frame of the split has failed: nothing is left to
    read and the stream would otherwise search forever.
    """
    skipped: set[str] = set()

    def log(*paths) -> bool:
        frame_paths = _frame_paths(list(paths))
        if frame_paths["rgb"] not in skipped:
            skipped.add(frame_paths["rgb"])
            relative, reason = bad_frame_line(data_path, frame_paths)
            print(
                f"warning: --skip_bad_frames: skipping a frame of split {split!r}: {relative}: "
                f"{reason}",
                file=sys.stderr,
                flush=True,
            )
        if len(skipped) >= frame_count:
            raise ValueError(
                bad_input_text(
                    f"--data_path {data_path}, split {split!r}: none of its {frame_count} "
                    "frame(s) decodes; regenerate the data"
                )
            )
        return False

    def keep(element: dict) -> tf.Tensor:
        def skip() -> tf.Tensor:
            kept = tf.py_function(log, [element["paths"][key] for key in _PNG_KEYS], tf.bool)
            kept.set_shape([])
            return kept

        return tf.cond(element["decoded"], lambda: tf.constant(True), skip)

    return keep


# Real Cityscapes ships 19-class *_gtFine_labelTrainIds.png under the 5-class file name.
_FIVE_CLASS_PROBLEM = (
    ": 5-class labels must be 0..4 or 255; values above 4 look like the 19 Cityscapes trainIds: "
    "use --semantic_classes 19, or write 5-class files with `python -m data_tools.labels`"
)


def _semantic_ids(labels: tf.Tensor, semantic_classes: int) -> tf.Tensor:
    labels = tf.cast(labels, tf.int32)
    if semantic_classes == 19:
        # labelIds -> the 19 trainIds through the Cityscapes lookup table.
        return tf.gather(tf.constant(LABEL_ID_TO_TRAIN_ID, tf.int32), labels)
    return labels


def _motion_ids(mask: tf.Tensor) -> tf.Tensor:
    mask = tf.cast(mask, tf.int32)
    # 255 = moving, 0 = static; any other value is not a motion label and is ignored.
    return tf.where(tf.equal(mask, 255), 1, tf.where(tf.equal(mask, 0), 0, IGNORE_INDEX))


def _raw_to_example(
    raw: dict[str, tf.Tensor], semantic_classes: int, labelled: dict | None = None
) -> dict[str, tf.Tensor]:
    """Stored values -> the augmentation's example (float pixels, flow without offset, metres).

    Args:
        raw: decoded PNGs and `fx_baseline`.
        semantic_classes: 5 or 19.
        labelled: `{task: bool}` (`labels="partial"`): a task without its label gets an
            all-ignore target (depth 0 = invalid, class ids 255), so every loss and metric
            skips it; None: every label is there.
    """
    flow = tf.cast(raw["flow"], tf.float32) - tf.constant([FLOW_OFFSET, FLOW_OFFSET, 0.0])
    example = {
        "rgb": tf.cast(raw["rgb"], tf.float32),
        "flow": flow,
        "depth": disparity_to_depth(raw["disparity"], raw["fx_baseline"]),
        "semantic": _semantic_ids(raw["semantic"], semantic_classes),
        "motion": _motion_ids(raw["motion"]),
    }
    if labelled is not None:
        example["depth"] = tf.where(labelled["depth"], example["depth"], 0.0)
        for task in ("semantic", "motion"):
            example[task] = tf.where(labelled[task], example[task], IGNORE_INDEX)
    return example


def _check_five_class(labels: tf.Tensor, name: tf.Tensor, data_path: str | Path) -> tf.Operation:
    """An in-graph guard: 19-class trainIds read as 5-class labels would train silently wrong.

    Args:
        labels: the stored 5-class label image.
        name: the label file's path relative to `data_path` (string tensor).
        data_path: the dataset root, named in the message.
    """
    valid = tf.reduce_all(tf.logical_or(labels <= 4, tf.equal(labels, 255)))
    message = tf.strings.join(
        [f"{BAD_INPUT_OPEN}--data_path {data_path}: ", name, _FIVE_CLASS_PROBLEM + BAD_INPUT_CLOSE]
    )
    return tf.debugging.Assert(valid, [message])


def _to_model_io(
    example: dict[str, tf.Tensor],
) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    stored_flow = example["flow"] + tf.constant([FLOW_OFFSET, FLOW_OFFSET, 0.0])
    flow, rgb = normalize_inputs(stored_flow, example["rgb"])
    inputs = {"flow": flow, "rgb": rgb}
    targets = {
        "depth": example["depth"],
        "semantic": example["semantic"][..., 0],
        "motion": example["motion"][..., 0],
    }
    return inputs, targets


# ---------------------------------------------------------------------------------------------
# One frame, as numpy.


# (root, split, semantic_classes, flow_dir) -> the last scan, so that reading a split frame by
# frame does not walk the folders once per frame. A cached entry is used only while its files
# still exist; a stem it does not know triggers a fresh scan.
_SCAN_CACHE: dict[tuple, layout.SplitScan] = {}


def _find_frame(
    data_path: str | Path, split: str, stem: str, semantic_classes: int, flow_dir: str
) -> FrameFiles:
    key = (str(Path(data_path).resolve()), split, semantic_classes, flow_dir)
    scan = _SCAN_CACHE.get(key)
    if (
        scan is None
        or stem not in scan.frames
        or not all(path.is_file() for path in scan.frames[stem].values())
    ):
        scan = layout.scan_split(data_path, split, semantic_classes, flow_dir)
        if len(_SCAN_CACHE) > 16:
            _SCAN_CACHE.clear()
        _SCAN_CACHE[key] = scan
    if stem in scan.missing:
        missing = ", ".join(scan.missing[stem])
        raise UserError(f"--data_path {data_path}, split {split!r}: frame {stem} has no {missing}")
    if stem not in scan.frames:
        close = difflib.get_close_matches(stem, list(scan.frames), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"--data_path {data_path}, split {split!r}: no frame {stem!r}{hint}")
    return FrameFiles(stem=stem, **scan.frames[stem])


def load_frame(
    data_path: str | Path,
    split: str,
    stem: str,
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
) -> dict[str, np.ndarray]:
    """Decodes one frame at its native size.

    Args:
        data_path: dataset root.
        split: `train`, `val`, ...
        stem: `<city>_<seq>_<frame>`.
        semantic_classes: 5 (labelTrainIds) or 19 (labelIds mapped to trainIds).
        flow_dir: flow folder name.

    Returns:
        dict of numpy arrays: `rgb` uint8 HxWx3, `flow` float32 hxwx3 (u, v in pixels, confidence
        0..255; the flow image may have its own size), `depth` float32 HxW metres (0 = invalid),
        `semantic` uint8 HxW (255 = ignore), `motion` uint8 HxW (stored 0 -> 0 static,
        255 -> 1 moving, any other value -> 255 ignore).

    Raises:
        UserError: missing frame or modality, corrupt/truncated PNG, wrong bit depth, size
            mismatch, bad camera JSON; the message names the file.
    """
    frame = _find_frame(data_path, split, stem, semantic_classes, flow_dir)
    layout.check_frame_files(frame)
    fx_baseline = layout.read_camera(frame.camera)
    raw: dict[str, tf.Tensor] = {"fx_baseline": tf.constant(fx_baseline, tf.float32)}
    for key in _PNG_KEYS:
        path = getattr(frame, key)
        try:
            raw[key] = decode_png(tf.constant(str(path)), key)
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            raise _corrupt_png(data_path, path, error) from None
    if semantic_classes == 5 and np.any(
        (raw["semantic"].numpy() > 4) & (raw["semantic"].numpy() != 255)
    ):
        raise UserError(f"{frame.semantic}{_FIVE_CLASS_PROBLEM}")
    example = _raw_to_example(raw, semantic_classes)
    return {
        "rgb": raw["rgb"].numpy(),
        "flow": example["flow"].numpy(),
        "depth": example["depth"].numpy()[..., 0],
        "semantic": example["semantic"].numpy()[..., 0].astype(np.uint8),
        "motion": example["motion"].numpy()[..., 0].astype(np.uint8),
    }


def median_depth(
    data_path: str | Path,
    split: str,
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
    max_frames: int = 32,
    labels: str = "strict",
) -> float:
    """Median of the valid depth pixels (metres) over up to `max_frames` evenly spaced frames.

    The log depth head starts from this value (`MultiTaskNet(depth_init=...)`), so its first
    predictions are already at the scene's scale.

    Args:
        data_path: dataset root.
        split: split to read, normally `train`.
        semantic_classes: as for `list_stems` (frame discovery checks every modality).
        flow_dir: flow folder name.
        max_frames: frames read at most (the median is stable long before the whole split).
        labels: `strict`, or `partial` (only the frames that have a depth label are read).

    Raises:
        UserError: the split cannot be read, a disparity PNG is corrupt, or no pixel is valid.
    """
    frames = layout.discover_frames(data_path, split, semantic_classes, flow_dir, labels)
    frames = [frame for frame in frames if frame.has_label("depth")]
    step = max(1, len(frames) // max(1, max_frames))
    samples = []
    for frame in frames[::step][:max_frames]:
        fx_baseline = layout.read_camera(frame.camera)
        try:
            disparity = decode_png(tf.constant(str(frame.disparity)), "disparity")
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            raise _corrupt_png(data_path, frame.disparity, error) from None
        depth = disparity_to_depth(disparity, fx_baseline).numpy()
        samples.append(depth[depth > 0])
    valid = np.concatenate(samples) if samples else np.zeros((0,), np.float32)
    if valid.size == 0:
        raise UserError(
            f"{Path(data_path) / 'disparity' / split}: no valid depth pixel in {len(frames)} "
            "frames; give --depth_init in metres"
        )
    return float(np.median(valid))


# ---------------------------------------------------------------------------------------------
# The dataset.


def _check_size(value, flag: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be two integers H W, got {value!r}") from None
    if height <= 0 or width <= 0:
        raise UserError(f"{flag} must be positive, got {height} {width}")
    return height, width


def frame_records(
    data_path: str | Path,
    split: str,
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
    check_files: bool = True,
    labels: str = "strict",
) -> tuple[list[str], dict]:
    """Discovers a split and returns its stems and the per-frame file paths + fx * baseline.

    Args:
        check_files: check every PNG header (format, truncation, bit depth, sizes) first.
        labels: `strict` (every frame has every file) or `partial` (label files optional).

    Returns:
        (stems, columns), one entry per stem: `paths` (`{key: numpy array of path strings}`
        for `rgb`, `flow`, `semantic`, `motion`, `disparity`), `semantic_name` (the label
        file's path relative to `data_path`, for messages) and `fx_baseline` (float32).
        With `labels="partial"` also `labelled` (`{task: bool array}`); a missing label's
        path is "" and its `fx_baseline` 0.

    Example:

    ```python
    stems, columns = frame_records("data/synthetic", "val")
    columns["paths"]["rgb"][0]  # "data/synthetic/leftImg8bit/val/.../..._leftImg8bit.png"
    ```
    """
    frames = layout.discover_frames(data_path, split, semantic_classes, flow_dir, labels)
    if check_files:
        for frame in frames:
            layout.check_frame_files(frame)
    if labels == "strict":
        paths = {key: np.array([str(getattr(frame, key)) for frame in frames]) for key in _PNG_KEYS}
        columns = {
            "paths": paths,
            "semantic_name": np.array(
                [_relative(str(frame.semantic), data_path) for frame in frames]
            ),
            "fx_baseline": np.array(
                [layout.read_camera(frame.camera) for frame in frames], dtype=np.float32
            ),
        }
        return [frame.stem for frame in frames], columns

    def path_of(frame: FrameFiles, key: str) -> str:
        path = getattr(frame, key)
        return "" if path is None else str(path)

    columns = {
        "paths": {
            key: np.array([path_of(frame, key) for frame in frames], dtype=object).astype(str)
            for key in _PNG_KEYS
        },
        "semantic_name": np.array(
            [
                _relative(str(frame.semantic), data_path) if frame.semantic else ""
                for frame in frames
            ]
        ),
        "fx_baseline": np.array(
            [layout.read_camera(frame.camera) if frame.camera else 0.0 for frame in frames],
            dtype=np.float32,
        ),
        "labelled": {
            task: np.array([frame.has_label(task) for frame in frames], dtype=bool)
            for task in _LABEL_TASK_OF_PNG.values()
        },
    }
    return [frame.stem for frame in frames], columns


def check_label_counts(
    data_path: str | Path, split: str, labelled: dict, minimum: int
) -> dict[str, int]:
    """Labelled frames per task of a split; refuses a task with fewer than `minimum`.

    Args:
        data_path: dataset root, named in the message.
        split: split name, named in the message.
        labelled: `{task: bool array}` (`frame_records(..., labels="partial")["labelled"]`).
        minimum: `--min_labelled_frames`.

    Returns:
        `{task: labelled frame count}`.

    Raises:
        UserError: naming each task below the minimum, its count, and the flags to change.

    Example:

    ```python
    stems, columns = frame_records("data/partial", "train", labels="partial")
    check_label_counts("data/partial", "train", columns["labelled"], minimum=10)
    # {"depth": 120, "semantic": 120, "motion": 12}
    ```
    """
    if not isinstance(minimum, int) or minimum < 0:
        raise UserError(f"--min_labelled_frames {minimum!r}: must be an integer >= 0")
    counts = {task: int(np.sum(flags)) for task, flags in labelled.items()}
    frames = max((len(flags) for flags in labelled.values()), default=0)
    short = [f"{task} on {n} of {frames}" for task, n in counts.items() if n < minimum]
    if short:
        raise UserError(
            f"--data_path {data_path}, split {split!r}: too few labelled frames to train: "
            f"{'; '.join(short)} frame(s), fewer than --min_labelled_frames {minimum}; add "
            "labels, lower --min_labelled_frames, or train a labelled task alone "
            f"(--single_task); `python -m data_tools.check --data_path {data_path} --labels "
            "partial` shows the coverage"
        )
    return counts


def _pass_order(seed: int, pass_index: tf.Tensor, frame_count: int, shuffle: bool) -> tf.Tensor:
    """The frame indices of one pass over the split: a permutation drawn from (seed, pass)."""
    positions = tf.range(frame_count, dtype=tf.int64)
    if not shuffle:
        return positions
    pass_seed = tf.stack([tf.constant(seed, tf.int64), pass_index])
    return tf.random.experimental.stateless_shuffle(positions, seed=pass_seed)


def _frame_table(columns: dict, frame_count: int) -> tf.data.Dataset:
    """Every frame of the split decoded, stacked into one cached element (`cache=True`).

    Frames of different sizes are padded to the largest; `sizes` keeps each image's own.
    """

    def with_sizes(element: dict) -> dict:
        sizes = {key: tf.shape(image)[:2] for key, image in element["pixels"].items()}
        return {**element, "sizes": sizes}

    frames = decode_frames(tf.data.Dataset.from_tensor_slices(columns)).map(with_sizes)
    return frames.padded_batch(frame_count).cache()


def _frame_of_table(table: dict, index: tf.Tensor) -> dict:
    """Frame `index` of a `_frame_table` element, its images cropped to their own sizes."""
    frame = tf.nest.map_structure(lambda column: tf.gather(column, index), table)
    sizes = frame.pop("sizes")
    frame["pixels"] = {
        key: image[: sizes[key][0], : sizes[key][1]] for key, image in frame["pixels"].items()
    }
    return frame


def make_dataset(
    data_path: str | Path,
    split: str,
    *,
    img_resize: tuple[int, int],
    batch_size: int,
    training: bool,
    output_size: tuple[int, int] | None = None,
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
    seed: int = 0,
    shuffle: bool | None = None,
    repeat: bool | None = None,
    cache: bool = False,
    drop_remainder: bool | None = None,
    augment_data: bool | None = None,
    zoom: str = "isotropic",
    first_batch: int = 0,
    skip_bad_frames: bool = False,
    labels: str = "strict",
    min_labelled_frames: int = 1,
    trained_tasks: tuple[str, ...] | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
) -> tf.data.Dataset:
    """The input pipeline of one split.

    The frames form a stream of samples: sample k is position k mod N of pass k div N over the
    N frames of the split (each pass in its own shuffled order when shuffling), augmented with
    a seed drawn from (seed, k). Everything random is a function of the seed and the sample
    index, so the stream started at `first_batch` equals the full stream from that batch on
    (exact resume).

    Args:
        data_path: dataset root.
        split: split folder name.
        img_resize: (H, W) of the network inputs (and of the targets when training).
        batch_size: frames per batch.
        training: training mode: augmentation (unless `augment_data=False`), shuffling and
            dropping the last partial batch by default.
        output_size: (H, W) of the targets when not training (nearest); None = `img_resize`.
        semantic_classes: 5 (labelTrainIds) or 19 (labelIds mapped to trainIds).
        flow_dir: flow folder name.
        seed: seeds shuffling and augmentation (stateless draws: the same seed gives the same
            batches, whatever else the process did).
        shuffle: shuffle each pass (default: `training`).
        repeat: an endless stream of passes (default: False: one pass, pass 0, so the
            cardinality is known; iterating it again gives the same batches).
        cache: decode every frame once, on the first read, and keep them in memory (small
            datasets: the whole split is decoded before the first batch).
        drop_remainder: drop a last partial batch (default: `training`).
        augment_data: apply the training augmentation (default: `training`); without it
            everything is resized to `img_resize`.
        zoom: the augmentation's zoom, `isotropic` (depth targets divided by the zoom) or
            `original` (see `keras_mtl.data.augment`).
        first_batch: start the stream at this batch (a resumed run: epochs done x steps per
            epoch); the batches are those the stream from batch 0 gives from there on.
        skip_bad_frames: a frame with a PNG that does not decode is left out, with one warning
            line naming the file, instead of stopping the dataset with that line (then the
            cardinality is unknown, and the batches after a skipped frame shift by one frame).
        labels: `strict` (every frame has every label: today's behaviour, and elements are
            pairs) or `partial` (labels optional per frame: elements are triples, see the
            module docstring).
        min_labelled_frames: with `labels="partial"` and `training`, refuse a split where a
            task has fewer labelled frames than this (`check_label_counts`).
        trained_tasks: the tasks that minimum applies to (a single-task run needs only its
            own labels); None = every task.
        shard_index: this pipeline's shard (a worker of a multi-worker job), 0-based.
        num_shards: number of shards (workers). The stream is then cut into global batches of
            `batch_size * num_shards` samples, exactly the batches one process with that batch
            size reads, and this pipeline yields block `shard_index` (`batch_size` samples) of
            each: the shards are disjoint, each decodes only its own frames, and together they
            are the global batch. Endless streams only (`repeat=True`: every shard must yield
            the same number of batches); `first_batch` counts global batches. The dataset's
            own auto-shard policy is set to OFF, since it is a shard already.

    Returns:
        `tf.data.Dataset` of `({"flow", "rgb"}, {"depth", "semantic", "motion"})`, plus the
        label masks `{"depth", "semantic", "motion"}` (float32 [B]) with `labels="partial"`;
        see docs/architecture.md ("Data").

    Raises:
        UserError: bad arguments, layout problems or bad files (named). A PNG that is corrupt
            inside (its header is fine) is found while reading: the dataset then raises a
            TensorFlow error carrying one line that names the file, relative to `data_path`
            (`keras_mtl.errors.bad_input_report`).

    Example:

    ```python
    stream = make_dataset("data/synthetic", "train", img_resize=(128, 256), batch_size=8,
                          training=True, repeat=True, seed=1, first_batch=120)
    ```
    """
    img_resize = _check_size(img_resize, "--img_resize")
    if output_size is not None:
        output_size = _check_size(output_size, "--output_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(first_batch, int) or first_batch < 0:
        raise ValueError(f"first_batch must be a non-negative integer, got {first_batch!r}")
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index!r}")
    if num_shards > 1 and not repeat:
        # A finite split rarely cuts into whole global batches: shards would run different
        # numbers of steps and the job would wait forever in a collective.
        raise ValueError("num_shards > 1 needs repeat=True (an endless training stream)")
    shuffle = training if shuffle is None else shuffle
    repeat = False if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    augment_data = training if augment_data is None else augment_data
    try:
        augment.check_zoom(zoom)
    except ValueError as error:
        raise UserError(f"--augment_zoom: {error}") from None

    layout.check_label_mode(labels)
    stems, columns = frame_records(data_path, split, semantic_classes, flow_dir, labels=labels)
    if labels == "partial" and training:
        checked = {
            task: flags
            for task, flags in columns["labelled"].items()
            if trained_tasks is None or task in trained_tasks
        }
        check_label_counts(data_path, split, checked, min_labelled_frames)
    frame_count = len(stems)
    if drop_remainder and not repeat and frame_count < batch_size:
        raise UserError(
            f"--data_path {data_path}, split {split!r}: {frame_count} frame(s) make no full "
            f"batch of --batch_size {batch_size}; lower the batch size or add frames"
        )

    autotune = tf.data.AUTOTUNE

    def one_pass(pass_index: tf.Tensor) -> tf.data.Dataset:
        first = pass_index * frame_count
        order = _pass_order(seed, pass_index, frame_count, shuffle)
        samples = tf.data.Dataset.range(first, first + frame_count)
        return tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(order), samples)

    # (frame index, sample index) from `first_batch` on: only these light pairs are skipped.
    global_batch = batch_size * num_shards
    first_sample = first_batch * global_batch
    first_pass, offset = divmod(first_sample, frame_count)
    last_pass = np.iinfo(np.int64).max if repeat else 1
    indices = tf.data.Dataset.range(first_pass, max(first_pass, last_pass)).flat_map(one_pass)
    indices = indices.skip(offset)
    if num_shards > 1:
        # Block `shard_index` of every global batch, chosen before anything is decoded.
        indices = indices.filter(
            lambda index, sample: tf.equal((sample % global_batch) // batch_size, shard_index)
        )
    if cache:
        table = _frame_table(columns, frame_count)
        dataset = tf.data.Dataset.zip(indices, table.repeat()).map(
            lambda pair, frames: {**_frame_of_table(frames, pair[0]), "sample": pair[1]}
        )
    else:
        columns = tf.nest.map_structure(tf.constant, columns)
        dataset = indices.map(
            lambda index, sample: {
                **tf.nest.map_structure(lambda column: tf.gather(column, index), columns),
                "sample": sample,
            }
        )
        dataset = decode_frames(dataset)
    if skip_bad_frames:
        dataset = dataset.filter(_skipper(data_path, split, frame_count))

    def to_example(element: dict) -> dict[str, tf.Tensor]:
        raw = {**element["pixels"], "fx_baseline": element["fx_baseline"]}
        checks = [] if skip_bad_frames else [_check_decoded(element, data_path)]
        if semantic_classes == 5:
            checks.append(_check_five_class(raw["semantic"], element["semantic_name"], data_path))
        with tf.control_dependencies(checks):
            # The checks run first: nothing below reads the empty images of an undecoded frame.
            raw = {key: tf.identity(value) for key, value in raw.items()}
        return _raw_to_example(raw, semantic_classes, element.get("labelled"))

    def with_masks(element: dict, model_io: tuple) -> tuple:
        """Adds the per-sample label masks (`labels="partial"`) as the third element."""
        if labels == "strict":
            return model_io
        masks = {task: tf.cast(flag, tf.float32) for task, flag in element["labelled"].items()}
        return (*model_io, masks)

    if augment_data:

        def prepare(element):
            element_seed = tf.stack([tf.constant(seed, tf.int64), element["sample"]])
            example = augment.augment_for_training(
                to_example(element), img_resize, element_seed, zoom
            )
            return with_masks(element, _to_model_io(example))

    else:
        target_size = img_resize if training else output_size

        def prepare(element):
            example = augment.resize_for_validation(to_example(element), img_resize, target_size)
            return with_masks(element, _to_model_io(example))

    dataset = dataset.map(prepare, num_parallel_calls=autotune, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if repeat:
        dataset = dataset.apply(
            tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
        )
    elif not skip_bad_frames:
        samples = max(0, frame_count - first_sample)
        batches = samples // batch_size if drop_remainder else -(-samples // batch_size)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    if num_shards > 1:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(options)
    return dataset.prefetch(autotune)
