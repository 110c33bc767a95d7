"""keras-tuner search over task weights (and optionally the learning rate or the method).

The objective never looks at the weighted training loss (which changes meaning with the
weights); it is a weight-independent validation score computed after every epoch from the
trainer's validation metrics (`keras_mtl.metrics`, keys `val_depth_ard_percent`,
`val_semantic_miou`, `val_motion_miou`):

- with single-task results: `val_delta_m` = `keras_mtl.metrics.delta_m` (percent, lower is
  better: negative means better than the single-task models);
- otherwise: `val_mean_task_score` = mean of (100 - ARD%), semantic mIoU and motion mIoU
  (percent, higher is better; every term is 100 for a perfect model).

Search spaces (`--search`):

- `weights`: two log-uniform ratios in [0.1, 10], `semantic_ratio` and `motion_ratio`, against
  depth = 1; the task weights are the ratios normalised to sum 3 (mean weight 1, like the
  vanilla method and the original's renormalisation), so the loss scale stays comparable. Two
  free numbers cover the whole simplex without the redundancy of three normalised ones.
  The weights are fixed for `vanilla` and the starting weights for the other methods.
- `weights+lr`: the same plus `lr`, log-uniform in [1e-5, 1e-2].
- `method`: `multi_task_type` among all weighting methods, `lr`, and per method its own
  hyper-parameter (`grad_norm_alpha`, `pseudo_grad_norm_alpha`, `dwa_temperature`,
  `famo_gamma`).

Example:

```python
config = load_config("configs/synthetic.yaml", overrides={"epochs": 2})
summary = run_search(config, "runs/tune", max_trials=8, tuner="bayesian")
summary["best"]["hyperparameters"]  # {"semantic_ratio": ..., "motion_ratio": ...}
```
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from keras_mtl.config import Config
from keras_mtl.errors import UserError
from keras_mtl.io import remove_partial_writes, save_atomic, write_text_atomic
from keras_mtl.tasks import TASK_NAMES, TASKS
from keras_mtl.weighting import WEIGHTING_NAMES

SEARCHES: tuple[str, ...] = ("weights", "weights+lr", "method")
TUNERS: tuple[str, ...] = ("random", "bayesian", "hyperband")
PROJECT_NAME = "search"
SUMMARY_FILE = "summary.json"
SUMMARY_TABLE_FILE = "summary.txt"
BEST_MODEL_FILE = "model_best.keras"
BEST_CONFIG_FILE = "best_config.yaml"

RATIO_RANGE = (0.1, 10.0)
LR_RANGE = (1e-5, 1e-2)
METHODS: tuple[str, ...] = WEIGHTING_NAMES  # the registry's methods, in its order
# Per-method hyper-parameters for --search method: (config field, low, high).
METHOD_HYPERPARAMETERS: dict[str, tuple[str, float, float]] = {
    "grad_norm": ("grad_norm_alpha", 0.5, 3.0),
    "pseudo_grad_norm": ("pseudo_grad_norm_alpha", 0.25, 2.0),
    "dwa": ("dwa_temperature", 0.5, 5.0),
    # FAMO's logit decay: the paper's 0.001 (NYUv2) and 0.01 (Cityscapes) inside the range.
    "famo": ("famo_gamma", 0.0005, 0.05),
}

MEAN_TASK_SCORE = "val_mean_task_score"
DELTA_M = "val_delta_m"
OBJECTIVE_DEFINITIONS = {
    MEAN_TASK_SCORE: "mean of (100 - depth ARD%), semantic mIoU and motion mIoU on the "
    "validation split, percent, higher is better",
    DELTA_M: "Delta_m of the validation metrics against the single-task results, percent, "
    "lower is better (negative = better than single-task)",
}
VALIDATION_KEYS: tuple[str, ...] = tuple(f"val_{TASKS[t].metric}" for t in TASK_NAMES)


# --------------------------------------------------------------------------------------------
# Objective


def mean_task_score(metrics: Mapping[str, float]) -> float:
    """Mean of (100 - ARD%), semantic mIoU, motion mIoU; keys without the `val_` prefix."""
    return (
        (100.0 - float(metrics["depth_ard_percent"]))
        + float(metrics["semantic_miou"])
        + float(metrics["motion_miou"])
    ) / 3.0


def objective_for(single_task_results: Mapping[str, float] | None) -> kt.Objective:
    """`val_delta_m` (min) with single-task results, else `val_mean_task_score` (max)."""
    if single_task_results:
        return kt.Objective(DELTA_M, direction="min")
    return kt.Objective(MEAN_TASK_SCORE, direction="max")


class ValidationObjective(keras.callbacks.Callback):
    """Adds the objective to the epoch logs, computed from the validation metrics.

    Must run before keras-tuner's own callbacks (which read the logs dict it fills in).

    Args:
        single_task_results: headline metrics of the single-task models (`depth_ard_percent`,
            `semantic_miou`, `motion_miou`), or None for the mean task score.
    """

    def __init__(self, single_task_results: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.single_task_results = dict(single_task_results) if single_task_results else None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        missing = [key for key in VALIDATION_KEYS if key not in logs]
        if missing:
            raise ValueError(
                f"the trainer logged no {', '.join(missing)}: the tuner needs validation data"
            )
        metrics = {key[len("val_") :]: float(logs[key]) for key in VALIDATION_KEYS}
        if self.single_task_results:
            from keras_mtl.metrics import delta_m

            logs[DELTA_M] = delta_m(metrics, self.single_task_results)
        else:
            logs[MEAN_TASK_SCORE] = mean_task_score(metrics)


# --------------------------------------------------------------------------------------------
# Search space


def normalized_weights(ratios: Sequence[float]) -> tuple[float, ...]:
    """Task weights proportional to `ratios`, summing to the number of tasks (3)."""
    ratios = [float(r) for r in ratios]
    total = sum(ratios)
    return tuple(len(ratios) * r / total for r in ratios)


def trial_config(config: Config, hp: kt.HyperParameters, search: str) -> Config:
    """A copy of `config` with the trial's hyper-parameters applied (defines the space).

    Raises:
        ValueError: unknown `search`.
    """
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; expected one of {SEARCHES}")
    weighting = dataclasses.replace(config.weighting)
    train = dataclasses.replace(config.train)
    if search == "method":
        method = hp.Choice("multi_task_type", list(METHODS))
        weighting.multi_task_type = method
        for name, (field, low, high) in METHOD_HYPERPARAMETERS.items():
            with hp.conditional_scope("multi_task_type", [name]):
                if method == name:
                    setattr(weighting, field, hp.Float(field, low, high))
    else:
        ratios = [1.0]  # depth is the reference: the ratios are relative to it
        for task in TASK_NAMES[1:]:
            ratios.append(hp.Float(f"{task}_ratio", *RATIO_RANGE, sampling="log"))
        weighting.task_weights = normalized_weights(ratios)
    if search in ("weights+lr", "method"):
        train.lr = hp.Float("lr", *LR_RANGE, sampling="log")
    return dataclasses.replace(config, weighting=weighting, train=train)


class BadInputError(kt.errors.FatalError, UserError):
    """A frame that does not decode: ends the search (keras-tuner would only fail the trial
    and go on to the next, which reads the same data), printed as one line by tune.py."""


class MultiTaskHyperModel(kt.HyperModel):
    """Builds a compiled `MultiTaskTrainer` per trial and trains it with the project's callbacks.

    Args:
        config: the base configuration (copied per trial, never changed).
        search: one of `SEARCHES`.
        steps_per_epoch: optimizer steps per epoch (for the learning-rate schedule).
        single_task_results: for the Delta_m objective, else None.
        run_eagerly: debugging and fast tests.
    """

    def __init__(
        self,
        config: Config,
        search: str = "weights",
        steps_per_epoch: int = 1,
        single_task_results: Mapping[str, float] | None = None,
        run_eagerly: bool = False,
    ) -> None:
        super().__init__(name="multi_task", tunable=True)
        self.config = copy.deepcopy(config)
        self.search = search
        self.steps_per_epoch = int(steps_per_epoch)
        self.single_task_results = single_task_results
        self.run_eagerly = run_eagerly

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        from keras_mtl.training import build_trainer

        config = trial_config(self.config, hp, self.search)
        # The tuner enters its distribution strategy's scope around build(): use that one.
        trainer = build_trainer(
            config, tf.distribute.get_strategy(), self.steps_per_epoch, self.run_eagerly
        )
        # One call on dummy data builds every variable (keras-tuner needs a built model to
        # checkpoint and reload it, e.g. get_best_models and Hyperband).
        height, width = config.data.img_resize
        dummy = np.zeros((1, height, width, 3), np.float32)
        trainer({name: dummy for name in trainer.input_names}, training=False)
        return trainer

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        from keras_mtl.training import NaNGuard, WeightingEpochEnd, data_error

        guard = NaNGuard(model.task_names)
        # The objective must be in the logs before keras-tuner's callbacks read them.
        own = [guard, WeightingEpochEnd(guard), ValidationObjective(self.single_task_results)]
        kwargs["callbacks"] = own + list(kwargs.get("callbacks") or [])
        try:
            history = model.fit(*args, **kwargs)
        except Exception as error:  # a frame that does not decode: every trial would meet it
            user_error = data_error(error)
            if user_error is None:
                raise
            raise BadInputError(str(user_error)) from None
        if guard.failure:
            # keras-tuner marks the trial failed and goes on with the next one.
            raise RuntimeError(f"trial diverged: {guard.failure}")
        return history


# --------------------------------------------------------------------------------------------
# Running a search


def make_tuner(
    name: str,
    hypermodel: MultiTaskHyperModel,
    objective: kt.Objective,
    directory: str | os.PathLike,
    max_trials: int,
    max_epochs: int,
    *,
    seed: int = 0,
    overwrite: bool = False,
    distribution_strategy: tf.distribute.Strategy | None = None,
) -> kt.Tuner:
    """A keras-tuner tuner (`random`, `bayesian` or `hyperband`) over `hypermodel`.

    Hyperband decides its own number of trials from `max_epochs` (one bracket iteration);
    `max_trials` bounds the random and Bayesian searches.
    """
    common = dict(
        objective=objective,
        seed=seed,
        directory=os.fspath(directory),
        project_name=PROJECT_NAME,
        overwrite=overwrite,
        distribution_strategy=distribution_strategy,
        max_consecutive_failed_trials=3,
    )
    if name == "random":
        return kt.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if name == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    if name == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=max_epochs, factor=3, **common)
    raise UserError(f"--tuner {name}: choose one of {', '.join(TUNERS)}")


def run_search(
    config: Config,
    save_path: str | os.PathLike,
    *,
    max_trials: int,
    tuner: str = "random",
    search: str = "weights",
    single_task_results: Mapping[str, float] | None = None,
    overwrite: bool = False,
    export_best: bool = False,
    run_eagerly: bool = False,
    datasets: tuple[tf.data.Dataset, tf.data.Dataset] | None = None,
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Runs (or resumes) a search and writes `summary.json` and `summary.txt` in `save_path`.

    Args:
        config: base configuration: data, model, training length (`epochs`,
            `steps_per_epoch`, `val_steps`), `gpus` / `cpu_replicas` (the tuner's
            distribution strategy) and seed.
        save_path: search folder; keras-tuner keeps its trials in `save_path/search`. Running
            again on the same folder resumes (finished trials are not rerun). One search at a
            time holds it (`run.lock`, see `keras_mtl.training.RunLock`).
        max_trials: trials of the random and Bayesian searches (>= 1).
        tuner: `random`, `bayesian` or `hyperband`.
        search: `weights`, `weights+lr` or `method` (see the module docstring).
        single_task_results: headline metrics of the single-task models: objective Delta_m.
        overwrite: start over, discarding the trials in `save_path/search`.
        export_best: also write the best trial's network (`model_best.keras`) and its
            configuration (`best_config.yaml`, usable with `train.py --config`).
        run_eagerly: debugging and fast tests.
        datasets: (train, val) instead of `keras_mtl.training.build_datasets(config)`.
        verbose: Keras fit verbosity.

    Returns:
        The summary: `{"objective", "objective_direction", "objective_definition", "search",
        "tuner", "trials": [...], "best": {...}}`; each trial has `trial_id`, `status`,
        `hyperparameters`, `task_weights`, `score`, `best_epoch` and `metrics` (validation
        metrics at the best epoch).

    Raises:
        UserError: bad arguments, unwritable `save_path`, a folder another run holds, a
            frame that does not decode (named), or no trial finished.
    """
    from keras_mtl.training import RunLock

    if not isinstance(max_trials, int) or max_trials < 1:
        raise UserError(f"--max_trials {max_trials}: must be at least 1")
    if search not in SEARCHES:
        raise UserError(f"--search {search}: choose one of {', '.join(SEARCHES)}")
    if tuner not in TUNERS:
        raise UserError(f"--tuner {tuner}: choose one of {', '.join(TUNERS)}")
    save_path = _prepare_dir(save_path)
    with RunLock(save_path):
        remove_partial_writes(save_path)
        return _search_in_folder(
            config,
            save_path,
            max_trials=max_trials,
            tuner=tuner,
            search=search,
            single_task_results=single_task_results,
            overwrite=overwrite,
            export_best=export_best,
            run_eagerly=run_eagerly,
            datasets=datasets,
            verbose=verbose,
        )


def _search_in_folder(
    config: Config,
    save_path: Path,
    *,
    max_trials: int,
    tuner: str,
    search: str,
    single_task_results: Mapping[str, float] | None,
    overwrite: bool,
    export_best: bool,
    run_eagerly: bool,
    datasets: tuple[tf.data.Dataset, tf.data.Dataset] | None,
    verbose: int | str,
) -> dict[str, Any]:
    """`run_search` once its folder is locked (see there)."""
    from keras_mtl.training import build_datasets, select_strategy, steps_per_epoch_of

    # Logical CPU replicas must be configured before any TensorFlow op (datasets included).
    strategy = select_strategy(config.train.gpus, config.train.cpu_replicas)
    if strategy is tf.distribute.get_strategy():
        strategy = None  # the default strategy: keras-tuner needs no scope
    if datasets is None:
        # Every trial trains on the same stream of batches (from its first batch).
        train_ds, val_ds = build_datasets(config)
        steps_per_epoch = steps_per_epoch_of(config)
    else:
        train_ds, val_ds = datasets
        steps_per_epoch = config.train.steps_per_epoch
        if steps_per_epoch is None:
            steps_per_epoch = int(train_ds.cardinality())
            if steps_per_epoch <= 0:
                raise UserError("--steps_per_epoch: the training dataset has no known length")
        if int(train_ds.cardinality()) != tf.data.INFINITE_CARDINALITY:
            train_ds = train_ds.repeat()
    if config.train.val_steps is not None:
        val_ds = val_ds.take(config.train.val_steps)  # the same batches every epoch
    objective = objective_for(single_task_results)
    hypermodel = MultiTaskHyperModel(
        config, search, steps_per_epoch, single_task_results, run_eagerly=run_eagerly
    )
    keras_tuner = make_tuner(
        tuner,
        hypermodel,
        objective,
        save_path,
        max_trials,
        config.train.epochs,
        seed=config.train.seed,
        overwrite=overwrite,
        distribution_strategy=strategy,
    )
    keras_tuner.search(
        train_ds,
        validation_data=val_ds,
        epochs=config.train.epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
    )
    summary = summarize(keras_tuner, objective, config, search, tuner)
    if summary["best"] is None:
        raise UserError(
            f"no trial finished (see the trial logs under {save_path / PROJECT_NAME}); check the "
            "data and --lr"
        )
    if export_best:
        best_model = keras_tuner.get_best_models(1)[0]
        save_atomic(best_model.model.save, save_path / BEST_MODEL_FILE)
        best_hp = keras_tuner.get_best_hyperparameters(1)[0]
        best_config = trial_config(config, best_hp, search)
        # A command for this search folder, not for the run trained from it.
        best_train = dataclasses.replace(best_config.train, overwrite=False)
        dataclasses.replace(best_config, train=best_train).save(save_path / BEST_CONFIG_FILE)
        summary["best"]["model"] = os.fspath(save_path / BEST_MODEL_FILE)
        summary["best"]["config"] = os.fspath(save_path / BEST_CONFIG_FILE)
    write_summary(summary, save_path)
    return summary


def summarize(
    keras_tuner: kt.Tuner, objective: kt.Objective, config: Config, search: str, tuner: str
) -> dict[str, Any]:
    """The summary of every trial the tuner knows (also those of an earlier, resumed run)."""
    trials = []
    for trial_id in sorted(keras_tuner.oracle.trials, key=_trial_order):
        trial = keras_tuner.oracle.trials[trial_id]
        trials.append(_trial_summary(trial, objective, config, search))
    finished = [t for t in trials if t["score"] is not None and math.isfinite(t["score"])]
    best = None
    if finished:
        pick = min if objective.direction == "min" else max
        best = dict(pick(finished, key=lambda t: t["score"]))
    return {
        "objective": objective.name,
        "objective_direction": objective.direction,
        "objective_definition": OBJECTIVE_DEFINITIONS[objective.name],
        "search": search,
        "tuner": tuner,
        "trials": trials,
        "best": best,
    }


def _trial_order(trial_id: str) -> tuple[int, str]:
    # keras-tuner numbers trials "0", "1", ..., "10": order them as numbers.
    return (int(trial_id), "") if trial_id.isdigit() else (1 << 62, trial_id)


def _trial_summary(trial: Any, objective: kt.Objective, config: Config, search: str) -> dict:
    hp_values = {
        k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")
    }
    weighting = trial_config(config, trial.hyperparameters, search).weighting
    entry: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "status": str(trial.status),
        "hyperparameters": hp_values,
        "multi_task_type": weighting.multi_task_type,
        "task_weights": dict(zip(TASK_NAMES, map(float, weighting.task_weights), strict=True)),
        "score": None,
        "best_epoch": None,
        "metrics": {},
    }
    tracker = trial.metrics
    if not tracker.exists(objective.name) or not tracker.get_history(objective.name):
        return entry
    history = tracker.get_history(objective.name)
    values = [float(obs.mean()) for obs in history]
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return entry
    pick = min if objective.direction == "min" else max
    best_index = pick(finite, key=lambda i: values[i])
    step = history[best_index].step
    entry["score"] = values[best_index]
    entry["best_epoch"] = int(step) + 1
    for key in VALIDATION_KEYS:
        if tracker.exists(key):
            at_step = [obs for obs in tracker.get_history(key) if obs.step == step]
            if at_step:
                entry["metrics"][key[len("val_") :]] = float(at_step[0].mean())
    return entry


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """A readable table: one row per trial, best first, with the weights and metrics."""
    direction = summary["objective_direction"]
    rows = sorted(
        summary["trials"],
        key=lambda t: (t["score"] is None, (t["score"] or 0.0) * (1 if direction == "min" else -1)),
    )
    header = ["trial", "method", "w_depth", "w_sem", "w_mot", "lr/extra", summary["objective"]]
    header += ["ARD %", "sem mIoU", "mot mIoU", "epoch"]
    lines = []
    for trial in rows:
        extra = {
            k: v
            for k, v in trial["hyperparameters"].items()
            if k not in ("multi_task_type", "semantic_ratio", "motion_ratio")
        }
        metrics = trial["metrics"]
        lines.append(
            [
                trial["trial_id"],
                trial["multi_task_type"],
                *(f"{trial['task_weights'][t]:.3f}" for t in TASK_NAMES),
                " ".join(f"{k}={v:.3g}" for k, v in extra.items()) or "-",
                "-" if trial["score"] is None else f"{trial['score']:.3f}",
                *(
                    f"{metrics[key]:.2f}" if key in metrics else "-"
                    for key in ("depth_ard_percent", "semantic_miou", "motion_miou")
                ),
                str(trial["best_epoch"] or "-"),
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    text = [
        "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *lines]
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append(f"objective: {summary['objective']} = {summary['objective_definition']}")
    return "\n".join(text)


def write_summary(summary: Mapping[str, Any], save_path: str | os.PathLike) -> None:
    """Writes `summary.json` and `summary.txt` atomically."""
    import json

    save_path = Path(save_path)
    write_text_atomic(save_path / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(save_path / SUMMARY_TABLE_FILE, format_summary_table(summary) + "\n")


def _prepare_dir(save_path: str | os.PathLike) -> Path:
    path = Path(save_path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(
            f"--save_path {path}: cannot write there ({error.strerror or error})"
        ) from None
    return path
