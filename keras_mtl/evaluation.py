"""Evaluation of a trained model on a split: metrics at `output_size`, saved predictions, tables.

The model runs at `img_resize` on the validation pipeline (a `.keras` network in its
inference form, `keras_mtl.models.fold_for_inference`: the same outputs, fewer ops); its predictions are
resized to `output_size` (depth bilinear, class maps argmax then nearest, `keras_mtl.metrics`)
and compared with the targets at that size, streaming over the split (one batch in memory).
A model is a `.keras` file (`model_best.keras`, a trainer's `checkpoint.keras`, a single-task
model: only its tasks are scored) or a SavedModel folder from export.py, all loaded through
`keras_mtl.checkpoints`.

`save_predictions` writes per frame, at `output_size`: `<stem>_depth.png` (uint16,
round(metres * 256)), `<stem>_semantic.png` (uint8 ids), `<stem>_motion.png` (uint8 0/255) and
`<stem>_vis.png` (inputs, then truth beside prediction per task);
`metrics_from_prediction_files` recomputes the metrics from these files.

With `labels="partial"` a frame needs only its inputs: each task's metrics are taken over the
frames that have its label (a missing label is an all-ignore target, which no metric counts),
the results say how many (`labelled_frames`, `{task: n}`), and a task no frame has gets None.

Example:

```python
results = evaluate("data/synthetic", "runs/x/model_best.keras", (128, 256), (256, 512))
print(format_table(results))
```
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from keras_mtl import checkpoints
from keras_mtl.complexity import count_macs
from keras_mtl.data.labels import MOTION_CLASS_NAMES, class_names
from keras_mtl.data.layout import FLOW_DIR
from keras_mtl.data.pipeline import (
    FLOW_OFFSET,
    NORMALIZATION_OFFSET,
    NORMALIZATION_SCALE,
    list_stems,
    make_dataset,
)
from keras_mtl.errors import UserError
from keras_mtl.io import write_bytes_atomic
from keras_mtl.metrics import DELTA_M_CONVENTION, delta_m, resize_predictions, task_metrics
from keras_mtl.models import OUTPUT_STRIDE, fold_for_inference
from keras_mtl.tasks import SEMANTIC_CLASS_CHOICES, TASK_NAMES, TASKS
from keras_mtl.visualize import prediction_grid

DEPTH_PNG_SCALE = 256.0  # <stem>_depth.png holds round(metres * 256) as uint16
PREDICTION_SUFFIXES = {
    "depth": "_depth.png",
    "semantic": "_semantic.png",
    "motion": "_motion.png",
}
VIS_SUFFIX = "_vis.png"
TABLE_HEADER = "| Model | Depth(ARD%), Semantic(mIOU), Motion(mIOU) | Complexity (GigaMACS) |"


# --------------------------------------------------------------------------------------------
# Loading the model


@dataclass
class LoadedModel:
    """A model ready for evaluation, whatever its file format.

    Attributes:
        predict: callable(dict of normalised inputs [B, H, W, 3]) -> dict of task outputs.
        tasks: the tasks the model predicts.
        input_names: the inputs it takes.
        semantic_classes: semantic classes it predicts (None when unknown).
        gmacs: conv GMACs of one forward pass at `img_resize`, None when not countable.
        notes: remarks printed under the table (a rebuilt model, GMACs not counted).
    """

    predict: Callable
    tasks: tuple[str, ...]
    input_names: tuple[str, ...]
    semantic_classes: int | None
    gmacs: float | None = None
    notes: list[str] = field(default_factory=list)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_keras_model(path: str, img_resize: tuple[int, int]) -> LoadedModel:
    where = f"--checkpoint {path}"
    model = checkpoints.load_model(path)
    saved_size = checkpoints.model_contract(model, where).img_size
    notes = []
    if saved_size != img_resize:
        model = checkpoints.at_input_size(model, img_resize, source=where)
        notes.append(f"model rebuilt from {saved_size[0]}x{saved_size[1]} to the --img_resize size")
    contract = checkpoints.model_contract(model, where)
    gmacs = None
    try:
        gmacs = count_macs(model) / 1e9
    except (ImportError, ValueError) as error:
        notes.append(f"GMACs not counted: {_first_line(error)}")

    # The inference form: BatchNorm folded, decoder tails before their upsampling; same
    # outputs, fewer ops.
    try:
        inference_network = fold_for_inference(model)
    except ValueError as error:  # a subclassed (not functional) network runs as it is
        inference_network = model
        notes.append(f"BatchNorm not folded: {_first_line(error)}")

    @tf.function(reduce_retracing=True)
    def predict(batch):
        return inference_network(batch, training=False)

    return LoadedModel(
        predict=predict,
        tasks=contract.tasks,
        input_names=contract.inputs,
        semantic_classes=contract.semantic_classes,
        gmacs=gmacs,
        notes=notes,
    )


def _load_saved_model(path: str, img_resize: tuple[int, int]) -> LoadedModel:
    serving = checkpoints.load_saved_model(path)
    contract = serving.contract
    if contract.img_size is not None and contract.img_size != img_resize:
        height, width = contract.img_size
        raise UserError(
            f"--checkpoint {path}: the SavedModel takes inputs at {height}x{width}; pass "
            f"--img_resize {height} {width}"
        )

    def predict(batch):
        # The serving graph normalises itself: give it the stored pixel values back.
        raw = {
            name: denormalize_inputs(tf.cast(batch[name], tf.float32)) for name in contract.inputs
        }
        return dict(serving.signature(**raw))

    predict.serving = serving  # the signature's variables live as long as this object

    return LoadedModel(
        predict=tf.function(predict, reduce_retracing=True),
        tasks=contract.tasks,
        input_names=contract.inputs,
        semantic_classes=None,  # class-map outputs do not tell; --semantic_classes decides
        notes=["GMACs not counted for a SavedModel (count them on the .keras model)"],
    )


def load_model_for_evaluation(
    checkpoint: str | os.PathLike, img_resize: Sequence[int]
) -> LoadedModel:
    """Loads `checkpoint` (.keras file or SavedModel folder) for evaluation at `img_resize`.

    A `.keras` network saved at another size is rebuilt at `img_resize` with the same weights.

    Raises:
        UserError: missing file, unreadable file, or not a keras-mtl model.

    Example:

    ```python
    loaded = load_model_for_evaluation("runs/x/model_best.keras", (128, 256))
    loaded.tasks  # ("depth", "semantic", "motion")
    ```
    """
    path = os.fspath(checkpoint)
    img_resize = (int(img_resize[0]), int(img_resize[1]))
    if os.path.isdir(path):
        return _load_saved_model(path, img_resize)
    return _load_keras_model(path, img_resize)


def denormalize_inputs(normalised):
    """Stored pixel values back from network inputs: the inverse of the pipeline's
    `normalize_inputs` (one home for its constants), for numpy arrays and tensors alike."""
    return normalised * NORMALIZATION_SCALE + NORMALIZATION_OFFSET


# --------------------------------------------------------------------------------------------
# Files


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(
            f"prediction file {path} is missing: run evaluate.py with --save_predictions first"
        )
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"prediction file {path} is not a readable PNG")
    return image


def depth_to_png(depth_m: np.ndarray) -> np.ndarray:
    """uint16 image round(depth * 256) (0 = invalid; depth is clipped to [0, 255] m before)."""
    scaled = np.round(np.clip(np.asarray(depth_m, np.float64), 0.0, 255.0) * DEPTH_PNG_SCALE)
    return scaled.astype(np.uint16)


def depth_from_png(image: np.ndarray) -> np.ndarray:
    """Metres from a `<stem>_depth.png` image."""
    return np.asarray(image, np.float32) / DEPTH_PNG_SCALE


def save_frame_predictions(
    pred_dir: Path,
    stem: str,
    prediction: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    rgb: np.ndarray,
    flow: np.ndarray | None,
    semantic_classes: int,
) -> None:
    """Writes one frame's prediction PNGs and its `<stem>_vis.png` grid (all at output size)."""
    if "depth" in prediction:
        _write_png(pred_dir / f"{stem}_depth.png", depth_to_png(prediction["depth"][..., 0]))
    if "semantic" in prediction:
        _write_png(pred_dir / f"{stem}_semantic.png", prediction["semantic"].astype(np.uint8))
    if "motion" in prediction:
        motion = (prediction["motion"] > 0).astype(np.uint8) * 255
        _write_png(pred_dir / f"{stem}_motion.png", motion)
    grid = prediction_grid(rgb, flow, truth, prediction, semantic_classes=semantic_classes)
    _write_png(pred_dir / f"{stem}{VIS_SUFFIX}", grid)


def _check_prediction_dir(pred_dir: str, overwrite: bool) -> Path:
    path = Path(pred_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--save_predictions {path} is a file: pass a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(
            f"--save_predictions {path} is not empty: pass --overwrite to replace its files, or "
            "choose an empty folder"
        )
    return path


# --------------------------------------------------------------------------------------------
# Evaluation


def _make_metrics(tasks: Sequence[str], semantic_classes: int) -> dict[str, list]:
    return {
        task: metrics for task, metrics in task_metrics(semantic_classes).items() if task in tasks
    }


def _class_names(task: str, semantic_classes: int) -> tuple[str, ...]:
    if task == "motion":
        return MOTION_CLASS_NAMES
    try:
        return class_names(semantic_classes)
    except ValueError:
        return tuple(f"class_{index}" for index in range(semantic_classes))


def _collect_results(metrics: Mapping[str, list], semantic_classes: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    per_class: dict[str, dict[str, float]] = {}
    for task, task_metric_list in metrics.items():
        for metric in task_metric_list:
            results[metric.name] = float(metric.result())
            if hasattr(metric, "per_class_iou"):
                names = _class_names(task, semantic_classes)
                values = np.asarray(metric.per_class_iou(), np.float64)
                per_class[task] = {name: float(v) for name, v in zip(names, values, strict=True)}
    results["per_class_iou"] = per_class
    return results


def _check_sizes(img_resize: Sequence[int], output_size: Sequence[int]) -> None:
    height, width = img_resize
    if height <= 0 or width <= 0 or height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        raise UserError(
            f"--img_resize {height} {width}: both must be positive multiples of {OUTPUT_STRIDE} "
            "(the network's output stride), e.g. 384 768"
        )
    if output_size[0] <= 0 or output_size[1] <= 0:
        raise UserError(f"--output_size {output_size[0]} {output_size[1]}: must be positive")


def evaluate(
    data_path: str,
    checkpoint: str,
    img_resize: Sequence[int],
    output_size: Sequence[int],
    split: str = "val",
    semantic_classes: int | None = None,
    batch_size: int = 4,
    save_predictions: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    flow_dir: str = FLOW_DIR,
    labels: str = "strict",
) -> dict[str, Any]:
    """Evaluates `checkpoint` on `split` and returns the results dictionary (the JSON's content).

    Args:
        data_path: dataset root (Cityscapes multitask layout).
        checkpoint: `.keras` file or SavedModel folder.
        img_resize: (H, W) network input size, multiples of 16.
        output_size: (h, w) evaluation size of targets and predictions.
        split: dataset split.
        semantic_classes: 5 or 19; default the model's (5 for a SavedModel).
        batch_size: frames per batch.
        save_predictions: folder for per-frame prediction PNGs and grids, or None.
        overwrite: allow writing into a non-empty `save_predictions` folder.
        progress: show a progress bar.
        flow_dir: name of the flow folder under `data_path`.
        labels: `strict` (every frame has every label) or `partial` (labels optional per
            frame; each task is scored over the frames that have its label).

    Returns:
        `{"depth_ard_percent", "depth_abs_rel", "depth_rmse", "semantic_miou", "motion_miou",
        "per_class_iou", "gmacs", "num_frames", "checkpoint", ...}`; metrics of tasks the
        model does not predict are left out. With `labels="partial"` also `labelled_frames`
        (`{task: frames with the task's label}`), and a task without any has metrics None.

    Raises:
        UserError: bad sizes, batch size or class count, a bad model file, a split without
            frames, or a non-empty `save_predictions` folder without `overwrite`.

    Example:

    ```python
    evaluate("data/synthetic", "runs/x/model_best.keras", (128, 256), (256, 512))["motion_miou"]
    ```
    """
    img_resize = (int(img_resize[0]), int(img_resize[1]))
    output_size = (int(output_size[0]), int(output_size[1]))
    _check_sizes(img_resize, output_size)
    if batch_size < 1:
        raise UserError(f"--batch_size {batch_size}: must be at least 1")
    if semantic_classes is not None and semantic_classes not in SEMANTIC_CLASS_CHOICES:
        raise UserError(
            f"--semantic_classes {semantic_classes}: must be one of {SEMANTIC_CLASS_CHOICES}"
        )
    pred_dir = _check_prediction_dir(save_predictions, overwrite) if save_predictions else None
    if not Path(data_path).is_dir():
        raise UserError(f"--data_path {data_path} is not a folder: pass the dataset root")
    loaded = load_model_for_evaluation(checkpoint, img_resize)
    if semantic_classes is None:
        semantic_classes = loaded.semantic_classes or SEMANTIC_CLASS_CHOICES[0]
    elif loaded.semantic_classes is not None and loaded.semantic_classes != semantic_classes:
        raise UserError(
            f"--semantic_classes {semantic_classes} does not match --checkpoint {checkpoint}, "
            f"which predicts {loaded.semantic_classes} classes: drop the flag or pass "
            f"{loaded.semantic_classes}"
        )
    stems = list_stems(
        data_path, split, flow_dir=flow_dir, semantic_classes=semantic_classes, labels=labels
    )
    if not stems:
        raise UserError(
            f"--data_path {data_path}: split {split!r} has no frames; pass another --split or "
            "generate/convert data into it"
        )

    dataset = make_dataset(
        data_path,
        split,
        img_resize=img_resize,
        batch_size=batch_size,
        training=False,
        output_size=output_size,
        semantic_classes=semantic_classes,
        flow_dir=flow_dir,
        shuffle=False,
        repeat=False,
        labels=labels,
    )
    metrics = _make_metrics(loaded.tasks, semantic_classes)
    labelled_frames = dict.fromkeys(loaded.tasks, 0)

    # The batch dimension is None in the spec, so the last partial batch does not retrace.
    # (A partial-label element also holds the label masks: the targets of a frame without a
    # task's label are all ignore, so the metrics skip it; the masks only count the frames.)
    @tf.function(input_signature=list(dataset.element_spec)[:2])
    def step(inputs, targets):
        outputs = loaded.predict({name: inputs[name] for name in loaded.input_names})
        predictions = resize_predictions(
            {task: outputs[task] for task in loaded.tasks}, output_size
        )
        for task, task_metric_list in metrics.items():
            for metric in task_metric_list:
                metric.update_state(targets[task], predictions[task])
        return predictions

    if pred_dir is not None:
        pred_dir.mkdir(parents=True, exist_ok=True)
    num_batches = math.ceil(len(stems) / batch_size)
    num_frames = 0
    bar = tqdm(
        dataset, total=num_batches, desc=f"evaluate {split}", unit="batch", disable=not progress
    )
    for batch in bar:
        inputs, targets = batch[0], batch[1]
        predictions = step(inputs, targets)
        count = int(tf.shape(next(iter(targets.values())))[0])
        for task in loaded.tasks:
            labelled_frames[task] += int(np.sum(batch[2][task])) if len(batch) > 2 else count
        if pred_dir is not None:
            predictions = {task: value.numpy() for task, value in predictions.items()}
            targets_np = {task: value.numpy() for task, value in targets.items()}
            for index in range(count):
                # make_dataset keeps list_stems' order when not training (no shuffle).
                stem = stems[num_frames + index]
                rgb = denormalize_inputs(inputs["rgb"][index].numpy())
                rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
                # Stored flow is u + 128, v + 128 (then confidence, ignored by the colour wheel).
                flow = denormalize_inputs(inputs["flow"][index].numpy()) - FLOW_OFFSET
                save_frame_predictions(
                    pred_dir,
                    stem,
                    {task: value[index] for task, value in predictions.items()},
                    {task: value[index] for task, value in targets_np.items()},
                    rgb,
                    flow,
                    semantic_classes,
                )
        num_frames += count
    if num_frames != len(stems):
        raise RuntimeError(
            f"the dataset gave {num_frames} frames but list_stems found {len(stems)}: the "
            "validation pipeline and the stem listing disagree"
        )

    results = _collect_results(metrics, semantic_classes)
    if labels == "partial":
        results["labelled_frames"] = labelled_frames
        for task in loaded.tasks:
            if labelled_frames[task] == 0:  # nothing to score: no number, not a 0
                for name in TASKS[task].metrics:
                    results[name] = None
                results["per_class_iou"].pop(task, None)
    results.update(
        {
            "gmacs": loaded.gmacs,
            "num_frames": num_frames,
            "checkpoint": os.fspath(checkpoint),
            "data_path": os.fspath(data_path),
            "split": split,
            "img_resize": list(img_resize),
            "output_size": list(output_size),
            "semantic_classes": semantic_classes,
            "tasks": list(loaded.tasks),
            "notes": loaded.notes,
        }
    )
    if pred_dir is not None:
        results["predictions"] = os.fspath(pred_dir)
    return results


def metrics_from_prediction_files(
    pred_dir: str | os.PathLike,
    data_path: str,
    split: str,
    output_size: Sequence[int],
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
    labels: str = "strict",
) -> dict[str, Any]:
    """Recomputes the metrics from the PNGs written by `--save_predictions`.

    The ground truth comes from the validation pipeline at `output_size` (the very targets
    `evaluate` scores against); tasks without prediction files are skipped.

    Returns:
        The metric entries of `evaluate`'s results (`depth_ard_percent`, ..., `per_class_iou`)
        plus `num_frames`.

    Raises:
        UserError: a split without frames, or no (or a missing) prediction file.

    Example:

    ```python
    metrics_from_prediction_files("preds", "data/synthetic", "val", (256, 512))["semantic_miou"]
    ```
    """
    pred_dir = Path(pred_dir)
    stems = list_stems(
        data_path, split, flow_dir=flow_dir, semantic_classes=semantic_classes, labels=labels
    )
    if not stems:
        raise UserError(f"--data_path {data_path}: split {split!r} has no frames")
    tasks = [
        task
        for task, suffix in PREDICTION_SUFFIXES.items()
        if (pred_dir / f"{stems[0]}{suffix}").is_file()
    ]
    if not tasks:
        raise UserError(
            f"{pred_dir} holds no prediction files for {stems[0]}: run evaluate.py with "
            "--save_predictions first"
        )
    metrics = _make_metrics(tasks, semantic_classes)
    # Only the targets are used; the smallest legal input size keeps the unused inputs cheap.
    targets_only = make_dataset(
        data_path,
        split,
        img_resize=(OUTPUT_STRIDE, OUTPUT_STRIDE),
        batch_size=1,
        training=False,
        output_size=tuple(output_size),
        semantic_classes=semantic_classes,
        flow_dir=flow_dir,
        shuffle=False,
        repeat=False,
        labels=labels,
    )
    num_frames = 0
    for batch, stem in zip(targets_only, stems, strict=True):
        targets = batch[1]  # (a frame without a task's label has all-ignore targets)
        for task in tasks:
            image = _read_png(pred_dir / f"{stem}{PREDICTION_SUFFIXES[task]}")
            if task == "depth":
                prediction = depth_from_png(image)[None, ..., None]
            elif task == "motion":
                prediction = (image > 0).astype(np.int32)[None]
            else:
                prediction = image.astype(np.int32)[None]
            for metric in metrics[task]:
                metric.update_state(targets[task], prediction)
        num_frames += 1
    results = _collect_results(metrics, semantic_classes)
    results["num_frames"] = num_frames
    return results


# --------------------------------------------------------------------------------------------
# Single-task results and Delta_m


def read_single_task_results(paths: Sequence[str]) -> dict[str, float]:
    """Merges the headline metrics of one or more JSON files (later files fill missing keys).

    Raises:
        UserError: a file is missing, not JSON, or the files lack a headline metric.

    Example:

    ```python
    read_single_task_results(["depth.json", "semantic.json", "motion.json"])
    # {"depth_ard_percent": ..., "semantic_miou": ..., "motion_miou": ...}
    ```
    """
    merged: dict[str, float] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"--single_task_results {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"--single_task_results {path} is not JSON ({error})") from None
        if not isinstance(data, dict):
            raise UserError(f"--single_task_results {path} must hold a JSON object")
        for task in TASK_NAMES:
            value = data.get(TASKS[task].metric)
            if isinstance(value, int | float) and TASKS[task].metric not in merged:
                merged[TASKS[task].metric] = float(value)
    missing = [TASKS[t].metric for t in TASK_NAMES if TASKS[t].metric not in merged]
    if missing:
        raise UserError(
            f"--single_task_results {' '.join(paths)} lack {', '.join(missing)}: pass the JSON "
            "files evaluate.py wrote for the single-task models of every task"
        )
    return merged


def add_delta_m(results: dict[str, Any], single_task: Mapping[str, float]) -> dict[str, Any]:
    """Adds `delta_m`, `delta_m_convention` and `single_task_results` to `results` (in place)
    over the tasks `results` scores, and returns it.

    Raises:
        UserError: naming `--single_task_results`, when a single-task metric is unusable.

    Example:

    ```python
    add_delta_m(results, read_single_task_results(["single.json"]))["delta_m"]  # +3.21
    ```
    """
    tasks = [t for t in TASK_NAMES if TASKS[t].metric in results]
    try:
        results["delta_m"] = delta_m(results, single_task, tasks=tasks)
    except ValueError as error:
        raise UserError(f"--single_task_results: {error}") from None
    results["delta_m_convention"] = DELTA_M_CONVENTION
    results["single_task_results"] = dict(single_task)
    return results


# --------------------------------------------------------------------------------------------
# Tables


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-----" if value is None else f"{value:.{digits}f}"


def _headline(metrics: Mapping[str, Any]) -> str:
    """The seed's cell: ARD%, semantic mIoU, motion mIoU (`-----` for a task not scored)."""
    return ", ".join(_fmt(metrics.get(TASKS[task].metric)) for task in TASK_NAMES)


def _per_class_lines(per_class: Mapping[str, Mapping[str, float]]) -> list[str]:
    return [
        f"{task.capitalize()} IoU per class (%): "
        + ", ".join(f"{name} {value:.2f}" for name, value in ious.items())
        for task, ious in per_class.items()
    ]


def format_table(results: Mapping[str, Any], label: str | None = None) -> str:
    """The seed's results table for one model, then AbsRel, RMSE, per-class IoU, Delta_m.

    Example:

    ```python
    print(format_table(evaluate(...)))  # | model_best.keras | 12.31, 82.32, 80.52 | 5.632 |
    ```
    """
    label = label or Path(str(results.get("checkpoint", "model"))).name
    gmacs = _fmt(results.get("gmacs"), 3)
    lines = [TABLE_HEADER, "|---|---|---|", f"| {label} | {_headline(results)} | {gmacs} |", ""]
    if results.get("depth_abs_rel") is not None:  # None: no frame with a depth label
        lines.append(
            f"Depth AbsRel {results['depth_abs_rel']:.4f}   Depth RMSE {results['depth_rmse']:.3f} m"
        )
    lines += _per_class_lines(results.get("per_class_iou", {}))
    if results.get("labelled_frames") is not None:
        counted = ", ".join(f"{task} {count}" for task, count in results["labelled_frames"].items())
        lines.append(
            f"Frames with labels (each task scored over its own): {counted} of "
            f"{results.get('num_frames', '?')}"
        )
    if results.get("delta_m") is not None:
        lines.append(f"Delta_m {results['delta_m']:+.2f} %  ({DELTA_M_CONVENTION})")
    output_size = results.get("output_size", ["?", "?"])
    lines.append(
        f"{results.get('num_frames', '?')} frames of split {results.get('split', '?')!r}, "
        f"evaluated at {output_size[0]}x{output_size[1]}"
    )
    lines += [f"note: {note}" for note in results.get("notes", [])]
    return "\n".join(lines)


def format_training_results(
    results: Mapping[str, Any], save_path: str | os.PathLike | None = None
) -> str:
    """The end of a training run: the seed's table for the best and the last epoch, per-class
    IoU and the files written. Keys missing from `results` are left out of the summary.

    Args:
        results: `keras_mtl.training.run_training`'s dictionary: `final` and `best`
            (validation metrics without the `val_` prefix; `best` with its `epoch`), `epochs`,
            and when present `per_class_iou` (`{"semantic": {class: iou}, "motion": {...}}`),
            `labelled_frames` (`--labels partial`: `{split: {"frames": N, task: n}}`) and
            `files` (the paths written).
        save_path: the run folder, named when `results` lists no files.

    Example:

    ```python
    print(format_training_results({"final": {...}, "best": {"epoch": 4, ...}, "epochs": 5}))
    # | model_best.keras | 35.10, 40.22, 55.31 | 4 of 5 |
    ```
    """
    epochs = results.get("epochs")
    best, final = results.get("best") or {}, results.get("final") or {}
    of_epochs = f" of {epochs}" if epochs else ""
    rows = []
    if best:
        rows.append(("model_best.keras", best, f"{best.get('epoch', '?')}{of_epochs}"))
    if final:
        rows.append(("last epoch", final, f"{epochs or '?'}{of_epochs}"))
    if not rows:
        lines = ["no epoch finished: no validation metrics to report"]
    else:
        lines = ["| Model | Depth(ARD%), Semantic(mIOU), Motion(mIOU) | Epoch |", "|---|---|---|"]
        lines += [f"| {label} | {_headline(metrics)} | {epoch} |" for label, metrics, epoch in rows]
    per_class = results.get("per_class_iou") or {}
    if per_class:
        lines.append("")
        lines += _per_class_lines(per_class)
    for split, counts in (results.get("labelled_frames") or {}).items():
        # --labels partial: each task was trained and validated over its labelled frames.
        tasks = ", ".join(f"{t} {counts[t]}" for t in TASK_NAMES if t in counts)
        lines.append(f"{split}: frames with labels: {tasks} of {counts.get('frames', '?')}")
    files = results.get("files") or []
    if files:
        lines += ["", "wrote:", *(f"  {os.fspath(path)}" for path in files)]
    elif save_path is not None:
        lines += ["", f"wrote into {os.fspath(save_path)}"]
    return "\n".join(lines)
