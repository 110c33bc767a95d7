"""Decoding frames of the Cityscapes multitask layout and the tf.data input pipeline.

Files are found by stem (`keras_mtl.data.layout`), their headers checked in Python (so a bad
file raises a `UserError` naming it before any training starts), the camera JSON parsed once per
frame, and everything else runs as native TensorFlow ops inside `tf.data`.

Example:

```python
train = make_dataset("data/synthetic", "train", img_resize=(128, 256), batch_size=8,
                     training=True, seed=1)
inputs, targets = next(iter(train))
inputs["flow"].shape  # (8, 128, 256, 3), normalised (x - 128) / 64
targets["semantic"].dtype  # int32, 255 = ignore
```
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mtl.data import augment, layout
from keras_mtl.data.labels import LABEL_ID_TO_TRAIN_ID
from keras_mtl.data.layout import FLOW_DIR, FLOW_OFFSET, MAX_DEPTH, MIN_DEPTH, FrameFiles
from keras_mtl.errors import UserError
from keras_mtl.tasks import IGNORE_INDEX

# Stored pixel values x (RGB, and flow as u + 128, v + 128, confidence) -> (x - 128) / 64.
NORMALIZATION_OFFSET = 128.0
NORMALIZATION_SCALE = 64.0
_PNG_KEYS = ("rgb", "flow", "semantic", "motion", "disparity")


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
    data_path: str | Path, split: str, flow_dir: str = FLOW_DIR, semantic_classes: int = 5
) -> list[str]:
    """Sorted stems `<city>_<seq>_<frame>` of `split` that have every modality.

    Raises:
        UserError: missing root or folder, frames with a missing modality (named), empty split.
    """
    frames = layout.discover_frames(data_path, split, semantic_classes, flow_dir)
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


def _read_raw(record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Decodes the PNGs of one frame to their stored dtypes (compact, for caching)."""
    raw = {key: decode_png(record[key], key) for key in _PNG_KEYS}
    raw["fx_baseline"] = record["fx_baseline"]
    raw["semantic_path"] = record["semantic"]
    return raw


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


def _raw_to_example(raw: dict[str, tf.Tensor], semantic_classes: int) -> dict[str, tf.Tensor]:
    """Stored values -> the augmentation's example (float pixels, flow without offset, metres)."""
    flow = tf.cast(raw["flow"], tf.float32) - tf.constant([FLOW_OFFSET, FLOW_OFFSET, 0.0])
    return {
        "rgb": tf.cast(raw["rgb"], tf.float32),
        "flow": flow,
        "depth": disparity_to_depth(raw["disparity"], raw["fx_baseline"]),
        "semantic": _semantic_ids(raw["semantic"], semantic_classes),
        "motion": _motion_ids(raw["motion"]),
    }


def _check_five_class(raw: dict[str, tf.Tensor]) -> tf.Tensor:
    """An in-graph guard: 19-class trainIds read as 5-class labels would train silently wrong."""
    labels = raw["semantic"]
    valid = tf.reduce_all(tf.logical_or(labels <= 4, tf.equal(labels, 255)))
    return tf.debugging.Assert(
        valid,
        [tf.strings.join([raw["semantic_path"], _FIVE_CLASS_PROBLEM])],
    )


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
            raise UserError(f"{path}: corrupt PNG ({error.message}); regenerate it") from None
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

    Raises:
        UserError: the split cannot be read, a disparity PNG is corrupt, or no pixel is valid.
    """
    frames = layout.discover_frames(data_path, split, semantic_classes, flow_dir)
    step = max(1, len(frames) // max(1, max_frames))
    samples = []
    for frame in frames[::step][:max_frames]:
        fx_baseline = layout.read_camera(frame.camera)
        try:
            disparity = decode_png(tf.constant(str(frame.disparity)), "disparity")
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            raise UserError(
                f"{frame.disparity}: corrupt PNG ({error.message}); regenerate it"
            ) from None
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
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Discovers a split and returns its stems and the per-frame file paths + fx * baseline.

    Args:
        check_files: check every PNG header (format, truncation, bit depth, sizes) first.

    Returns:
        (stems, columns) with columns `rgb`, `flow`, `semantic`, `motion`, `disparity` (paths as
        str) and `fx_baseline` (float32), one entry per stem.
    """
    frames = layout.discover_frames(data_path, split, semantic_classes, flow_dir)
    if check_files:
        for frame in frames:
            layout.check_frame_files(frame)
    columns: dict[str, np.ndarray] = {
        key: np.array([str(getattr(frame, key)) for frame in frames]) for key in _PNG_KEYS
    }
    columns["fx_baseline"] = np.array(
        [layout.read_camera(frame.camera) for frame in frames], dtype=np.float32
    )
    return [frame.stem for frame in frames], columns


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
) -> tf.data.Dataset:
    """The input pipeline of one split.

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
        seed: seeds shuffling and augmentation; the same seed gives the same batches.
        shuffle: reshuffle every epoch (default: `training`).
        repeat: repeat forever (default: False, so the cardinality is known).
        cache: keep decoded frames in memory after the first epoch (small datasets).
        drop_remainder: drop a last partial batch (default: `training`).
        augment_data: apply the training augmentation (default: `training`); without it
            everything is resized to `img_resize`.
        zoom: the augmentation's zoom, `isotropic` (depth targets divided by the zoom) or
            `original` (see `keras_mtl.data.augment`).

    Returns:
        `tf.data.Dataset` of `({"flow", "rgb"}, {"depth", "semantic", "motion"})`; see
        docs/architecture.md ("Data").

    Raises:
        UserError: bad arguments, layout problems or bad files (named).
    """
    img_resize = _check_size(img_resize, "--img_resize")
    if output_size is not None:
        output_size = _check_size(output_size, "--output_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch_size must be a positive integer, got {batch_size!r}")
    shuffle = training if shuffle is None else shuffle
    repeat = False if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    augment_data = training if augment_data is None else augment_data
    try:
        augment.check_zoom(zoom)
    except ValueError as error:
        raise UserError(f"--augment_zoom: {error}") from None

    stems, columns = frame_records(data_path, split, semantic_classes, flow_dir)
    if drop_remainder and not repeat and len(stems) < batch_size:
        raise UserError(
            f"--data_path {data_path}, split {split!r}: {len(stems)} frame(s) make no full batch "
            f"of --batch_size {batch_size}; lower the batch size or add frames"
        )

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if cache:
        dataset = dataset.map(_read_raw, num_parallel_calls=autotune).cache()
    if shuffle:
        dataset = dataset.shuffle(len(stems), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def to_example(record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        raw = record if cache else _read_raw(record)
        if semantic_classes == 5:
            with tf.control_dependencies([_check_five_class(raw)]):
                return {k: tf.identity(v) for k, v in _raw_to_example(raw, 5).items()}
        return _raw_to_example(raw, semantic_classes)

    if augment_data:
        # One random int64 per element, fixed by the seed and different every epoch.
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, randoms)

        def prepare(record, random):
            element_seed = tf.stack([random, tf.constant(seed, tf.int64)])
            example = augment.augment_for_training(
                to_example(record), img_resize, element_seed, zoom
            )
            return _to_model_io(example)

    else:
        target_size = img_resize if training else output_size

        def prepare(record):
            example = augment.resize_for_validation(to_example(record), img_resize, target_size)
            return _to_model_io(example)

    dataset = dataset.map(prepare, num_parallel_calls=autotune, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(autotune)
