"""Training: the multi-task trainer and everything a training run needs.

- `trainer.py`: `MultiTaskTrainer` (train/test steps over Keras' `compute_loss` and
  `compute_metrics` hooks);
- `gradients.py`: the per-task split of the backward pass (`SharedSplit`, `SplitBackward`);
- `schedule.py`: Adam on `WarmupMultiStepSchedule`;
- `strategy.py`: `select_strategy` and the replica arithmetic;
- `callbacks.py`: divergence guard (`NaNGuard`), weighting epoch end, run artifacts,
  prediction pictures;
- `history.py`: history.csv (read, append, truncate, summarize);
- `run.py`: `run_training` and its builders (model, trainer, datasets), the run folder's lock
  and rules (`RunLock`, `check_run_folder`).

Example:

```python
from keras_mtl.training import run_training
results = run_training(load_config("configs/synthetic.yaml", overrides={"epochs": 2}))
```
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_mtl.tasks import class_weights_for
from keras_mtl.training.callbacks import (
    BACKUP_NAME,
    BEST_MODEL_NAME,
    CHECKPOINT_NAME,
    NaNGuard,
    PredictionImages,
    RunArtifacts,
    WeightingEpochEnd,
)
from keras_mtl.training.gradients import SharedSplit, SplitBackward
from keras_mtl.training.history import (
    HISTORY_NAME,
    append_history_row,
    read_history_rows,
    summarize_history,
    truncate_history,
)
from keras_mtl.training.schedule import WarmupMultiStepSchedule, make_optimizer, make_schedule
from keras_mtl.training.strategy import (
    WorkerRole,
    overflow_on_any_replica,
    parse_tf_config,
    select_strategy,
    worker_role,
)
from keras_mtl.training.trainer import VALIDATION_METRICS, LastValue, MultiTaskTrainer

# run.py's names load on first use (PEP 562), so `import keras_mtl.training.trainer` (e.g. by
# the checkpoint loader, which run.py may import) never pulls in run.py.
_RUN_NAMES = (
    "LOCK_NAME",
    "LOGS_DIR",
    "PREDICTIONS_NAME",
    "RESULTS_NAME",
    "RESULT_NAMES",
    "RunLock",
    "build_datasets",
    "build_model",
    "build_trainer",
    "check_run_folder",
    "check_workers_agree",
    "data_error",
    "describe_run",
    "earlier_run_files",
    "load_trainer_state",
    "per_class_iou",
    "pivot_metric_of",
    "resolve_depth_init",
    "resume_from_backup",
    "run_training",
    "steps_per_epoch_of",
)


def __getattr__(name: str) -> Any:
    if name in _RUN_NAMES:
        return getattr(importlib.import_module("keras_mtl.training.run"), name)
    raise AttributeError(f"module 'keras_mtl.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RUN_NAMES))


__all__ = [
    "BACKUP_NAME",
    "BEST_MODEL_NAME",
    "CHECKPOINT_NAME",
    "HISTORY_NAME",
    "VALIDATION_METRICS",
    "LastValue",
    "MultiTaskTrainer",
    "NaNGuard",
    "PredictionImages",
    "RunArtifacts",
    "SharedSplit",
    "SplitBackward",
    "WarmupMultiStepSchedule",
    "WeightingEpochEnd",
    "WorkerRole",
    "append_history_row",
    "class_weights_for",
    "make_optimizer",
    "make_schedule",
    "overflow_on_any_replica",
    "parse_tf_config",
    "read_history_rows",
    "select_strategy",
    "summarize_history",
    "truncate_history",
    "worker_role",
    *_RUN_NAMES,
]
