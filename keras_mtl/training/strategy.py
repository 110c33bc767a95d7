"""Distribution: choosing the strategy, the workers' roles, and the replica arithmetic.

`select_strategy` maps `--gpus` / `--cpu_replicas` / `TF_CONFIG` to a `tf.distribute.Strategy`
(`TF_CONFIG` -> `MultiWorkerMirroredStrategy` over every worker's GPUs, or its CPU);
`parse_tf_config` checks `TF_CONFIG` first, so a malformed one is one line naming it;
`worker_role` says which worker a process is (only the chief writes the run folder);
`replicas_in_sync` and `overflow_on_any_replica` are what the trainer needs inside a replica.

Example:

```python
strategy = select_strategy(gpus=(0, 1))  # MirroredStrategy over two GPUs
with strategy.scope():
    trainer = build_trainer(config, strategy)
role = worker_role(strategy)  # WorkerRole(index=0, count=1, chief=True) on one machine
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from keras_mtl.errors import UserError

# What a correct TF_CONFIG looks like, for messages.
TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
)
# Job names TensorFlow's multi-worker runtime gives a meaning to.
_CLUSTER_JOBS = ("chief", "worker", "evaluator", "ps")


def parse_tf_config(text: str | None = None) -> dict | None:
    """The cluster description in `TF_CONFIG`, checked; None when it is unset or empty.

    TensorFlow's own reading of a malformed `TF_CONFIG` fails deep inside the runtime (or
    waits forever for a worker that cannot exist); this check names what is wrong first.

    Args:
        text: the JSON text (default: the `TF_CONFIG` environment variable).

    Returns:
        The parsed dict: `cluster` (job -> list of "host:port") and `task` (`type`, `index`).

    Raises:
        UserError: one line naming TF_CONFIG, what is wrong and the shape it must have.

    Example:

    ```python
    parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", '
                    '"index": 1}}')["task"]["index"]  # 1
    ```
    """
    text = os.environ.get("TF_CONFIG", "") if text is None else text
    if not text.strip():
        return None

    def bad(problem: str) -> UserError:
        return UserError(f"TF_CONFIG: {problem}; set it to JSON like {TF_CONFIG_EXAMPLE}")

    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise bad(f"not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, Mapping):
        raise bad(f"must be a JSON object, got {type(config).__name__}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, Mapping) or not cluster:
        raise bad('no "cluster" object listing the workers\' addresses')
    for job, addresses in cluster.items():
        if job not in _CLUSTER_JOBS:
            raise bad(f'unknown job {job!r} in "cluster" (use {", ".join(_CLUSTER_JOBS)})')
        if isinstance(addresses, str) or not isinstance(addresses, Sequence) or not addresses:
            raise bad(f'cluster job {job!r} must be a non-empty list of "host:port" strings')
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit():
                raise bad(f'cluster job {job!r}: {address!r} is not "host:port"')
    if "chief" in cluster and len(cluster["chief"]) != 1:
        raise bad('cluster job "chief" must list exactly one address')
    if not isinstance(task, Mapping):
        raise bad('no "task" object saying which of the cluster\'s tasks this process is')
    job, index = task.get("type"), task.get("index")
    if job not in cluster:
        raise bad(f'task type {job!r} is not a job of "cluster" ({", ".join(cluster)})')
    if isinstance(index, bool) or not isinstance(index, int):
        raise bad(f"task index {index!r} must be an integer")
    if not 0 <= index < len(cluster[job]):
        raise bad(
            f"task index {index} is out of range: job {job!r} lists "
            f"{len(cluster[job])} address(es), so 0..{len(cluster[job]) - 1}"
        )
    return dict(config)


@dataclass(frozen=True)
class WorkerRole:
    """Which worker of a (multi-worker) job this process is.

    Attributes:
        index: this worker's position among the workers that train (0 = chief on one machine).
        count: number of workers that train (1 without `TF_CONFIG`).
        chief: whether this worker writes the run folder (TensorFlow's rule: the `chief` task,
            or worker 0 when the cluster names no chief).
    """

    index: int = 0
    count: int = 1
    chief: bool = True

    @property
    def multi_worker(self) -> bool:
        """True when more than one process trains together."""
        return self.count > 1


def worker_role(strategy: tf.distribute.Strategy | None = None) -> WorkerRole:
    """This process's `WorkerRole` under `strategy` (default: the current strategy).

    Example:

    ```python
    if worker_role(strategy).chief:
        print("this worker writes runs/a")
    ```
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return WorkerRole()
    spec = resolver.cluster_spec().as_dict()
    if not spec:  # a MultiWorkerMirroredStrategy without a cluster: one local worker
        return WorkerRole()
    jobs = [job for job in ("chief", "worker") if job in spec]
    count = sum(len(spec[job]) for job in jobs)
    job, task_id = resolver.task_type, int(resolver.task_id or 0)
    # The chief (if any) comes first, then the workers in order, as the runtime counts them.
    index = task_id if job == "chief" else len(spec.get("chief", ())) + task_id
    chief = job == "chief" or ("chief" not in spec and job == "worker" and task_id == 0)
    return WorkerRole(index=index, count=count, chief=chief)


def select_strategy(gpus: Sequence[int] = (), cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """Chooses the distribution strategy.

    `TF_CONFIG` set -> MultiWorkerMirroredStrategy (the job's workers together, each over its
    GPUs: `gpus`, or all it sees; its CPU without GPUs); else `gpus` -> MirroredStrategy over
    those GPUs; `cpu_replicas` N >= 2 -> MirroredStrategy over N logical CPU devices (testing
    the distributed path without GPUs; must run before any op); else the default strategy.

    Args:
        gpus: GPU ids (`--gpus`).
        cpu_replicas: number of logical CPU replicas (`--cpu_replicas`).

    Raises:
        UserError: a malformed `TF_CONFIG`, unknown GPU ids (the message lists the available
            ones), logical CPUs requested after TensorFlow has started or with `TF_CONFIG`.

    Example:

    ```python
    strategy = select_strategy(cpu_replicas=2)  # two logical CPUs, before anything else runs
    ```
    """
    gpus = tuple(int(g) for g in gpus or ())
    if gpus and cpu_replicas:
        raise UserError("--gpus and --cpu_replicas: give one of them, not both")
    cluster = parse_tf_config()
    if cluster is not None:
        return _multi_worker_strategy(cluster, gpus, cpu_replicas)
    if gpus:
        physical = tf.config.list_physical_devices("GPU")
        available = list(range(len(physical)))
        unknown = [g for g in gpus if g not in available]
        if unknown:
            listed = ", ".join(str(i) for i in available) if available else "none"
            raise UserError(
                f"--gpus {' '.join(str(g) for g in gpus)}: no GPU with id "
                f"{', '.join(str(g) for g in unknown)}; available GPU ids: {listed}"
            )
        devices = [f"/gpu:{g}" for g in gpus]
        if len(devices) == 1:
            return tf.distribute.OneDeviceStrategy(devices[0])
        return tf.distribute.MirroredStrategy(devices)
    if cpu_replicas and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)]
            )
        except RuntimeError:
            current = tf.config.get_logical_device_configuration(cpu) or []
            if len(current) != cpu_replicas:
                raise UserError(
                    f"--cpu_replicas {cpu_replicas}: TensorFlow is already initialised with "
                    f"{max(len(current), 1)} CPU device(s); set it before anything else runs"
                ) from None
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:cpu_replicas]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def _multi_worker_strategy(
    cluster: dict, gpus: tuple[int, ...], cpu_replicas: int
) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from a checked TF_CONFIG, over this worker's `gpus`."""
    if cpu_replicas and cpu_replicas > 1:
        # The collective runtime takes one CPU device per worker; logical CPUs would be ignored.
        raise UserError(
            f"--cpu_replicas {cpu_replicas} with TF_CONFIG: a multi-worker job uses one CPU "
            "device per worker; drop --cpu_replicas (run more workers instead)"
        )
    if gpus:
        physical = tf.config.list_physical_devices("GPU")
        unknown = [g for g in gpus if g >= len(physical)]
        if unknown:
            raise UserError(
                f"--gpus {' '.join(str(g) for g in gpus)}: this worker has no GPU with id "
                f"{', '.join(str(g) for g in unknown)}; it has {len(physical)} GPU(s)"
            )
        # The strategy takes every visible GPU: hide the others (before TensorFlow starts).
        try:
            tf.config.set_visible_devices([physical[g] for g in gpus], "GPU")
        except RuntimeError:
            raise UserError(
                f"--gpus {' '.join(str(g) for g in gpus)} with TF_CONFIG: TensorFlow is already "
                "initialised; choose the GPUs before anything else runs (or set "
                "CUDA_VISIBLE_DEVICES)"
            ) from None
    task = cluster["task"]
    print(
        f"multi-worker: task {task['type']} {task['index']} of "
        f"{sum(len(a) for j, a in cluster['cluster'].items() if j in ('chief', 'worker'))} "
        "training worker(s) (TF_CONFIG)",
        flush=True,
    )
    return tf.distribute.MultiWorkerMirroredStrategy()


def reducible_logs(logs: dict) -> dict:
    """A step's logs in the shape Keras can reduce over the workers of a multi-worker job.

    Keras 3.15 reduces each log over a multi-worker job with `strategy.reduce("MEAN", v,
    axis=0)`, which fails on the scalars every other strategy takes ("Invalid reduction
    dimension 0 for input with 0 dimensions"); with a leading axis of 1 it is the mean over
    the replicas, a scalar again. Elsewhere the logs pass unchanged.

    Args:
        logs: log name -> scalar tensor, inside a replica of the current strategy.

    Example:

    ```python
    return reducible_logs(self.compute_metrics(x, y, y_pred, training=True))  # train_step
    ```
    """
    if not worker_role().multi_worker:
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def local_batch(strategy: tf.distribute.Strategy, batch: Any) -> Any:
    """The first local replica's part of a distributed batch (a plain batch as it is).

    For what needs only the batch's structure, shapes and dtypes: unlike
    `strategy.reduce`, it runs no collective and takes nested structures on every strategy.

    Example:

    ```python
    inputs, targets = local_batch(strategy, next(iter(distributed_dataset)))
    ```
    """

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(first, batch)


def replicas_in_sync(replica_context) -> int:
    """Number of replicas sharing the global batch (1 outside any strategy)."""
    return 1 if replica_context is None else int(replica_context.num_replicas_in_sync)


def overflow_on_any_replica(gradients: Sequence, replica_context) -> list:
    """The gradients, made non-finite on every replica when any replica's are non-finite.

    Keras' `LossScaleOptimizer` decides whether to skip a step from the first replica's
    gradients (it expects all-reduced ones); this step hands it per-replica gradients, so an
    fp16 overflow on another replica alone would be summed into the weights (or the replicas
    would take different branches around the optimizer's all-reduce). Shared, every replica
    skips the step and lowers the loss scale together.

    Args:
        gradients: this replica's gradients (None entries pass through).
        replica_context: the current replica context.
    """
    present = [g for g in gradients if g is not None]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])
    overflowed = replica_context.all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)
    )
    poison = tf.where(overflowed > 0.0, float("nan"), 0.0)
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in gradients]
