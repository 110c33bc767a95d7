"""Evaluate a trained keras-mtl model on a split: metrics table, JSON, saved predictions.

The model runs at `--img_resize` on the validation pipeline; its predictions are resized to
`--output_size` (depth bilinear, class maps argmax then nearest) and compared with the targets
at that size, streaming over the split (nothing is held in memory beyond one batch).

Usage:

```
python evaluate.py --data_path data/synthetic --checkpoint runs/x/model_best.keras \
    --img_resize 384 768 --output_size 1024 2048 --json runs/x/eval.json \
    [--save_predictions runs/x/predictions [--overwrite]] \
    [--single_task_results depth.json semantic.json motion.json]
```

`--checkpoint` takes `model_best.keras`, a trainer's `checkpoint.keras`, a single-task model
(only its tasks are scored) or a SavedModel directory written by `export.py` (signature
`serving_default`: raw 0..255 `flow` and `rgb` in; `depth`, `semantic`, `motion` out).
`--single_task_results` takes one or more JSON files written by this script for the single-task
baselines (merged in order); with them the table adds Delta_m (positive = worse).

`--save_predictions DIR` writes per frame, at `--output_size`: `<stem>_depth.png` (uint16,
round(metres * 256)), `<stem>_semantic.png` (uint8 ids), `<stem>_motion.png` (uint8 0/255) and
`<stem>_vis.png` (inputs, then truth beside prediction per task).
`metrics_from_prediction_files` recomputes the metrics from these files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keras_mtl.data.layout import FLOW_DIR
from keras_mtl.errors import UserError, run_cli
from keras_mtl.io import write_bytes_atomic, write_json_atomic
from keras_mtl.tasks import INPUT_NAMES, SEMANTIC_CLASS_CHOICES, TASK_NAMES, TASKS

OUTPUT_STRIDE = 16
DEPTH_PNG_SCALE = 256.0  # <stem>_depth.png holds round(metres * 256) as uint16
SAVED_MODEL_SIGNATURE = "serving_default"
PREDICTION_SUFFIXES = {
    "depth": "_depth.png",
    "semantic": "_semantic.png",
    "motion": "_motion.png",
}
VIS_SUFFIX = "_vis.png"


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
    """

    predict: Any
    tasks: tuple[str, ...]
    input_names: tuple[str, ...]
    semantic_classes: int | None
    gmacs: float | None = None
    notes: list[str] = field(default_factory=list)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_keras_file(path: str):
    import keras

    from keras_mtl.models import unwrap_model

    try:
        from keras_mtl import training
    except ImportError:  # the trainer module registers its classes; absent, load the plain model
        training = None
    try:
        if training is not None and hasattr(training, "load_functional_model"):
            model = training.load_functional_model(path)
        else:
            model = keras.saving.load_model(path, compile=False)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any load failure is a bad file for the user
        raise UserError(
            f"--checkpoint {path}: could not be loaded as a keras-mtl model ({_first_line(error)}); "
            "pass model_best.keras or checkpoint.keras from train.py"
        ) from None
    return unwrap_model(model) if isinstance(model, keras.Model) else model


def _names(structure) -> set[str]:
    return set(structure) if isinstance(structure, dict) else set()


def _check_names(path: str, inputs: set[str], outputs: set[str], kind: str = "model") -> None:
    if not inputs or not outputs or inputs - set(INPUT_NAMES) or outputs - set(TASK_NAMES):
        raise UserError(
            f"--checkpoint {path}: not a keras-mtl model (a {kind} with named inputs "
            f"{sorted(inputs)} and outputs "
            f"{sorted(outputs)}; expected inputs among {list(INPUT_NAMES)} and outputs among "
            f"{list(TASK_NAMES)})"
        )


def _load_keras_model(path: str, img_resize: tuple[int, int]) -> LoadedModel:
    import keras
    import tensorflow as tf

    model = _load_keras_file(path)
    if not isinstance(model, keras.Model):
        raise UserError(
            f"--checkpoint {path}: holds a {type(model).__name__}, not a keras-mtl model"
        )
    inputs = _names(model.input) if hasattr(model, "input") else set()
    outputs = _names(model.output) if hasattr(model, "output") else set()
    _check_names(path, inputs, outputs, kind=type(model).__name__)
    notes = []
    input_size = tuple(next(iter(model.input.values())).shape[1:3])
    if input_size != tuple(img_resize):
        from keras_mtl.models import rebuild

        try:
            model = rebuild(model, img_resize)
        except ValueError as error:
            raise UserError(
                f"--checkpoint {path} takes {input_size[0]}x{input_size[1]} inputs and cannot be "
                f"rebuilt at --img_resize {img_resize[0]} {img_resize[1]} ({error}); pass "
                f"--img_resize {input_size[0]} {input_size[1]}"
            ) from None
        notes.append(f"model rebuilt from {input_size[0]}x{input_size[1]} to the --img_resize size")
    gmacs = None
    try:
        from keras_mtl.complexity import count_macs

        gmacs = count_macs(model) / 1e9
    except (ImportError, ValueError) as error:
        notes.append(f"GMACs not counted: {_first_line(error)}")

    @tf.function(reduce_retracing=True)
    def predict(batch):
        return model(batch, training=False)

    semantic_classes = None
    if "semantic" in outputs:
        semantic_classes = int(model.output["semantic"].shape[-1])
    return LoadedModel(
        predict=predict,
        tasks=tuple(t for t in TASK_NAMES if t in outputs),
        input_names=tuple(n for n in INPUT_NAMES if n in inputs),
        semantic_classes=semantic_classes,
        gmacs=gmacs,
        notes=notes,
    )


def _load_saved_model(path: str, img_resize: tuple[int, int]) -> LoadedModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures[SAVED_MODEL_SIGNATURE]
    except Exception as error:  # noqa: BLE001 - any load failure is a bad folder for the user
        raise UserError(
            f"--checkpoint {path}: not a SavedModel with a {SAVED_MODEL_SIGNATURE!r} signature "
            f"({_first_line(error)}); pass the saved_model folder written by export.py"
        ) from None
    input_specs = signature.structured_input_signature[1]
    outputs = _names(signature.structured_outputs)
    _check_names(path, set(input_specs), outputs, kind="SavedModel")
    for name, spec in input_specs.items():
        size = tuple(spec.shape[1:3])
        if None not in size and size != tuple(img_resize):
            raise UserError(
                f"--checkpoint {path}: the SavedModel takes {name} at {size[0]}x{size[1]}; pass "
                f"--img_resize {size[0]} {size[1]}"
            )

    def predict(batch):
        # The serving graph normalises itself: give it the stored pixel values back.
        raw = {name: denormalize_inputs(tf.cast(batch[name], tf.float32)) for name in input_specs}
        return dict(signature(**raw))

    predict.saved_model = loaded  # the signature's variables live as long as this object

    return LoadedModel(
        predict=tf.function(predict, reduce_retracing=True),
        tasks=tuple(t for t in TASK_NAMES if t in outputs),
        input_names=tuple(n for n in INPUT_NAMES if n in input_specs),
        semantic_classes=None,  # class-map outputs do not tell; --semantic_classes decides
        notes=["GMACs not counted for a SavedModel (count them on the .keras model)"],
    )


def load_model_for_evaluation(checkpoint: str, img_resize: Sequence[int]) -> LoadedModel:
    """Loads `checkpoint` (.keras file or SavedModel folder) for evaluation at `img_resize`.

    Raises:
        UserError: missing file, unreadable file, or not a keras-mtl model.
    """
    path = os.fspath(checkpoint)
    img_resize = (int(img_resize[0]), int(img_resize[1]))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise UserError(
                f"--checkpoint {path} is a folder without saved_model.pb: pass a .keras file or "
                "the saved_model folder written by export.py"
            )
        return _load_saved_model(path, img_resize)
    if not os.path.isfile(path):
        raise UserError(f"--checkpoint {path} does not exist: pass model_best.keras from a run")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise UserError(
            f"--checkpoint {path} is not a Keras .keras archive: pass model_best.keras, "
            "checkpoint.keras or a SavedModel folder"
        )
    return _load_keras_model(path, img_resize)


# --------------------------------------------------------------------------------------------
# Files


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def _read_png(path: Path) -> np.ndarray:
    import cv2

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
    from keras_mtl.visualize import prediction_grid

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
    from keras_mtl.metrics import task_metrics

    return {
        task: metrics for task, metrics in task_metrics(semantic_classes).items() if task in tasks
    }


def _class_names(task: str, semantic_classes: int) -> tuple[str, ...]:
    from keras_mtl.data.labels import MOTION_CLASS_NAMES, class_names

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


def denormalize_inputs(normalised):
    """Stored pixel values back from network inputs: the inverse of the pipeline's
    `normalize_inputs` (one home for its constants), for numpy arrays and tensors alike."""
    from keras_mtl.data.pipeline import NORMALIZATION_OFFSET, NORMALIZATION_SCALE

    return normalised * NORMALIZATION_SCALE + NORMALIZATION_OFFSET


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

    Returns:
        `{"depth_ard_percent", "depth_abs_rel", "depth_rmse", "semantic_miou", "motion_miou",
        "per_class_iou", "gmacs", "num_frames", "checkpoint", ...}`; metrics of tasks the
        model does not predict are left out.
    """
    from tqdm import tqdm

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

    from keras_mtl.data.pipeline import FLOW_OFFSET, list_stems, make_dataset

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
    stems = list_stems(data_path, split, flow_dir=flow_dir, semantic_classes=semantic_classes)
    if not stems:
        raise UserError(
            f"--data_path {data_path}: split {split!r} has no frames; pass another --split or "
            "generate/convert data into it"
        )

    import tensorflow as tf

    from keras_mtl.metrics import resize_predictions

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
    )
    metrics = _make_metrics(loaded.tasks, semantic_classes)

    # The batch dimension is None in the spec, so the last partial batch does not retrace.
    @tf.function(input_signature=list(dataset.element_spec))
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
    for inputs, targets in bar:
        predictions = step(inputs, targets)
        count = int(tf.shape(next(iter(targets.values())))[0])
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
) -> dict[str, Any]:
    """Recomputes the metrics from the PNGs written by `--save_predictions`.

    The ground truth comes from the validation pipeline at `output_size` (the very targets
    `evaluate` scores against); tasks without prediction files are skipped.

    Returns:
        The metric entries of `evaluate`'s results (`depth_ard_percent`, ..., `per_class_iou`)
        plus `num_frames`.
    """
    from keras_mtl.data.pipeline import list_stems, make_dataset

    pred_dir = Path(pred_dir)
    stems = list_stems(data_path, split, flow_dir=flow_dir, semantic_classes=semantic_classes)
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
    )
    num_frames = 0
    for (_, targets), stem in zip(targets_only, stems, strict=True):
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
# Report


def read_single_task_results(paths: Sequence[str]) -> dict[str, float]:
    """Merges the headline metrics of one or more JSON files (later files fill missing keys).

    Raises:
        UserError: a file is missing, not JSON, or the files lack a headline metric.
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


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-----" if value is None else f"{value:.{digits}f}"


def format_table(results: Mapping[str, Any], label: str | None = None) -> str:
    """The seed's results table for one model, then AbsRel, RMSE, per-class IoU, Delta_m."""
    from keras_mtl.metrics import DELTA_M_CONVENTION

    label = label or Path(str(results.get("checkpoint", "model"))).name
    headline = ", ".join(_fmt(results.get(TASKS[task].metric)) for task in TASK_NAMES)
    gmacs = _fmt(results.get("gmacs"), 3)
    lines = [
        "| Model | Depth(ARD%), Semantic(mIOU), Motion(mIOU) | Complexity (GigaMACS) |",
        "|---|---|---|",
        f"| {label} | {headline} | {gmacs} |",
        "",
    ]
    if "depth_abs_rel" in results:
        lines.append(
            f"Depth AbsRel {results['depth_abs_rel']:.4f}   Depth RMSE {results['depth_rmse']:.3f} m"
        )
    for task, ious in results.get("per_class_iou", {}).items():
        cells = ", ".join(f"{name} {value:.2f}" for name, value in ious.items())
        lines.append(f"{task.capitalize()} IoU per class (%): {cells}")
    if results.get("delta_m") is not None:
        lines.append(f"Delta_m {results['delta_m']:+.2f} %  ({DELTA_M_CONVENTION})")
    lines.append(
        f"{results.get('num_frames', '?')} frames of split {results.get('split', '?')!r}, "
        f"evaluated at {results.get('output_size', ['?', '?'])[0]}x"
        f"{results.get('output_size', ['?', '?'])[1]}"
    )
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python evaluate.py",
        description="Evaluate a keras-mtl model: ARD%, mIoU, GMACs, Delta_m; saved predictions.",
    )
    parser.add_argument("--data_path", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument(
        "--checkpoint", required=True, help=".keras file or SavedModel folder to evaluate"
    )
    parser.add_argument("--img_resize", nargs=2, type=int, required=True, metavar=("H", "W"))
    parser.add_argument("--output_size", nargs=2, type=int, required=True, metavar=("H", "W"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--flow_dir", default=FLOW_DIR, help="flow folder under --data_path")
    parser.add_argument("--semantic_classes", type=int, choices=SEMANTIC_CLASS_CHOICES)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--json", help="write the results here (atomically)")
    parser.add_argument("--save_predictions", metavar="DIR", help="write per-frame PNGs here")
    parser.add_argument(
        "--overwrite", action="store_true", help="allow a non-empty --save_predictions folder"
    )
    parser.add_argument(
        "--single_task_results",
        nargs="+",
        metavar="FILE.json",
        help="JSON results of the single-task models (one or several files); adds Delta_m",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.overwrite and not args.save_predictions:
        raise UserError("--overwrite only applies with --save_predictions DIR")
    single_task = (
        read_single_task_results(args.single_task_results) if args.single_task_results else None
    )
    results = evaluate(
        args.data_path,
        args.checkpoint,
        args.img_resize,
        args.output_size,
        split=args.split,
        semantic_classes=args.semantic_classes,
        batch_size=args.batch_size,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        flow_dir=args.flow_dir,
    )
    if single_task is not None:
        from keras_mtl.metrics import DELTA_M_CONVENTION, delta_m

        tasks = [t for t in TASK_NAMES if TASKS[t].metric in results]
        try:
            results["delta_m"] = delta_m(results, single_task, tasks=tasks)
        except ValueError as error:
            raise UserError(f"--single_task_results: {error}") from None
        results["delta_m_convention"] = DELTA_M_CONVENTION
        results["single_task_results"] = single_task
    print(format_table(results))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
