"""The three tasks in one table: output name, channels, what is better, how to resize.

Every other module asks this table instead of spelling task names or class counts itself.
"""

from __future__ import annotations

from dataclasses import dataclass

TASK_NAMES: tuple[str, ...] = ("depth", "semantic", "motion")
INPUT_NAMES: tuple[str, ...] = ("flow", "rgb")
IGNORE_INDEX = 255
MOTION_CLASSES = 2
SEMANTIC_CLASS_CHOICES = (5, 19)


@dataclass(frozen=True)
class Task:
    """One dense prediction task.

    Args:
        name: output name of the model (`depth`, `semantic`, `motion`).
        kind: `regression` (one channel, metres) or `classification` (logits).
        metric: name of the headline metric (as in the seed's table).
        higher_is_better: direction of the headline metric (used by Delta_m).
        resize: how predictions are resized to `output_size` for evaluation:
            `bilinear` for depth, `nearest` for class maps.
        inputs: which model inputs the single-task baseline of this task uses.
    """

    name: str
    kind: str
    metric: str
    higher_is_better: bool
    resize: str
    inputs: tuple[str, ...]


TASKS: dict[str, Task] = {
    "depth": Task("depth", "regression", "depth_ard_percent", False, "bilinear", ("rgb",)),
    "semantic": Task("semantic", "classification", "semantic_miou", True, "nearest", ("rgb",)),
    "motion": Task("motion", "classification", "motion_miou", True, "nearest", ("flow", "rgb")),
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
