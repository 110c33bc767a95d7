"""The three tasks in one table: outputs, losses, class weights, metrics, resizing, saving.

Every other module asks this table instead of spelling task names, class counts, metric names
or per-task rules itself: the losses (`keras_mtl.losses.task_loss_terms`), the metric sets
(`keras_mtl.metrics.task_metrics`), the trainer (class weights, validation logs) and the
evaluation (resizing, saved predictions, per-class tables).

Example:

```python
TASKS["semantic"].metrics  # ('semantic_miou',)
class_names("motion")  # ('static', 'moving')
metric_higher_is_better("depth_abs_rel")  # False
```
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_mtl.data.labels import MOTION_CLASS_NAMES
from keras_mtl.data.labels import class_names as semantic_class_names

TASK_NAMES: tuple[str, ...] = ("depth", "semantic", "motion")
INPUT_NAMES: tuple[str, ...] = ("flow", "rgb")
IGNORE_INDEX = 255
MOTION_CLASSES = 2
SEMANTIC_CLASS_CHOICES = (5, 19)

# The original system's class weights (5-class semantic: road, sky, pedestrian, vehicle,
# background; motion: static, moving). No weights were published for 19 classes.
SEMANTIC5_CLASS_WEIGHTS: tuple[float, ...] = (0.2257, 1.8994, 5.2403, 1.0, 0.1352)
MOTION_CLASS_WEIGHTS: tuple[float, ...] = (0.05, 0.95)

# How evaluation writes a task's predictions (one PNG per frame and task):
SAVED_AS: dict[str, str] = {
    "depth_png16": "uint16 PNG of round(metres * 256), clipped to [0, 255] m; 0 = invalid",
    "class_png": "uint8 PNG of class ids",
    "mask_png": "uint8 PNG mask: 255 = class 1 (moving), 0 = class 0 (static)",
}


@dataclass(frozen=True)
class Task:
    """One dense prediction task.

    Args:
        name: output name of the model (`depth`, `semantic`, `motion`).
        kind: `regression` (one channel, metres) or `classification` (logits).
        loss: `depth` (the depth loss the run chooses, `train.depth_loss`) or `cross_entropy`
            (ignore-aware, see `keras_mtl.losses`).
        metrics: evaluation metrics (`keras_mtl.metrics.task_metrics`), headline first (as
            in the seed's table).
        epoch_metrics: the metrics the trainer validates every epoch (`val_<name>` in
            history.csv), a subset of `metrics`.
        higher_is_better: direction of every metric of the task (used by Delta_m and model
            selection).
        resize: how predictions are resized to `output_size` for evaluation:
            `bilinear` for depth, `nearest` (after argmax) for class maps.
        saved_as: how evaluation writes a prediction, a key of `SAVED_AS`.
        inputs: which model inputs the single-task baseline of this task uses.
        class_weights: the original's per-class loss weights, or None; they apply when the
            task has exactly that many classes (`class_weights_for`).

    Example:

    ```python
    task = TASKS["depth"]
    task.metric, task.higher_is_better  # ('depth_ard_percent', False)
    ```
    """

    name: str
    kind: str
    loss: str
    metrics: tuple[str, ...]
    epoch_metrics: tuple[str, ...]
    higher_is_better: bool
    resize: str
    saved_as: str
    inputs: tuple[str, ...]
    class_weights: tuple[float, ...] | None = None

    @property
    def metric(self) -> str:
        """The headline metric."""
        return self.metrics[0]


TASKS: dict[str, Task] = {
    "depth": Task(
        name="depth",
        kind="regression",
        loss="depth",
        metrics=("depth_ard_percent", "depth_abs_rel", "depth_rmse"),
        epoch_metrics=("depth_ard_percent", "depth_abs_rel"),
        higher_is_better=False,
        resize="bilinear",
        saved_as="depth_png16",
        inputs=("rgb",),
    ),
    "semantic": Task(
        name="semantic",
        kind="classification",
        loss="cross_entropy",
        metrics=("semantic_miou",),
        epoch_metrics=("semantic_miou",),
        higher_is_better=True,
        resize="nearest",
        saved_as="class_png",
        inputs=("rgb",),
        class_weights=SEMANTIC5_CLASS_WEIGHTS,
    ),
    "motion": Task(
        name="motion",
        kind="classification",
        loss="cross_entropy",
        metrics=("motion_miou",),
        epoch_metrics=("motion_miou",),
        higher_is_better=True,
        resize="nearest",
        saved_as="mask_png",
        inputs=("flow", "rgb"),
        class_weights=MOTION_CLASS_WEIGHTS,
    ),
}


def num_channels(task: str, semantic_classes: int = 5) -> int:
    """Number of output channels of `task` (1 for depth, C for semantic, 2 for motion)."""
    if task == "depth":
        return 1
    if task == "semantic":
        return semantic_classes
    if task == "motion":
        return MOTION_CLASSES
    raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")


def class_names(task: str, semantic_classes: int = 5) -> tuple[str, ...]:
    """Names of the classes of a classification task (per-class IoU tables)."""
    if task == "semantic":
        return semantic_class_names(semantic_classes)
    if task == "motion":
        return MOTION_CLASS_NAMES
    raise ValueError(f"task {task!r} has no classes; expected semantic or motion")


def class_weights_for(
    task: str, semantic_classes: int = 5, enabled: bool = True
) -> tuple[float, ...] | None:
    """The original's class weights of `task` when `enabled` (`train.class_weights`); None for
    depth and for 19 semantic classes, which have none."""
    weights = TASKS[task].class_weights
    if not enabled or weights is None or len(weights) != num_channels(task, semantic_classes):
        return None
    return weights


def metric_higher_is_better(metric: str) -> bool:
    """Direction of a metric name: a task metric's from the table; otherwise (`loss`,
    `loss_<task>`) lower is better unless the name is an mIoU."""
    for task in TASKS.values():
        if metric in task.metrics:
            return task.higher_is_better
    return "miou" in metric
