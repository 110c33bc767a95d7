"""Running a training: build the model, trainer and datasets, fit, and write the run folder.

`run_training(config)` is what train.py runs. The run folder (`train.save_path`) receives
`config.yaml`, then every epoch `history.csv`, `model_best.keras` and `checkpoint.keras`
(`keras_mtl.training.callbacks.RunArtifacts`) and TensorBoard logs under `logs/`, and at the
end `predictions.png` (prediction grids of a few validation frames) and `results.json` (the
returned summary).

Example:

```python
config = load_config("configs/synthetic.yaml", overrides={"epochs": 2})
results = run_training(config)  # {"final", "best", "epochs", "per_class_iou", "files"}
```
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from keras_mtl.checkpoints import initialise_from_checkpoint
from keras_mtl.config import MIXED_PRECISION_POLICIES, RUN_CONFIG_NAME, Config, TrainConfig
from keras_mtl.data.pipeline import make_dataset, median_depth
from keras_mtl.errors import UserError
from keras_mtl.io import write_json_atomic
from keras_mtl.metrics import MeanIoU
from keras_mtl.models import build_multitask_model, build_single_task_model
from keras_mtl.tasks import TASK_NAMES, TASKS, class_names
from keras_mtl.training.callbacks import (
    BEST_MODEL_NAME,
    CHECKPOINT_NAME,
    NaNGuard,
    PredictionImages,
    RunArtifacts,
    WeightingEpochEnd,
    write_prediction_picture,
)
from keras_mtl.training.history import HISTORY_NAME, summarize_history, truncate_history
from keras_mtl.training.schedule import make_optimizer
from keras_mtl.training.strategy import select_strategy
from keras_mtl.training.trainer import MultiTaskTrainer

LOGS_DIR = "logs"
PREDICTIONS_NAME = "predictions.png"
RESULTS_NAME = "results.json"


def pivot_metric_of(train: TrainConfig) -> str:
    """The validation metric that chooses model_best.keras for this run.

    A single-task run that keeps the default pivot (motion mIoU) is judged by its own task's
    headline metric instead, since it never reports the others.

    Raises:
        UserError: `pivot_metric` is not reported by this run.
    """
    tasks = [train.single_task] if train.single_task else list(TASK_NAMES)
    reported = {"loss", *(f"loss_{t}" for t in tasks)}
    reported |= {m for t in tasks if t in TASKS for m in TASKS[t].epoch_metrics}
    if train.pivot_metric in reported:
        return train.pivot_metric
    if train.single_task and train.pivot_metric == TrainConfig.pivot_metric:
        return TASKS[train.single_task].metric
    raise UserError(
        f"pivot_metric {train.pivot_metric!r}: this run does not report it; choose one of "
        f"{', '.join(sorted(reported))}"
    )


def build_model(config: Config) -> keras.Model:
    """The functional model of `config` (multi-task, or single-task with `train.single_task`)."""
    data, model_config = config.data, config.model
    architecture = dict(
        img_size=data.img_resize,
        semantic_classes=data.semantic_classes,
        backbone=model_config.backbone,
        width_mult=model_config.width_mult,
        dropout=model_config.dropout,
        depth_scale=model_config.depth_scale,
        depth_head=model_config.depth_head,
    )
    if model_config.depth_init is not None:
        architecture["depth_init"] = model_config.depth_init
    try:
        if config.train.single_task:
            if config.train.single_task not in TASKS:
                raise UserError(
                    f"--single_task {config.train.single_task!r}: choose one of "
                    f"{', '.join(TASK_NAMES)}"
                )
            model = build_single_task_model(config.train.single_task, **architecture)
        else:
            model = build_multitask_model(**architecture)
    except ValueError as error:
        raise UserError(
            f"--img_resize/--backbone/--width_mult/--depth_scale/--depth_head/--depth_init: {error}"
        ) from None
    if model_config.pretrained:
        report = initialise_from_checkpoint(model, model_config.pretrained)
        print(
            f"pretrained: {len(report['copied'])} layers copied from {report['source']}, "
            f"{len(report['skipped'])} skipped",
            flush=True,
        )
    return model


def resolve_depth_init(config: Config) -> Config:
    """`config` with `model.depth_init` measured from the training split when the log depth
    head needs it and none is given (the value is then saved in the run's config.yaml)."""
    model_config = config.model
    trains_depth = config.train.single_task in (None, "depth")
    if model_config.depth_head != "log" or model_config.depth_init is not None or not trains_depth:
        return config
    data = config.data
    value = median_depth(data.data_path, data.train_split, data.semantic_classes, data.flow_dir)
    return dataclasses.replace(
        config, model=dataclasses.replace(model_config, depth_init=round(value, 3))
    )


def build_trainer(
    config: Config,
    strategy: tf.distribute.Strategy | None = None,
    steps_per_epoch: int = 1,
    run_eagerly: bool = False,
    model_fn: Callable[[Config], keras.Model] | None = None,
) -> MultiTaskTrainer:
    """A compiled `MultiTaskTrainer` for `config`, built under `strategy` (default: current).

    Args:
        config: the run configuration.
        strategy: distribution strategy; variables are created in its scope.
        steps_per_epoch: optimizer steps per epoch (for the schedule's epoch-based milestones).
        run_eagerly: debug / fast unit tests.
        model_fn: builds the functional model from `config` (default `build_model`); any model
            following the contract of `keras_mtl.models` works.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = (model_fn or build_model)(config)
        weighting_name = config.weighting.multi_task_type
        trainer = MultiTaskTrainer(
            model,
            weighting_name,
            weighting_config=config.weighting,
            semantic_classes=config.data.semantic_classes,
            class_weights=config.train.class_weights,
            weight_decay=config.train.weight_decay,
            seed=config.train.seed,
            depth_loss=config.train.depth_loss,
        )
        trainer.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            jit_compile=bool(config.train.jit_compile),
            run_eagerly=run_eagerly,
        )
        # Building the optimizer now roughly halves the first step's tracing time.
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def build_datasets(config: Config) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """(train, validation) datasets of `config` (train: img_resize; val: output_size)."""
    data, train = config.data, config.train
    if not Path(data.data_path).is_dir():
        raise UserError(
            f"--data_path {data.data_path}: no such folder (generate one with "
            "`python -m data_tools.synthetic` or point it at Cityscapes)"
        )
    common = dict(
        img_resize=tuple(data.img_resize),
        batch_size=int(train.batch_size),
        semantic_classes=data.semantic_classes,
        flow_dir=data.flow_dir,
        seed=train.seed,
        cache=data.cache,
    )
    train_options = {
        "shuffle": data.shuffle,
        "augment_data": data.augment,
        "zoom": data.augment_zoom,
    }
    train_ds = make_dataset(
        data.data_path, data.train_split, training=True, repeat=False, **train_options, **common
    )
    val_ds = make_dataset(
        data.data_path,
        data.val_split,
        training=False,
        output_size=tuple(data.output_size),
        repeat=False,
        **common,
    )
    return train_ds, val_ds


def load_trainer_state(trainer: MultiTaskTrainer, path: str | os.PathLike) -> int:
    """Loads model, optimizer, weighting state and epoch from a checkpoint; returns the epoch."""
    trainer.load_weights(str(path))
    return int(trainer.epoch_counter.numpy())


def describe_run(config: Config, strategy, trainer: MultiTaskTrainer) -> str:
    """One line: strategy, replicas, model GMACs (when the MAC counter is available)."""
    try:
        from keras_mtl.complexity import count_macs

        macs = f", {count_macs(trainer.model) / 1e9:.3f} GMACs at {tuple(config.data.img_resize)}"
    except Exception:  # noqa: BLE001  (the counter is informative only)
        macs = ""
    return (
        f"strategy {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s), "
        f"weighting {config.weighting.multi_task_type}, tasks {', '.join(trainer.task_names)}"
        f"{macs}"
    )


def per_class_iou(trainer: MultiTaskTrainer) -> dict[str, dict[str, float]]:
    """IoU of every class (percent) in the trainer's last validation pass, by task and class
    name, for the tasks validated with a `MeanIoU` (semantic, motion)."""
    results = {}
    for task in trainer.task_names:
        for metric in trainer.validation_metrics[task]:
            if isinstance(metric, MeanIoU):
                names = class_names(task, trainer.semantic_classes)
                values = metric.per_class_iou().numpy()
                results[task] = {n: float(v) for n, v in zip(names, values, strict=True)}
    return results


def run_training(
    config: Config,
    strategy: tf.distribute.Strategy | None = None,
    datasets: tuple | None = None,
    run_eagerly: bool = False,
    verbose: int | str = "auto",
    model_fn: Callable[[Config], keras.Model] | None = None,
) -> dict:
    """Trains `config` end to end and writes the run folder.

    Args:
        config: resolved configuration.
        strategy: default `select_strategy(config.train.gpus, config.train.cpu_replicas)`.
        datasets: optional (train, val) datasets instead of `build_datasets(config)`.
        run_eagerly: debug / tests.
        verbose: Keras fit verbosity.
        model_fn: model factory (see `build_trainer`).

    Returns:
        A plain dict, also written to `SAVE_PATH/results.json`: `final` and `best` (with its
        `epoch`), the validation metrics of the last epoch and of the best epoch by the pivot
        metric; `epochs`; `per_class_iou`, `{task: {class name: IoU %}}` of the last
        validation epoch run by this call (semantic and motion; empty when it trained no
        epoch); `files`, the paths of the run folder's outputs (`logs` is a folder).

    Raises:
        UserError: bad configuration, nothing to resume, or a NaN loss (naming the task).
    """
    train = config.train
    save_path = Path(train.save_path)
    checkpoint = save_path / CHECKPOINT_NAME
    pivot_metric = pivot_metric_of(train)
    if train.resume and not checkpoint.is_file():
        raise UserError(f"--resume: nothing to resume, {checkpoint} does not exist")
    if train.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICIES[train.mixed_precision])
    keras.utils.set_random_seed(train.seed)
    if strategy is None:
        strategy = select_strategy(train.gpus, train.cpu_replicas)
    if datasets is None:
        train_ds, val_ds = build_datasets(config)
        if not train.resume:
            config = resolve_depth_init(config)
    else:
        train_ds, val_ds = datasets
    steps_per_epoch = train.steps_per_epoch
    if steps_per_epoch is None:
        cardinality = int(train_ds.cardinality())
        if cardinality <= 0:
            raise UserError(
                "--steps_per_epoch: the training dataset has no known length; give a number"
            )
        steps_per_epoch = cardinality
    elif int(train_ds.cardinality()) != tf.data.INFINITE_CARDINALITY:
        train_ds = train_ds.repeat()
    trainer = build_trainer(
        config, strategy, steps_per_epoch, run_eagerly=run_eagerly, model_fn=model_fn
    )
    print(describe_run(config, strategy, trainer), flush=True)

    initial_epoch = 0
    if train.resume:
        initial_epoch = load_trainer_state(trainer, checkpoint)
        truncate_history(save_path / HISTORY_NAME, initial_epoch)
        print(f"resuming from {checkpoint} after epoch {initial_epoch}", flush=True)
    else:
        save_path.mkdir(parents=True, exist_ok=True)
        # A new run in an old folder: its history, best model and pictures must not outlive it.
        for stale in (HISTORY_NAME, BEST_MODEL_NAME, PREDICTIONS_NAME, RESULTS_NAME):
            if (save_path / stale).exists():
                (save_path / stale).unlink()
    config.save(save_path / RUN_CONFIG_NAME)

    guard = NaNGuard(trainer.task_names)
    callbacks = [
        guard,
        WeightingEpochEnd(guard),
        RunArtifacts(save_path, pivot_metric, trainer.task_names, guard),
        keras.callbacks.TensorBoard(log_dir=str(save_path / LOGS_DIR), write_graph=False),
    ]
    pictures = None
    try:
        sample = next(iter(val_ds.take(1)))
        sample = tf.nest.map_structure(lambda x: x.numpy(), sample)
        pictures = PredictionImages(save_path / LOGS_DIR, sample, config.data.semantic_classes)
        callbacks.append(pictures)
    except StopIteration:  # an empty validation split: no pictures
        pass
    validated = False
    if initial_epoch < train.epochs:
        history = trainer.fit(
            train_ds,
            validation_data=val_ds,
            epochs=train.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=train.val_steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset shuffles itself
        )
        validated = any(key.startswith("val_") for key in history.history)
    if guard.failure:
        raise UserError(
            f"training stopped: {guard.failure}; the last good checkpoint is {checkpoint} "
            "(lower --lr or check the data, then --resume)"
        )

    if pictures is not None:
        write_prediction_picture(save_path / PREDICTIONS_NAME, pictures.grids(trainer))
    summary = summarize_history(save_path / HISTORY_NAME, pivot_metric)
    summary["per_class_iou"] = per_class_iou(trainer) if validated else {}
    outputs = (RUN_CONFIG_NAME, CHECKPOINT_NAME, BEST_MODEL_NAME, HISTORY_NAME, LOGS_DIR)
    outputs += (PREDICTIONS_NAME, RESULTS_NAME)
    summary["files"] = [
        str(save_path / name)
        for name in outputs
        if name == RESULTS_NAME or (save_path / name).exists()
    ]
    write_json_atomic(save_path / RESULTS_NAME, summary)
    return summary
