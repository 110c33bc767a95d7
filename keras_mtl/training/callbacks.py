"""Callbacks of a training run: divergence guard, weighting epoch end, run artifacts, pictures.

`run_training` installs them in this order: `NaNGuard` (stops at the first NaN or infinite
value of anything the run saves, naming it), `WeightingEpochEnd` (DWA's epoch update),
`RunArtifacts` (history.csv, model_best.keras, config.yaml, checkpoint.keras, in that order,
after the guard has checked every variable of the checkpoint), TensorBoard and
`PredictionImages` (prediction grids of a few validation frames). The last two skip nothing and
save nothing that a resume needs.

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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.config import RUN_CONFIG_NAME, Config
from keras_mtl.data.layout import FLOW_OFFSET
from keras_mtl.data.pipeline import denormalize_inputs
from keras_mtl.io import save_atomic, write_bytes_atomic, write_json_atomic
from keras_mtl.metrics import resize_predictions
from keras_mtl.tasks import metric_higher_is_better
from keras_mtl.training.history import HISTORY_NAME, append_history_row
from keras_mtl.training.trainer import VALIDATION_METRICS, MultiTaskTrainer

CHECKPOINT_NAME = "checkpoint.keras"
# Multi-worker runs: present from the first checkpoint until training ends, so a job restarted
# after a worker died knows that the checkpoint is a backup to continue from.
BACKUP_NAME = "backup.json"
BEST_MODEL_NAME = "model_best.keras"
PICTURE_GUTTER = 8  # white pixels between the frames of a saved picture


def _shown(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def describe_log(key: str) -> str:
    """What a log key is, in words: `loss_depth` -> `the depth loss`.

    Example:

    ```python
    describe_log("val_semantic_miou")  # "the validation metric semantic_miou"
    ```
    """
    validation = key.startswith("val_")
    name = key[len("val_") :] if validation else key
    if name == "loss":
        what = "the total loss"
    elif name.startswith("loss_"):
        what = f"the {name[len('loss_') :]} loss"
    elif name.startswith("weight_"):
        what = f"the {name[len('weight_') :]} task weight"
    elif validation:
        return f"the validation metric {name}"
    else:
        what = f"the logged {name}"
    return what.replace("the ", "the validation ", 1) if validation else what


def nonfinite_variables(trainer: MultiTaskTrainer) -> Iterator[tuple[str, float]]:
    """(what, value) for every non-finite float variable a checkpoint of `trainer` would hold.

    Watched: the weighting's state (named by method, variable and task), the network's
    variables (BatchNorm statistics included) and the optimizer's; the trainer's `best_value`,
    NaN until a first best epoch, is not.

    Example:

    ```python
    next(nonfinite_variables(trainer), None)  # ("the uncertainty weighting's ...", inf)
    ```
    """
    yield from nonfinite_weighting_state(trainer)
    groups = (("network", trainer.model.variables), ("optimizer", trainer.optimizer.variables))
    for group, variables in groups:
        for variable in variables:
            first = _first_nonfinite(variable)
            if first is not None:
                yield f"the {group} variable {variable.path}", first


def nonfinite_weighting_state(trainer: MultiTaskTrainer) -> Iterator[tuple[str, float]]:
    """(what, value) for every non-finite entry of the weighting's state variables."""
    weighting = trainer.weighting
    method = getattr(getattr(weighting, "info", None), "name", type(weighting).__name__)
    for variable in weighting.weights:
        values = np.asarray(variable.numpy(), dtype=np.float64)
        if np.all(np.isfinite(values)):
            continue
        bad = np.flatnonzero(~np.isfinite(values.ravel()))
        name = variable.name
        if values.shape == (len(weighting.task_names),):
            name = f"{name} ({weighting.task_names[int(bad[0])]})"
        yield f"the {method} weighting's {name}", float(values.ravel()[bad[0]])


def _first_nonfinite(variable) -> float | None:
    if not np.issubdtype(np.dtype(variable.dtype), np.floating):
        return None
    values = np.asarray(variable.numpy())
    if np.all(np.isfinite(values)):
        return None
    return float(values.ravel()[np.flatnonzero(~np.isfinite(values.ravel()))[0]])


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite value of anything the run saves, naming it.

    After every training step it watches the step's logs (`loss`, `loss_<task>`,
    `weight_<task>`) and the weighting's state variables; at the end of an epoch every log
    (validation losses and metrics included). `RunArtifacts` asks `check_saved_state` before
    writing anything, which also reads every variable of the checkpoint (network, BatchNorm
    statistics, optimizer, weighting), so a diverged model is never saved.

    Args:
        task_names: the tasks of the run.

    Attributes:
        failure: None, or one line saying what became what, and when (`the depth loss became
            nan at epoch 3, step 12`).
        failed_epoch: the 1-based epoch of the failure, or None.

    Example:

    ```python
    guard = NaNGuard(trainer.task_names)
    trainer.fit(train_ds, epochs=3, callbacks=[guard])
    guard.failure  # None, or "the validation metric motion_miou became nan at epoch 2"
    ```
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self.failure: str | None = None
        self.failed_epoch: int | None = None
        self.epoch = 0

    def fail(self, what: str, value: float, when: str) -> None:
        """Records the first failure and stops training."""
        if self.failure is None:
            self.failure = f"{what} became {_shown(value)} {when}"
            self.failed_epoch = self.epoch + 1
        if self.model is not None:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.failure:
            return
        logs = logs or {}
        # The tasks first: a task's loss names what diverged better than the total.
        keys = [*[f"loss_{t}" for t in self.task_names], "loss"]
        keys += [f"weight_{t}" for t in self.task_names]
        for key in keys:
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                self.fail(
                    describe_log(key), float(value), f"at epoch {self.epoch + 1}, step {batch + 1}"
                )
                return
        for what, value in nonfinite_weighting_state(self.model):
            self.fail(what, value, f"at epoch {self.epoch + 1}, step {batch + 1}")
            return

    def on_epoch_end(self, epoch, logs=None):
        if self.failure:
            return
        logs = logs or {}
        for key in sorted(logs, key=lambda k: (k.endswith("loss"), k)):  # tasks before totals
            value = logs[key]
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(number):
                where = "in the validation of" if key.startswith("val_") else "at the end of"
                self.fail(describe_log(key), number, f"{where} epoch {epoch + 1}")
                return

    def check_saved_state(self, trainer: MultiTaskTrainer, epoch: int) -> bool:
        """True when every variable a checkpoint of `trainer` holds is finite; else fails.

        Args:
            trainer: the trainer about to be saved.
            epoch: the 0-based epoch being saved.
        """
        if self.failure:
            return False
        for what, value in nonfinite_variables(trainer):
            self.epoch = epoch
            self.fail(what, value, f"at the end of epoch {epoch + 1}")
            return False
        return True


class WeightingEpochEnd(keras.callbacks.Callback):
    """Calls `weighting.on_epoch_end` with the epoch-mean unweighted training losses (DWA).

    Args:
        guard: the run's NaNGuard; nothing is recorded for an epoch that diverged.
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
    """Per epoch: appends history.csv, saves model_best.keras, config.yaml, checkpoint.keras.

    Nothing is written for an epoch in which anything diverged: the guard checks the epoch's
    logs and every variable of the checkpoint first. Order (so that a run killed anywhere
    resumes to exactly `epochs` history rows): history row, best model, config, then the
    checkpoint (which records the epoch). On resume, history rows beyond the checkpoint's
    epoch are dropped.

    A new run in a folder of an earlier run (`--overwrite`) leaves the earlier run's files in
    place until its own first epoch is written; then the earlier files it has not replaced
    (`replaces`: results.json, predictions.png, TensorBoard events, ...) are deleted.

    Args:
        save_path: run folder.
        pivot_metric: validation metric (without `val_`) choosing model_best.keras.
        task_names: tasks of the run (columns of history.csv).
        guard: the NaNGuard; without one, nothing is checked.
        config: the run's configuration, saved as config.yaml with every epoch (None: not
            saved).
        replaces: files of an earlier run in `save_path`, deleted after the first epoch
            written unless this run wrote them again.
        backup: after each checkpoint, also write `backup.json` (`{"epoch": n}`), the mark by
            which restarted workers of a multi-worker job resume (the run removes it at the
            end of training).

    Attributes:
        saved_epoch: the last epoch (1-based) this callback wrote, or None.
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        pivot_metric: str,
        task_names: Sequence[str],
        guard: NaNGuard | None = None,
        config: Config | None = None,
        replaces: Sequence[str | os.PathLike] = (),
        backup: bool = False,
    ) -> None:
        super().__init__()
        self.save_path = Path(save_path)
        self.backup = bool(backup)
        self.pivot_metric = pivot_metric
        self.task_names = list(task_names)
        self.guard = guard
        self.config = config
        self.replaces = [Path(p) for p in replaces]
        self.saved_epoch: int | None = None
        self.best_written = False

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
        trainer = self.model
        if self.guard is not None and not self.guard.check_saved_state(trainer, epoch):
            return
        logs = dict(logs or {})
        optimizer = trainer.optimizer
        rate = optimizer.learning_rate
        logs["lr"] = float(rate(optimizer.iterations) if callable(rate) else rate)
        written = [self.save_path / HISTORY_NAME]
        append_history_row(written[0], epoch + 1, logs, self.columns(logs))
        pivot = logs.get(f"val_{self.pivot_metric}")
        best_path = self.save_path / BEST_MODEL_NAME
        if pivot is not None and math.isfinite(float(pivot)):
            best = float(trainer.best_value.numpy())
            higher = metric_higher_is_better(self.pivot_metric)
            improved = math.isnan(best) or (pivot > best if higher else pivot < best)
            if improved:
                trainer.best_value.assign(float(pivot))
                save_atomic(trainer.model.save, best_path)
                self.best_written = True
        elif not self.best_written and (best_path in self.replaces or not best_path.exists()):
            # No validation metric: the first model this run writes stands as the best.
            save_atomic(trainer.model.save, best_path)
            self.best_written = True
        if self.best_written:
            written.append(best_path)
        if self.config is not None:
            self.config.save(self.save_path / RUN_CONFIG_NAME)
            written.append(self.save_path / RUN_CONFIG_NAME)
        trainer.epoch_counter.assign(epoch + 1)
        save_atomic(trainer.save, self.save_path / CHECKPOINT_NAME)
        written.append(self.save_path / CHECKPOINT_NAME)
        if self.backup:  # after the checkpoint: the mark never points at a missing one
            write_json_atomic(self.save_path / BACKUP_NAME, {"epoch": epoch + 1})
            written.append(self.save_path / BACKUP_NAME)
        self.saved_epoch = epoch + 1
        # The earlier run's files go once this run has a whole epoch of its own on disk.
        for path in self.replaces:
            if path not in written:
                path.unlink(missing_ok=True)
        self.replaces = []


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
        guard: the run's NaNGuard; nothing is drawn for an epoch that diverged.
    """

    def __init__(
        self,
        log_dir,
        batch,
        semantic_classes: int = 5,
        max_images: int = 2,
        guard: NaNGuard | None = None,
    ) -> None:
        super().__init__()
        self.guard = guard
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
        if self.guard is not None and self.guard.failure:
            return
        grids = self.grids(self.model)
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "images"))
        with self.writer.as_default():
            tf.summary.image("predictions", np.stack(grids), step=epoch, max_outputs=len(grids))
        self.writer.flush()
