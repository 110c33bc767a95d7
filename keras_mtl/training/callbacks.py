"""Callbacks of a training run: NaN guard, weighting epoch end, run artifacts, pictures.

`run_training` installs them in this order: `NaNGuard` (stops at a non-finite loss, naming the
task), `WeightingEpochEnd` (DWA's epoch update), `RunArtifacts` (history.csv, model_best.keras,
checkpoint.keras, in that order), TensorBoard and `PredictionImages` (prediction grids of a few
validation frames). The last two skip nothing and save nothing that a resume needs.

Example:

```python
guard = NaNGuard(trainer.task_names)
callbacks = [guard, WeightingEpochEnd(guard), RunArtifacts("runs/a", "motion_miou",
             trainer.task_names, guard)]
trainer.fit(train_ds, validation_data=val_ds, epochs=10, callbacks=callbacks)
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.data.layout import FLOW_OFFSET
from keras_mtl.data.pipeline import denormalize_inputs
from keras_mtl.io import save_atomic, write_bytes_atomic
from keras_mtl.metrics import resize_predictions
from keras_mtl.tasks import metric_higher_is_better
from keras_mtl.training.history import HISTORY_NAME, append_history_row
from keras_mtl.training.trainer import VALIDATION_METRICS, MultiTaskTrainer

CHECKPOINT_NAME = "checkpoint.keras"
BEST_MODEL_NAME = "model_best.keras"
PICTURE_GUTTER = 8  # white pixels between the frames of a saved picture


class NaNGuard(keras.callbacks.Callback):
    """Stops training when a task loss becomes NaN or infinite, naming the task.

    Args:
        task_names: the tasks of the run (`loss_<task>` logs are watched, and `loss`).

    Attributes:
        failure: None, or one line saying which loss became what, and when.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self.failure: str | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        for key in [f"loss_{t}" for t in self.task_names] + ["loss"]:
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                name = key[len("loss_") :] if key.startswith("loss_") else "total"
                self.failure = (
                    f"the {name} loss became {float(value)} at epoch {self.epoch + 1}, "
                    f"step {batch + 1}"
                )
                self.model.stop_training = True
                return


class WeightingEpochEnd(keras.callbacks.Callback):
    """Calls `weighting.on_epoch_end` with the epoch-mean unweighted training losses (DWA).

    Args:
        guard: the run's NaNGuard; nothing is recorded for an epoch whose loss went NaN.
    """

    def __init__(self, guard: NaNGuard | None = None) -> None:
        super().__init__()
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.failure:
            return
        logs = logs or {}
        trainer = self.model
        epoch_losses = {t: float(logs[f"loss_{t}"]) for t in trainer.task_names}
        trainer.weighting.on_epoch_end(epoch, epoch_losses)


class RunArtifacts(keras.callbacks.Callback):
    """Per epoch: appends history.csv, saves model_best.keras and checkpoint.keras atomically.

    Order (so that a run killed anywhere resumes to exactly `epochs` history rows): history
    row, best model, then the checkpoint (which records the epoch). On resume, history rows
    beyond the checkpoint's epoch are dropped.

    Args:
        save_path: run folder.
        pivot_metric: validation metric (without `val_`) choosing model_best.keras.
        task_names: tasks of the run (columns of history.csv).
        guard: the NaNGuard; nothing is saved for an epoch whose loss went NaN.
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        pivot_metric: str,
        task_names: Sequence[str],
        guard: NaNGuard | None = None,
    ) -> None:
        super().__init__()
        self.save_path = Path(save_path)
        self.pivot_metric = pivot_metric
        self.task_names = list(task_names)
        self.guard = guard

    def columns(self, logs: Mapping) -> list[str]:
        """history.csv's columns: training logs, `lr`, validation logs, then any others."""
        train = ["loss", *[f"loss_{t}" for t in self.task_names]]
        train += [f"weight_{t}" for t in self.task_names] + ["lr"]
        validation = ["val_loss", *[f"val_loss_{t}" for t in self.task_names]]
        validation += [f"val_{m}" for m in VALIDATION_METRICS]
        known = set(train) | set(validation)
        others = sorted(k for k in logs if k not in known)
        return ["epoch", *train, *[c for c in validation if c in logs], *others]

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.failure:
            return
        trainer = self.model
        logs = dict(logs or {})
        optimizer = trainer.optimizer
        rate = optimizer.learning_rate
        logs["lr"] = float(rate(optimizer.iterations) if callable(rate) else rate)
        append_history_row(self.save_path / HISTORY_NAME, epoch + 1, logs, self.columns(logs))
        pivot = logs.get(f"val_{self.pivot_metric}")
        if pivot is not None and math.isfinite(float(pivot)):
            best = float(trainer.best_value.numpy())
            higher = metric_higher_is_better(self.pivot_metric)
            improved = math.isnan(best) or (pivot > best if higher else pivot < best)
            if improved:
                trainer.best_value.assign(float(pivot))
                save_atomic(trainer.model.save, self.save_path / BEST_MODEL_NAME)
        elif not (self.save_path / BEST_MODEL_NAME).exists():
            save_atomic(trainer.model.save, self.save_path / BEST_MODEL_NAME)
        trainer.epoch_counter.assign(epoch + 1)
        save_atomic(trainer.save, self.save_path / CHECKPOINT_NAME)


def prediction_grids(
    trainer: MultiTaskTrainer,
    inputs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    semantic_classes: int = 5,
) -> list[np.ndarray]:
    """One `keras_mtl.visualize.prediction_grid` per frame of a batch, at the targets' size.

    Args:
        trainer: the trainer whose network predicts.
        inputs: normalised `flow` and `rgb` [B, H, W, 3] (numpy).
        targets: the tasks' targets [B, h, w(, 1)] (numpy).
        semantic_classes: palette size.

    Returns:
        uint8 RGB images, one per frame.
    """
    from keras_mtl.visualize import prediction_grid  # OpenCV, needed only for pictures

    tasks = trainer.task_names
    outputs = trainer.model(trainer.model_inputs(inputs), training=False)
    grids = []
    for index in range(len(next(iter(inputs.values())))):
        truth = {t: targets[t][index] for t in tasks}
        size = truth[tasks[0]].shape[:2]
        resized = resize_predictions({t: outputs[t] for t in tasks}, size)
        prediction = {t: np.asarray(resized[t][index]) for t in tasks}
        flow, rgb = inputs.get("flow"), inputs.get("rgb")
        if flow is not None and rgb is not None:
            flow, rgb = denormalize_inputs(flow[index], rgb[index])
            flow = flow - np.array([FLOW_OFFSET, FLOW_OFFSET, 0.0], np.float32)  # u, v pixels
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        else:  # a dataset without both inputs: grey frame, no flow panel
            flow, rgb = None, np.full(size + (3,), 128, np.uint8)
        grids.append(prediction_grid(rgb, flow, truth, prediction, semantic_classes))
    return grids


def write_prediction_picture(path: str | os.PathLike, grids: Sequence[np.ndarray]) -> None:
    """Writes prediction grids side by side as one PNG, atomically."""
    height = max(grid.shape[0] for grid in grids)
    gutter = np.full((height, PICTURE_GUTTER, 3), 255, np.uint8)
    columns = []
    for grid in grids:
        padded = np.full((height, grid.shape[1], 3), 255, np.uint8)
        padded[: grid.shape[0]] = grid
        columns += [padded, gutter]
    picture = np.concatenate(columns[:-1], axis=1)
    write_bytes_atomic(path, tf.io.encode_png(picture).numpy())


class PredictionImages(keras.callbacks.Callback):
    """Writes prediction grids of a few validation frames to TensorBoard each epoch.

    Args:
        log_dir: TensorBoard folder.
        batch: one validation batch `(inputs, targets)` as numpy arrays.
        semantic_classes: palette size.
        max_images: frames drawn per epoch.
    """

    def __init__(self, log_dir, batch, semantic_classes: int = 5, max_images: int = 2) -> None:
        super().__init__()
        self.log_dir = str(log_dir)
        inputs, targets = batch
        self.inputs = {k: np.asarray(v)[:max_images] for k, v in inputs.items()}
        self.targets = {k: np.asarray(v)[:max_images] for k, v in targets.items()}
        self.semantic_classes = semantic_classes
        self.writer = None

    def grids(self, trainer: MultiTaskTrainer) -> list[np.ndarray]:
        """The frames' prediction grids with `trainer`'s current weights."""
        return prediction_grids(trainer, self.inputs, self.targets, self.semantic_classes)

    def on_epoch_end(self, epoch, logs=None):
        grids = self.grids(self.model)
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "images"))
        with self.writer.as_default():
            tf.summary.image("predictions", np.stack(grids), step=epoch, max_outputs=len(grids))
        self.writer.flush()
