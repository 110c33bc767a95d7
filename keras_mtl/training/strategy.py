"""Distribution: choosing the strategy, and the replica arithmetic of the train step.

`select_strategy` maps `--gpus` / `--cpu_replicas` / `TF_CONFIG` to a `tf.distribute.Strategy`;
`replicas_in_sync` and `overflow_on_any_replica` are what the trainer needs inside a replica.

Example:

```python
strategy = select_strategy(gpus=(0, 1))  # MirroredStrategy over two GPUs
with strategy.scope():
    trainer = build_trainer(config, strategy)
```
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf

from keras_mtl.errors import UserError


def select_strategy(gpus: Sequence[int] = (), cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """Chooses the distribution strategy.

    `gpus` -> MirroredStrategy over those GPUs; `cpu_replicas` N >= 2 -> MirroredStrategy over N
    logical CPU devices (testing the distributed path without GPUs; must run before any op);
    `TF_CONFIG` set -> MultiWorkerMirroredStrategy; else the default strategy.

    Args:
        gpus: GPU ids (`--gpus`).
        cpu_replicas: number of logical CPU replicas (`--cpu_replicas`).

    Raises:
        UserError: unknown GPU ids (the message lists the available ones), or logical CPUs
            requested after TensorFlow has started.
    """
    gpus = tuple(int(g) for g in gpus or ())
    if gpus and cpu_replicas:
        raise UserError("--gpus and --cpu_replicas: give one of them, not both")
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
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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
