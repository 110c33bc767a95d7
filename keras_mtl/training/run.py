"""Running a training: build the model, trainer and datasets, fit, and write the run folder.

`run_training(config)` is what train.py runs. The run folder (`train.save_path`) receives
every epoch `history.csv`, `model_best.keras`, `config.yaml` and `checkpoint.keras`
(`keras_mtl.training.callbacks.RunArtifacts`) and TensorBoard logs under `logs/`, and at the
end `predictions.png` (prediction grids of a few validation frames) and `results.json` (the
returned summary).

Under `TF_CONFIG` (several workers, `MultiWorkerMirroredStrategy`) only the chief writes the run
folder; every other worker runs the same callbacks (saving may involve collectives) into a
temporary folder of its own, removed when it ends. Each worker reads its own shard of every
global batch (`--batch_size` per worker; global batch = batch size x workers). The chief marks
the folder `backup.json` with every checkpoint and removes the mark when training ends: workers
restarted with the same command after one of them died resume from that checkpoint (model,
optimizer, weighting state, epoch) without `--resume`, as `keras.callbacks.BackupAndRestore`
does. The folder must be one that every worker can read (a shared file system).

The folder belongs to one run at a time (`RunLock`, `run.lock` with the owner's PID and host);
a run starting in it first deletes the temp files of atomic writes a killed run left behind. A
new run in a folder with an earlier run's results needs `--overwrite` (or `--resume`), and the
earlier files stay until the new run has written its first epoch. A NaN or infinite value of
anything the run saves stops it with one line (`NaNGuard`); what is on disk is then the last
finite epoch.

Example:

```python
config = load_config("configs/synthetic.yaml", overrides={"epochs": 2})
results = run_training(config)  # {"final", "best", "epochs", "per_class_iou", "files"}
```
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from keras_mtl.checkpoints import initialise_from_checkpoint
from keras_mtl.config import (
    MIXED_PRECISION_POLICIES,
    RUN_CONFIG_NAME,
    Config,
    TrainConfig,
    load_config,
)
from keras_mtl.data import layout
from keras_mtl.data.pipeline import UNDECODABLE, list_stems, make_dataset, median_depth
from keras_mtl.errors import UserError, bad_input_report
from keras_mtl.io import remove_partial_writes, write_json_atomic
from keras_mtl.metrics import MeanIoU
from keras_mtl.models import build_multitask_model, build_single_task_model
from keras_mtl.models.pretrained import describe_report
from keras_mtl.tasks import TASK_NAMES, TASKS, class_names
from keras_mtl.training.callbacks import (
    BACKUP_NAME,
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
from keras_mtl.training.strategy import WorkerRole, select_strategy, worker_role
from keras_mtl.training.trainer import MultiTaskTrainer

try:  # POSIX: the lock is an flock, released by the kernel when its owner dies
    import fcntl
except ImportError:  # elsewhere: the owner's PID is checked instead
    fcntl = None

LOGS_DIR = "logs"
PREDICTIONS_NAME = "predictions.png"
RESULTS_NAME = "results.json"
PRETRAINED_REPORT_NAME = "pretrained.json"  # --pretrained: what was copied, from which file
LOCK_NAME = "run.lock"
# The files whose presence means that the folder holds an earlier run's results.
RESULT_NAMES = (CHECKPOINT_NAME, BEST_MODEL_NAME, HISTORY_NAME, RESULTS_NAME, PREDICTIONS_NAME)


class RunLock:
    """Ownership of a run folder by one process: `run.lock`, holding the owner's PID and host.

    The file is locked with `flock`, which the kernel releases when its owner dies however it
    dies (kill -9 included), so a lock file whose lock is free belongs to a run that is gone:
    it is taken over with a warning. Where `flock` is missing, the recorded PID is checked
    instead (same host only).

    Args:
        folder: the run folder (created if needed).
        flag: the flag that named the folder, for messages.

    Attributes:
        taken_over: the stale owner's description when a dead run's lock was taken over.

    Example:

    ```python
    with RunLock("runs/a"):
        ...  # nobody else writes into runs/a meanwhile
    ```
    """

    def __init__(self, folder: str | os.PathLike, flag: str = "--save_path") -> None:
        self.folder = Path(folder)
        self.flag = flag
        self.path = self.folder / LOCK_NAME
        self.handle: int | None = None
        self.taken_over: str | None = None

    def acquire(self) -> RunLock:
        """Takes the lock; raises `UserError` naming the owner when a live run holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"{self.flag} {self.folder}: cannot create the folder ({error.strerror or error})"
            ) from None
        while True:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._lock(handle):
                    raise UserError(
                        f"{self.flag} {self.folder}: another run is using this folder "
                        f"({self._describe(self._read(handle))}); wait for it to end or choose "
                        f"another {self.flag} (if that run is gone, delete {self.path})"
                    )
                # A releasing owner deletes the file while still holding its lock: the file
                # locked here must be the one at the path, or another run may create a new one.
                try:
                    current = os.path.samestat(os.fstat(handle), os.stat(self.path))
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(handle)
                raise
            if current:
                break
            os.close(handle)
        previous = self._read(handle)
        if previous:
            self.taken_over = self._describe(previous)
            print(
                f"warning: {self.flag} {self.folder}: taking over the lock of a run that is gone "
                f"({self.taken_over})",
                file=sys.stderr,
                flush=True,
            )
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, (json.dumps(owner) + "\n").encode(), 0)
        os.fsync(handle)
        self.handle = handle
        return self

    def release(self) -> None:
        """Deletes the lock file and gives the lock up (in that order, see `acquire`)."""
        if self.handle is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.handle)
            self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _lock(self, handle: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        owner = self._read(handle)  # no flock here: is the recorded owner alive?
        if not owner:
            return True
        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(owner.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (OSError, ValueError):
            return False
        return False  # the recorded owner is alive

    @staticmethod
    def _read(handle: int) -> dict:
        text = os.pread(handle, 4096, 0).decode(errors="replace").strip()
        if not text:
            return {}
        try:
            owner = json.loads(text)
        except json.JSONDecodeError:
            return {"unreadable": text[:80]}
        return owner if isinstance(owner, dict) else {"unreadable": text[:80]}

    @staticmethod
    def _describe(owner: dict) -> str:
        if not owner:
            return "owner unknown"
        if "unreadable" in owner:
            return f"lock file reads {owner['unreadable']!r}"
        started = f", started {owner['started']}" if owner.get("started") else ""
        return f"PID {owner.get('pid', '?')} on host {owner.get('host', '?')}{started}"


def earlier_run_files(save_path: str | os.PathLike) -> list[Path]:
    """Files an earlier run left in `save_path`: its outputs, config and TensorBoard events.

    Example:

    ```python
    earlier_run_files("runs/a")  # [Path("runs/a/checkpoint.keras"), ...]
    ```
    """
    save_path = Path(save_path)
    names = (*RESULT_NAMES, RUN_CONFIG_NAME)
    files = [save_path / name for name in names if (save_path / name).is_file()]
    logs = save_path / LOGS_DIR
    if logs.is_dir():
        files += sorted(path for path in logs.rglob("*") if path.is_file())
    return files


def check_run_folder(train: TrainConfig) -> list[Path]:
    """Checks that the run may write into its folder; returns the earlier files it replaces.

    Call it holding the folder's lock.

    Raises:
        UserError: `--resume` with `--overwrite`, nothing to resume, or a new run in a folder
            holding an earlier run's results without `--overwrite`.
    """
    save_path = Path(train.save_path)
    if train.resume and train.overwrite:
        raise UserError(
            "--resume and --overwrite: give one; --resume continues the run in --save_path, "
            "--overwrite starts a new one there"
        )
    if train.resume:
        if not (save_path / CHECKPOINT_NAME).is_file():
            raise UserError(
                f"--resume: nothing to resume, {save_path / CHECKPOINT_NAME} does not exist"
            )
        return []
    results = [name for name in RESULT_NAMES if (save_path / name).exists()]
    if results and not train.overwrite:
        raise UserError(
            f"--save_path {save_path} holds an earlier run's results ({', '.join(results)}): "
            "pass --resume to continue that run, --overwrite to start a new one there (the "
            "earlier files stay until the new run has written its first epoch), or choose "
            "another --save_path"
        )
    return earlier_run_files(save_path)


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
    """The functional model of `config` (multi-task, or single-task with `train.single_task`),
    initialised from `model.pretrained` when given (not on resume); the initialisation report
    is printed and written to `SAVE_PATH/pretrained.json` when that folder exists."""
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
    # A resumed run's checkpoint replaces every weight: no need to fetch the pretrained ones.
    if model_config.pretrained and not config.train.resume:
        report = initialise_from_checkpoint(model, model_config.pretrained)
        print(describe_report(report), flush=True)
        # The per-layer report (and the weights file's path and hash) beside config.yaml.
        if Path(config.train.save_path).is_dir():
            write_json_atomic(Path(config.train.save_path) / PRETRAINED_REPORT_NAME, report)
    return model


def resolve_depth_init(config: Config) -> Config:
    """`config` with `model.depth_init` measured from the training split when the log depth
    head needs it and none is given (the value is then saved in the run's config.yaml)."""
    model_config = config.model
    trains_depth = config.train.single_task in (None, "depth")
    if model_config.depth_head != "log" or model_config.depth_init is not None or not trains_depth:
        return config
    data = config.data
    value = median_depth(
        data.data_path, data.train_split, data.semantic_classes, data.flow_dir, labels=data.labels
    )
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


def build_datasets(
    config: Config, first_batch: int = 0, strategy: tf.distribute.Strategy | None = None
) -> tuple:
    """(train, validation) datasets of `config` (train: img_resize; val: output_size).

    The training dataset is the endless stream of `keras_mtl.data.pipeline.make_dataset`
    (shuffling and augmentation drawn from the seed and the sample index), started at
    `first_batch`; the validation dataset is the split once, in order.

    Under a multi-worker `strategy` the global batch is `--batch_size` x workers: the training
    dataset is a `tf.distribute.DistributedDataset` in which each worker builds and decodes
    only its own block of every global batch (`make_dataset(shard_index=, num_shards=)`),
    split further over the worker's GPUs; the global batches are those one process with the
    global batch size reads. Validation reads the split in global batches with the auto-shard
    policy set to DATA (each worker evaluates its part of every batch; Keras all-reduces the
    metrics over the workers).

    Args:
        config: the run configuration.
        first_batch: the first training batch (a resumed run: epochs done x steps per epoch).
        strategy: the run's strategy (default: the current one); only a multi-worker one
            changes anything.

    Example:

    ```python
    train_ds, val_ds = build_datasets(config)
    ```
    """
    data, train = config.data, config.train
    check_data_path(data.data_path)
    strategy = strategy or tf.distribute.get_strategy()
    role = worker_role(strategy)
    common = dict(
        img_resize=tuple(data.img_resize),
        batch_size=int(train.batch_size),
        semantic_classes=data.semantic_classes,
        flow_dir=data.flow_dir,
        seed=train.seed,
        cache=data.cache,
        skip_bad_frames=data.skip_bad_frames,
        labels=data.labels,
    )
    train_options = {
        "shuffle": data.shuffle,
        "augment_data": data.augment,
        "zoom": data.augment_zoom,
        "first_batch": first_batch,
        # Partial labels: refuse a task with too few labelled frames before training.
        "min_labelled_frames": data.min_labelled_frames,
        "trained_tasks": (train.single_task,) if train.single_task else None,
    }
    if not role.multi_worker:
        train_ds = make_dataset(
            data.data_path, data.train_split, training=True, repeat=True, **train_options, **common
        )
    else:
        train_ds = _worker_shards(strategy, role, config, {**common, **train_options})
        common["batch_size"] = int(train.batch_size) * role.count
    val_ds = make_dataset(
        data.data_path,
        data.val_split,
        training=False,
        output_size=tuple(data.output_size),
        repeat=False,
        **common,
    )
    if role.multi_worker:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        val_ds = val_ds.with_options(options)
    return train_ds, val_ds


def _worker_shards(strategy, role: WorkerRole, config: Config, options: dict):
    """The training stream of a multi-worker job: each worker's own block of every global
    batch, cut into per-replica batches for the worker's replicas (see `build_datasets`)."""
    local_replicas = max(1, strategy.num_replicas_in_sync // role.count)
    batch_size = int(config.train.batch_size)
    if batch_size % local_replicas:
        raise UserError(
            f"--batch_size {batch_size}: the batch of each worker must divide evenly over its "
            f"{local_replicas} replicas"
        )
    data = config.data

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make_dataset(
            data.data_path,
            data.train_split,
            training=True,
            repeat=True,
            shard_index=context.input_pipeline_id,
            num_shards=context.num_input_pipelines,
            **options,
        )
        if local_replicas > 1:  # consecutive per-replica batches go to the local replicas
            dataset = dataset.rebatch(batch_size // local_replicas)
        return dataset

    return strategy.distribute_datasets_from_function(dataset_fn)


def check_data_path(data_path: str | os.PathLike) -> None:
    """Raises a one-line `UserError` when `--data_path` is not a folder."""
    if not Path(data_path).is_dir():
        raise UserError(
            f"--data_path {data_path}: no such folder (generate one with "
            "`python -m data_tools.synthetic` or point it at Cityscapes)"
        )


def steps_per_epoch_of(config: Config, workers: int = 1) -> int:
    """`--steps_per_epoch`, or one pass over the training split (whole batches) when None.

    Args:
        config: the run configuration.
        workers: workers of a multi-worker job (the global batch is `--batch_size` x workers).

    Raises:
        UserError: the training split holds fewer frames than a (global) batch.
    """
    data, train = config.data, config.train
    if train.steps_per_epoch is not None:
        return int(train.steps_per_epoch)
    frames = len(
        list_stems(
            data.data_path, data.train_split, data.flow_dir, data.semantic_classes, data.labels
        )
    )
    global_batch = int(train.batch_size) * workers
    if frames < global_batch:
        across = f" x {workers} workers" if workers > 1 else ""
        raise UserError(
            f"--data_path {data.data_path}, split {data.train_split!r}: {frames} frame(s) make "
            f"no full batch of --batch_size {train.batch_size}{across}; lower the batch size or "
            "add frames"
        )
    return frames // global_batch


def data_error(error: BaseException, skip_flag: bool = True) -> UserError | None:
    """A `UserError` with the bad-input line a TensorFlow error carries, or None.

    Args:
        error: an error out of the input pipeline (e.g. `fit`'s `InvalidArgumentError`).
        skip_flag: add the hint that `--skip_bad_frames` skips undecodable frames.
    """
    report = bad_input_report(error)
    if report is None:
        return None
    if skip_flag and UNDECODABLE in report:
        report += "; or pass --skip_bad_frames to leave such frames out"
    return UserError(report)


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
    role = worker_role(strategy)
    workers = ""
    if role.multi_worker:
        chief = ", the chief" if role.chief else ""
        workers = (
            f" on {role.count} workers (this is worker {role.index}{chief}), global batch "
            f"{config.train.batch_size * role.count}"
        )
    return (
        f"strategy {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)"
        f"{workers}, weighting {config.weighting.multi_task_type}, tasks {', '.join(trainer.task_names)}"
        f"{macs}"
    )


def labelled_frames_of(config: Config) -> dict[str, dict]:
    """`{split: {"frames": N, task: frames with the task's label}}` of the training and
    validation splits (`--labels partial`; see `keras_mtl.data.layout.SplitScan.coverage`)."""
    data = config.data
    counts = {}
    for split in dict.fromkeys((data.train_split, data.val_split)):
        scan = layout.scan_split(
            data.data_path, split, data.semantic_classes, data.flow_dir, data.labels
        )
        counts[split] = {"frames": len(scan.frames), **scan.coverage}
    return counts


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
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains `config` end to end and writes the run folder.

    Args:
        config: resolved configuration.
        strategy: default `select_strategy(config.train.gpus, config.train.cpu_replicas)`.
        datasets: optional (train, val) datasets instead of `build_datasets(config)`, used as
            given (a finite training dataset is repeated); a resumed run then sees them from
            their start, so only the built datasets resume exactly.
        run_eagerly: debug / tests.
        verbose: Keras fit verbosity.
        model_fn: model factory (see `build_trainer`).
        callbacks: more Keras callbacks, run after the run's own.

    Returns:
        A plain dict, also written to `SAVE_PATH/results.json`: `final` and `best` (with its
        `epoch`), the validation metrics of the last epoch and of the best epoch by the pivot
        metric; `epochs`; `per_class_iou`, `{task: {class name: IoU %}}` of the last
        validation epoch run by this call (semantic and motion; empty when it trained no
        epoch); `files`, the paths of the run folder's outputs (`logs` is a folder).

    Raises:
        UserError: bad configuration, a folder another run holds, nothing to resume, earlier
            results without `--overwrite`, a frame that does not decode (named), or a NaN or
            infinite value (naming what diverged and the epoch; the files on disk are then
            those of the last finite epoch).

    Example:

    ```python
    results = run_training(load_config("configs/synthetic.yaml", {"save_path": "runs/a"}))
    ```
    """
    train = config.train
    save_path = Path(train.save_path)
    checkpoint = save_path / CHECKPOINT_NAME
    pivot_metric = pivot_metric_of(train)
    if train.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICIES[train.mixed_precision])
    keras.utils.set_random_seed(train.seed)
    if strategy is None:
        strategy = select_strategy(train.gpus, train.cpu_replicas)
    # A multi-worker strategy exists once every worker has joined: nobody has written anything
    # yet, so every worker reads the same folder state and takes the same decisions below.
    role = worker_role(strategy)
    if role.multi_worker:
        config = resume_from_backup(config)
        train = config.train
    if train.resume and not checkpoint.is_file():
        raise UserError(f"--resume: nothing to resume, {checkpoint} does not exist")
    if datasets is None:
        check_data_path(config.data.data_path)
    if role.chief:
        folder = save_path
    else:
        # TensorFlow's rule: the other workers save too (saving may run collectives), into a
        # folder of their own that is removed afterwards.
        folder = Path(tempfile.mkdtemp(prefix=f"keras_mtl_worker{role.index}_"))
    try:
        with RunLock(folder):
            # Every worker checks the chief's folder, so that all stop with the same line.
            replaces = check_run_folder(train)
            if not role.chief:
                replaces = []
            for path in remove_partial_writes(folder):
                print(f"removed {path}, left by an interrupted write", flush=True)
            try:
                return _train_in_folder(
                    config,
                    strategy,
                    pivot_metric,
                    datasets,
                    run_eagerly,
                    verbose,
                    model_fn,
                    callbacks,
                    replaces,
                    folder,
                )
            except Exception as error:  # an input-pipeline error names its file: one line
                user_error = data_error(error)
                if user_error is None:
                    raise
                raise user_error from None
    finally:
        if folder != save_path:
            shutil.rmtree(folder, ignore_errors=True)


def resume_from_backup(config: Config) -> Config:
    """`config` set to resume when its run folder holds the backup of an interrupted run.

    A multi-worker job restarted after a worker died (by hand or by a cluster manager) runs
    the same command again: with the chief's `backup.json` and `checkpoint.keras` in
    `--save_path`, it continues from that checkpoint (model, optimizer, weighting state,
    epoch) as `--resume` would, instead of refusing the folder. `--overwrite` starts anew.
    The log depth head's `depth_init` is the run's own (from its config.yaml).

    Example:

    ```python
    config = resume_from_backup(config)  # config.train.resume is True after an interruption
    ```
    """
    train = config.train
    save_path = Path(train.save_path)
    backup, checkpoint = save_path / BACKUP_NAME, save_path / CHECKPOINT_NAME
    if train.resume or train.overwrite or not (backup.is_file() and checkpoint.is_file()):
        return config
    model = config.model
    saved_path = save_path / RUN_CONFIG_NAME
    if saved_path.is_file():
        model = dataclasses.replace(model, depth_init=load_config(saved_path).model.depth_init)
    print(f"resuming from the backup of an interrupted run in {save_path}", flush=True)
    return dataclasses.replace(
        config, model=model, train=dataclasses.replace(train, resume=True, overwrite=False)
    )


def _train_in_folder(
    config: Config,
    strategy: tf.distribute.Strategy,
    pivot_metric: str,
    datasets: tuple | None,
    run_eagerly: bool,
    verbose: int | str,
    model_fn: Callable[[Config], keras.Model] | None,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    replaces: list[Path],
    folder: Path,
) -> dict:
    """`run_training` once its folder is locked and checked (see there); writes go to
    `folder` (the run folder, or a worker's temporary one), resuming reads the run folder."""
    train = config.train
    role = worker_role(strategy)
    checkpoint = Path(train.save_path) / CHECKPOINT_NAME
    save_path = folder
    if datasets is None:
        steps_per_epoch = steps_per_epoch_of(config, role.count)
        if not train.resume:
            config = resolve_depth_init(config)
    else:
        train_ds, val_ds = datasets
        steps_per_epoch = train.steps_per_epoch
        if steps_per_epoch is None:
            steps_per_epoch = int(train_ds.cardinality())
            if steps_per_epoch <= 0:
                raise UserError(
                    "--steps_per_epoch: the training dataset has no known length; give a number"
                )
        if int(train_ds.cardinality()) != tf.data.INFINITE_CARDINALITY:
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
    if role.multi_worker:
        check_workers_agree(strategy, initial_epoch, checkpoint)
    if datasets is None:
        # The stream from the first batch not yet trained on: what the uninterrupted run sees.
        train_ds, val_ds = build_datasets(
            config, first_batch=initial_epoch * steps_per_epoch, strategy=strategy
        )
    if train.val_steps is not None:
        # The first val_steps batches every epoch (Keras would go on where the last epoch
        # stopped, so a resumed run would validate on other batches).
        val_ds = val_ds.take(train.val_steps)

    guard = NaNGuard(trainer.task_names)
    saved_config = dataclasses.replace(
        config, train=dataclasses.replace(train, overwrite=False, resume=False)
    )
    artifacts = RunArtifacts(
        save_path,
        pivot_metric,
        trainer.task_names,
        guard,
        saved_config,
        replaces,
        backup=role.multi_worker,
    )
    callbacks = [
        guard,
        WeightingEpochEnd(guard),
        artifacts,
        keras.callbacks.TensorBoard(log_dir=str(save_path / LOGS_DIR), write_graph=False),
    ]
    pictures = None
    try:
        sample = next(iter(val_ds.take(1)))
        # (inputs, targets): without the label masks of --labels partial.
        sample = tf.nest.map_structure(lambda x: x.numpy(), tuple(sample[:2]))
        pictures = PredictionImages(
            save_path / LOGS_DIR, sample, config.data.semantic_classes, guard=guard
        )
        callbacks.append(pictures)
    except StopIteration:  # an empty validation split: no pictures
        pass
    callbacks += list(extra_callbacks)
    validated = False
    if initial_epoch < train.epochs:
        with warnings.catch_warnings():
            # The training stream never ends; a validation split of unknown length (bad frames
            # skipped) ends each epoch with Keras' "Your input ran out of data; interrupting
            # training", which would be wrong here.
            warnings.filterwarnings("ignore", "Your input ran out of data", UserWarning)
            history = trainer.fit(
                train_ds,
                validation_data=val_ds,
                epochs=train.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the dataset shuffles itself
            )
        validated = any(key.startswith("val_") for key in history.history)
    # Training ended (finished or stopped by the guard), not interrupted: nothing to restore.
    (save_path / BACKUP_NAME).unlink(missing_ok=True)
    if guard.failure:
        if artifacts.saved_epoch is not None or train.resume:
            epoch = artifacts.saved_epoch or initial_epoch
            kept = (
                f"the files in {save_path} are those of epoch {epoch}, the last finite one "
                f"(lower --lr or check the data, then --resume)"
            )
        elif replaces:
            kept = (
                f"no epoch of this run ended finite, so it saved nothing; the earlier run's "
                f"files in {save_path} are untouched (lower --lr or check the data)"
            )
        else:
            kept = "no epoch ended finite, so nothing was saved (lower --lr or check the data)"
        raise UserError(f"training stopped: {guard.failure}; {kept}")

    if pictures is not None:
        write_prediction_picture(save_path / PREDICTIONS_NAME, pictures.grids(trainer))
    summary = summarize_history(save_path / HISTORY_NAME, pivot_metric)
    summary["per_class_iou"] = per_class_iou(trainer) if validated else {}
    if config.data.labels == "partial":
        # Each task is trained and validated over the frames that have its label: say how many.
        summary["labelled_frames"] = labelled_frames_of(config)
    outputs = (RUN_CONFIG_NAME, CHECKPOINT_NAME, BEST_MODEL_NAME, HISTORY_NAME, LOGS_DIR)
    outputs += (PREDICTIONS_NAME, RESULTS_NAME)
    summary["files"] = [
        str(save_path / name)
        for name in outputs
        if name == RESULTS_NAME or (save_path / name).exists()
    ]
    write_json_atomic(save_path / RESULTS_NAME, summary)
    if not role.chief:
        summary["files"] = []  # this worker's folder is removed: the chief's holds the run
    return summary


def check_workers_agree(
    strategy: tf.distribute.Strategy, initial_epoch: int, checkpoint: str | os.PathLike
) -> None:
    """Raises `UserError` when the workers of a job would start from different epochs.

    That happens when a worker cannot see the chief's run folder (no shared file system): it
    would start afresh while the chief resumes, and the job would train on mixed states.

    Args:
        strategy: the multi-worker strategy (every worker calls this, it runs a collective).
        initial_epoch: the epoch this worker resumes after (0: a new run).
        checkpoint: the checkpoint resumed from, for the message.
    """
    value = tf.constant([float(initial_epoch)])

    def every_replica():
        return tf.distribute.get_replica_context().all_gather(value, axis=0)

    gathered = strategy.experimental_local_results(strategy.run(tf.function(every_replica)))[0]
    highest, lowest = float(tf.reduce_max(gathered)), float(tf.reduce_min(gathered))
    if highest != lowest:
        raise UserError(
            f"--save_path {Path(checkpoint).parent}: the workers start from different epochs "
            f"({int(lowest)} to {int(highest)}): every worker must read the chief's run folder "
            f"(a shared file system), or copy {Path(checkpoint).name} there before restarting"
        )
