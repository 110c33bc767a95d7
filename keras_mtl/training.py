"""Training: the multi-task trainer, optimizer and schedule, strategy, callbacks, run loop.

`MultiTaskTrainer` is a `keras.Model` that wraps the functional network (`trainer.model`, the
only thing ever exported) and a `Weighting` (`trainer.weighting`). Its `train_step` follows the
call order of `keras_mtl/weighting/base.py`:

1. forward pass; per-task unweighted losses of the *global* batch (loss statistics are
   all-reduced over replicas, so N replicas compute what one device computes, see
   `keras_mtl.losses`);
2. `total = weighting.combine_losses(losses) + regularisation`, divided by the number of
   replicas before differentiating;
3. per-task gradient norms at the shared kernel or the shared features when the weighting asks,
   combined over replicas exactly; per-task gradients of the shared variables for PCGrad;
4. coupled L2 weight decay (`g += weight_decay * w`, as PyTorch's `Adam(weight_decay=...)`;
   the weighting's own variables, e.g. uncertainty's log-variances, are never decayed);
5. optimizer step, then `weighting.update(mean losses, grad_norms)`.

When a weighting needs per-task gradients, the backward pass is split at the boundary between
the shared trunk and the task decoders (found from the functional graph): one backward pass per
decoder gives each task's gradient at the boundary tensors, and one backward pass through the
trunk with the weighted sum of those gradients gives the trunk's gradient. This costs the same
as a plain backward pass, so per-task gradient norms come almost for free.

Example:

```python
config = load_config("configs/synthetic.yaml", overrides={"epochs": 2})
results = run_training(config)  # writes checkpoint.keras, model_best.keras, history.csv, logs/
```
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_mtl import losses as loss_lib
from keras_mtl.config import RUN_CONFIG_NAME, Config, TrainConfig, WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.io import save_atomic, write_text_atomic
from keras_mtl.tasks import TASK_NAMES, TASKS, class_weights_for, metric_higher_is_better

CHECKPOINT_NAME = "checkpoint.keras"
BEST_MODEL_NAME = "model_best.keras"
HISTORY_NAME = "history.csv"
LOGS_DIR = "logs"
# The validation metrics of every epoch (`val_<name>` in history.csv), in task order.
VALIDATION_METRICS: tuple[str, ...] = tuple(m for t in TASK_NAMES for m in TASKS[t].epoch_metrics)


# --------------------------------------------------------------------------- helpers


def pivot_metric_of(train: TrainConfig) -> str:
    """The validation metric that chooses model_best.keras for this run.

    A single-task run that keeps the default pivot (motion mIoU) is judged by its own task's
    headline metric instead, since it never reports the others.

    Raises:
        UserError: `pivot_metric` is not reported by this run.
    """
    tasks = [train.single_task] if train.single_task else list(TASK_NAMES)
    reported = {"loss", *(f"loss_{t}" for t in tasks)}
    reported |= {m for m in VALIDATION_METRICS if m.split("_", 1)[0] in tasks}
    if train.pivot_metric in reported:
        return train.pivot_metric
    if train.single_task and train.pivot_metric == TrainConfig.pivot_metric:
        return TASKS[train.single_task].metric
    raise UserError(
        f"pivot_metric {train.pivot_metric!r}: this run does not report it; choose one of "
        f"{', '.join(sorted(reported))}"
    )


# --------------------------------------------------------------------------- optimizer


@keras.saving.register_keras_serializable(package="keras_mtl")
class WarmupMultiStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then the rate multiplied by `gamma` at each milestone (in steps).

    `lr(step) = base_lr * min(1, (step + 1) / warmup_steps) * gamma^(#milestones <= step)`.

    Args:
        base_lr: rate after warm-up.
        warmup_steps: steps of linear warm-up (0 = none).
        milestones: steps at which the rate is multiplied by `gamma`.
        gamma: decay factor.

    Example:

    ```python
    schedule = WarmupMultiStepSchedule(1e-4, warmup_steps=500, milestones=[10000, 20000])
    optimizer = keras.optimizers.Adam(schedule)
    ```
    """

    def __init__(
        self,
        base_lr: float,
        warmup_steps: int = 0,
        milestones: Sequence[int] = (),
        gamma: float = 0.5,
    ) -> None:
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.base_lr, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        for milestone in self.milestones:
            rate = ops.where(step >= float(milestone), rate * self.gamma, rate)
        return rate

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }


def make_schedule(config: Config, steps_per_epoch: int) -> WarmupMultiStepSchedule:
    """The learning-rate schedule of `config.train`, over optimizer steps."""
    train = config.train
    epochs = max(int(train.epochs), 1)
    milestones = sorted({int(round(f * epochs)) * steps_per_epoch for f in train.lr_milestones})
    return WarmupMultiStepSchedule(
        base_lr=train.lr,
        warmup_steps=int(train.warmup_epochs) * steps_per_epoch,
        milestones=[m for m in milestones if m > 0],
        gamma=train.lr_gamma,
    )


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam(0.9, 0.999) on the warm-up/multi-step schedule (weight decay: see the trainer)."""
    return keras.optimizers.Adam(
        learning_rate=make_schedule(config, steps_per_epoch), beta_1=0.9, beta_2=0.999
    )


# --------------------------------------------------------------------------- strategy


def select_strategy(gpus: Sequence[int] = (), cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """Chooses the distribution strategy.

    `gpus` -> MirroredStrategy over those GPUs; `cpu_replicas` N >= 2 -> MirroredStrategy over N
    logical CPU devices (testing the distributed path without GPUs; must run before any op);
    `TF_CONFIG` set -> MultiWorkerMirroredStrategy; else the default strategy.

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


# --------------------------------------------------------------------------- graph split


class SharedSplit:
    """Partition of a functional multi-task model into a shared trunk and per-task parts.

    Attributes:
        boundary: tensors produced by the trunk and read by task-specific layers.
        shared_variables: trainable variables of layers that feed more than one task.
        task_variables: per task, trainable variables of layers that feed only that task.
    """

    def __init__(self, boundary, shared_variables, task_variables) -> None:
        self.boundary = list(boundary)
        self.shared_variables = list(shared_variables)
        self.task_variables = {t: list(v) for t, v in task_variables.items()}

    @classmethod
    def from_model(cls, model: keras.Model, task_names: Sequence[str]) -> SharedSplit | None:
        """Finds the partition from the functional graph; None if it cannot be made."""
        outputs = model.output
        if not isinstance(outputs, Mapping) or len(task_names) < 2:
            return None
        op_tasks: dict[int, set[str]] = {}
        ops_by_id: dict[int, Any] = {}
        visited_nodes: dict[str, list] = {t: [] for t in task_names}
        for task in task_names:
            seen: set[int] = set()
            stack = [outputs[task]]
            while stack:
                tensor = stack.pop()
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                history = getattr(tensor, "_keras_history", None)
                if history is None:
                    return None
                operation = history.operation
                op_tasks.setdefault(id(operation), set()).add(task)
                ops_by_id[id(operation)] = operation
                node = operation._inbound_nodes[history.node_index]
                visited_nodes[task].append((operation, node))
                stack.extend(node.input_tensors)

        def is_shared(operation) -> bool:
            return len(op_tasks[id(operation)]) > 1

        boundary: dict[int, Any] = {}
        for task in task_names:
            for operation, node in visited_nodes[task]:
                if is_shared(operation):
                    continue
                for tensor in node.input_tensors:
                    producer = tensor._keras_history.operation
                    if is_shared(producer) and not isinstance(producer, keras.layers.InputLayer):
                        boundary[id(tensor)] = tensor
        shared_variables, task_variables, owner = [], {t: [] for t in task_names}, {}
        for op_id, operation in ops_by_id.items():
            for variable in getattr(operation, "trainable_weights", []):
                if id(variable) in owner:
                    continue
                tasks = op_tasks[op_id]
                owner[id(variable)] = tasks
                if len(tasks) > 1:
                    shared_variables.append(variable)
                else:
                    task_variables[next(iter(tasks))].append(variable)
        if {id(v) for v in model.trainable_variables} != set(owner) or not boundary:
            return None
        return cls(list(boundary.values()), shared_variables, task_variables)


# --------------------------------------------------------------------------- trainer


@keras.saving.register_keras_serializable(package="keras_mtl")
class LastValue(keras.metrics.Metric):
    """Holds the last value it was given (task weights are logged as their current value)."""

    def __init__(self, name: str = "last_value", dtype=None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="value", aggregation="mean"
        )

    def update_state(self, value) -> None:
        self.value.assign(ops.cast(value, "float32"))

    def result(self):
        return ops.convert_to_tensor(self.value)


def _task_names_of(model: keras.Model) -> list[str]:
    outputs = model.output
    if not isinstance(outputs, Mapping):
        raise ValueError("the model must have dict outputs named by task")
    return [t for t in TASK_NAMES if t in outputs]


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskTrainer(keras.Model):
    """Trains a functional multi-task model with a task-weighting method.

    Args:
        model: functional model, dict inputs (`flow`, `rgb`, or a subset) and dict outputs named
            by task (see `keras_mtl.models`).
        weighting: a `Weighting`, or the name of one (`keras_mtl.weighting.get_weighting`).
        weighting_config: `WeightingConfig` (or its dict) used when `weighting` is a name.
        semantic_classes: number of semantic classes (metrics, class weights).
        class_weights: apply the original's class weights to semantic (5-class) and motion.
        weight_decay: coupled L2 weight decay on the model's trainable variables.
        seed: seed of weightings that draw random numbers (PCGrad).
        depth_loss: `log_l1`, `silog` or `smooth_l1` (the original), see `keras_mtl.losses`.
        **kwargs: `name`.

    Example:

    ```python
    trainer = MultiTaskTrainer(build_multitask_model((64, 128), width_mult=0.25), "grad_norm")
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    trainer.fit(train_ds, validation_data=val_ds, epochs=2)
    trainer.model.save("model.keras")
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        weighting: Any = "vanilla",
        weighting_config: WeightingConfig | Mapping | None = None,
        semantic_classes: int | None = None,
        class_weights: bool = False,
        weight_decay: float = 0.0,
        seed: int = 0,
        depth_loss: str = "log_l1",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.depth_loss = loss_lib.check_depth_loss(depth_loss)
        self.task_names = _task_names_of(model)
        if semantic_classes is None:
            semantic_classes = (
                int(model.output["semantic"].shape[-1]) if "semantic" in model.output else 5
            )
        self.semantic_classes = int(semantic_classes)
        self.use_class_weights = bool(class_weights)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        if isinstance(weighting_config, Mapping):
            weighting_config = WeightingConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in weighting_config.items()}
            )
        self.weighting_name = weighting if isinstance(weighting, str) else None
        self.weighting_config = weighting_config
        if isinstance(weighting, str):
            from keras_mtl.weighting import get_weighting

            weighting = get_weighting(
                weighting,
                self.task_names,
                weighting_config,
                semantic_classes=self.semantic_classes,
                seed=self.seed,
            )
        if tuple(weighting.task_names) != tuple(self.task_names):
            raise ValueError(
                f"weighting tasks {weighting.task_names} differ from model tasks {self.task_names}"
            )
        self.weighting = weighting
        self.class_weights = {
            t: class_weights_for(t, self.semantic_classes, self.use_class_weights)
            for t in self.task_names
        }
        self.input_names = [t.name for t in model.inputs]

        # Epoch counter and best pivot value: saved with the checkpoint, restored on resume.
        self.epoch_counter = self.add_weight(
            name="epoch_counter", shape=(), initializer="zeros", dtype="int64", trainable=False
        )
        self.best_value = self.add_weight(
            name="best_value",
            shape=(),
            initializer=keras.initializers.Constant(float("nan")),
            dtype="float32",
            trainable=False,
        )

        # A view of the model that also returns the tensors the weighting needs; it shares
        # every weight with `model`.
        self._build_views()

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {t: keras.metrics.Mean(name=f"loss_{t}") for t in self.task_names}
        self.weight_trackers = {t: LastValue(name=f"weight_{t}") for t in self.task_names}
        self.validation_metrics = self._make_validation_metrics()
        self.built = True

    # ------------------------------------------------------------------ construction

    def _build_views(self) -> None:
        from keras_mtl.models import LAST_SHARED_LAYER, SHARED_FEATURES_LAYER

        weighting = self.weighting
        self.norm_source = weighting.grad_norm_source
        self.needs_task_gradients = bool(weighting.needs_task_gradients)
        self.split = None
        self.kernel = None
        self.features_index = None
        extra_outputs = []
        # Untracked holder: the views share the model's weights and must not be saved twice.
        self.views = SimpleNamespace(trunk=None, heads=None, plain=None)
        if self.norm_source is None and not self.needs_task_gradients:
            return
        self.split = SharedSplit.from_model(self.model, self.task_names)
        if self.needs_task_gradients and self.split is None:
            raise ValueError(
                f"{type(weighting).__name__} needs a shared trunk, but the model's tasks share "
                "no layers (single-task model?)"
            )
        if self.norm_source == "shared_kernel":
            self.kernel = self.model.get_layer(LAST_SHARED_LAYER).kernel
        elif self.norm_source == "shared_features":
            features = self.model.get_layer(SHARED_FEATURES_LAYER).output
            boundary_names = [t.name for t in self.split.boundary] if self.split else []
            if features.name in boundary_names:
                self.features_index = boundary_names.index(features.name)
            else:
                extra_outputs.append(features)
        elif self.norm_source is not None:
            raise ValueError(f"unknown grad_norm_source {self.norm_source!r}")
        if self.split is None:
            self.views.plain = keras.Model(
                self.model.input, {"outputs": self.model.output, "extra": extra_outputs}
            )
            return
        # Trunk (inputs -> boundary tensors) and heads (boundary tensors -> outputs): the
        # heads run on gradient-stopped copies of the boundary, so each task's gradient at the
        # boundary is the direct one (not also flowing back through the trunk).
        self.views.trunk = keras.Model(
            self.model.input,
            {"boundary": list(self.split.boundary), "extra": extra_outputs},
            name="trunk_view",
        )
        self.views.heads = keras.Model(list(self.split.boundary), self.model.output, name="heads")

    def _make_validation_metrics(self) -> dict:
        from keras_mtl.metrics import task_metrics

        return task_metrics(self.semantic_classes, self.task_names, epoch_only=True)

    @property
    def metrics(self) -> list:
        tracked = [self.loss_tracker, *self.task_loss_trackers.values()]
        tracked += list(self.weight_trackers.values())
        for task_metrics in self.validation_metrics.values():
            tracked += task_metrics
        return tracked

    def call(self, inputs, training: bool = False):
        return self.model(self._model_inputs(inputs), training=training)

    def _model_inputs(self, inputs):
        if isinstance(inputs, Mapping):
            return {name: inputs[name] for name in self.input_names}
        return inputs

    # ------------------------------------------------------------------ losses

    def _task_losses(self, targets, outputs, replica_context) -> dict:
        """Per-task losses; under N replicas, each replica's share (mean = global loss)."""
        terms = {
            t: loss_lib.task_loss_terms(
                t, targets[t], outputs[t], self.depth_loss, self.class_weights[t]
            )
            for t in self.task_names
        }
        num_replicas = _num_replicas(replica_context)
        if num_replicas == 1:
            totals = {t: None for t in self.task_names}
        else:
            totals = replica_context.all_reduce(
                tf.distribute.ReduceOp.SUM, tf.nest.map_structure(tf.stop_gradient, terms)
            )
        return {
            t: loss_lib.task_loss_from_terms(t, terms[t], totals[t], num_replicas, self.depth_loss)
            for t in self.task_names
        }

    # ------------------------------------------------------------------ train step

    def train_step(self, data):
        inputs, targets = data[0], data[1]
        inputs = self._model_inputs(inputs)
        replica_context = tf.distribute.get_replica_context()
        num_replicas = _num_replicas(replica_context)
        weighting = self.weighting
        model_variables = list(self.model.trainable_variables)
        weighting_variables = list(weighting.trainable_variables)
        scale = ops.cast(self.optimizer.scale_loss(ops.ones((), "float32")), "float32")

        view = None
        view_needed = self.views.plain is not None or self.views.trunk is not None
        with tf.GradientTape(persistent=view_needed) as tape:
            if self.views.trunk is not None:
                view = self.views.trunk(inputs, training=True)
                cut = [tf.stop_gradient(t) for t in view["boundary"]]
                for tensor in cut:
                    tape.watch(tensor)
                view["cut"] = cut
                outputs = self.views.heads(cut, training=True)
            elif self.views.plain is not None:
                view = self.views.plain(inputs, training=True)
                outputs = view["outputs"]
            else:
                outputs = self.model(inputs, training=True)
            losses = self._task_losses(targets, outputs, replica_context)
            total = ops.cast(weighting.combine_losses(losses), "float32")
            if self.model.losses:
                total = total + ops.cast(ops.sum(ops.stack(self.model.losses)), "float32")
            objective = total / num_replicas
            scaled_objective = objective * scale
            scaled_task_losses = {t: losses[t] * scale for t in self.task_names}

        grad_norms = None
        if view is None:
            gradients = tape.gradient(scaled_objective, model_variables + weighting_variables)
            model_gradients = gradients[: len(model_variables)]
            weighting_gradients = gradients[len(model_variables) :]
        else:
            model_gradients, grad_norms = self._split_gradients(
                tape, view, losses, objective, scaled_task_losses, scale, replica_context
            )
            weighting_gradients = (
                tape.gradient(scaled_objective, weighting_variables) if weighting_variables else []
            )
            if self.model.losses:
                regularization = ops.sum(ops.stack(self.model.losses)) * scale / num_replicas
                extra = tape.gradient(regularization, model_variables)
                model_gradients = [
                    g if e is None else (e if g is None else g + e)
                    for g, e in zip(model_gradients, extra, strict=True)
                ]
        del tape

        if self.weight_decay > 0:
            # Coupled L2 (PyTorch Adam's weight_decay): the optimizer sums over replicas.
            factor = self.weight_decay / num_replicas
            model_gradients = [
                g if g is None else g + ops.cast(factor * scale, g.dtype) * v
                for g, v in zip(model_gradients, model_variables, strict=True)
            ]
        variables = model_variables + weighting_variables
        gradients = list(model_gradients) + list(weighting_gradients)
        if num_replicas > 1 and isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            gradients = overflow_on_any_replica(gradients, replica_context)
        pairs = [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

        if num_replicas > 1:
            mean_losses = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, losses)
            mean_losses = {t: mean_losses[t] / num_replicas for t in self.task_names}
        else:
            mean_losses = losses
        weighting.update(mean_losses, grad_norms)

        self.loss_tracker.update_state(total)
        for task in self.task_names:
            self.task_loss_trackers[task].update_state(losses[task])
        for task, weight in weighting.task_weights().items():
            self.weight_trackers[task].update_state(weight)
        return self._train_logs()

    def _split_gradients(
        self, tape, view, losses, objective, scaled_task_losses, scale, replica_context
    ):
        """Model gradients and per-task gradient norms from a backward pass split at the trunk."""
        num_replicas = _num_replicas(replica_context)
        model_variables = list(self.model.trainable_variables)
        extra = list(view["extra"])
        zero = tf.UnconnectedGradients.ZERO
        if self.split is None:
            # Single-task or unsplittable model: plain backward, per-task norms on the side.
            gradients = tape.gradient(objective * scale, model_variables)
            norms = {}
            for task in self.task_names:
                source = self.kernel if self.norm_source == "shared_kernel" else extra[0]
                grad = tape.gradient(scaled_task_losses[task], source, unconnected_gradients=zero)
                norms[task] = self._global_norm(grad, scale, replica_context, self.norm_source)
            return gradients, norms

        boundary = list(view["boundary"])
        cut = list(view["cut"])
        coefficients = tape.gradient(objective, [losses[t] for t in self.task_names])
        coefficients = dict(zip(self.task_names, coefficients, strict=True))
        num_boundary = len(boundary)
        per_task = {}
        for task in self.task_names:
            per_task[task] = tape.gradient(
                scaled_task_losses[task],
                cut + self.split.task_variables[task],
                unconnected_gradients=zero,
            )
        gradient_by_id: dict[int, Any] = {}
        for task in self.task_names:
            start = num_boundary
            for variable, grad in zip(
                self.split.task_variables[task], per_task[task][start:], strict=True
            ):
                gradient_by_id[id(variable)] = _times(coefficients[task], grad)

        shared = self.split.shared_variables
        if self.needs_task_gradients:
            task_shared = {}
            for task in self.task_names:
                upstream = [_times(coefficients[task], g) for g in per_task[task][:num_boundary]]
                grads = tape.gradient(
                    boundary, shared, output_gradients=upstream, unconnected_gradients=zero
                )
                if num_replicas > 1:
                    grads = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                task_shared[task] = grads
            shared_gradients = self.weighting.combine_gradients(task_shared)
            if num_replicas > 1:  # every replica holds the global gradient; the optimizer sums
                shared_gradients = [
                    None if g is None else g / num_replicas for g in shared_gradients
                ]
        else:
            upstream = [
                ops.sum(
                    ops.stack([_times(coefficients[t], per_task[t][k]) for t in self.task_names]),
                    0,
                )
                for k in range(num_boundary)
            ]
            shared_gradients = tape.gradient(
                boundary, shared, output_gradients=upstream, unconnected_gradients=zero
            )
        for variable, grad in zip(shared, shared_gradients, strict=True):
            gradient_by_id[id(variable)] = grad

        norms = None
        if self.norm_source is not None:
            norms = {}
            for task in self.task_names:
                if self.features_index is not None:
                    grad = per_task[task][self.features_index]
                else:
                    # Kernel or a feature map inside the trunk: back from the boundary.
                    source = self.kernel if self.norm_source == "shared_kernel" else extra[0]
                    grad = tape.gradient(
                        boundary,
                        source,
                        output_gradients=per_task[task][:num_boundary],
                        unconnected_gradients=zero,
                    )
                norms[task] = self._global_norm(grad, scale, replica_context, self.norm_source)
        return [gradient_by_id.get(id(v)) for v in model_variables], norms

    @staticmethod
    def _global_norm(grad, scale, replica_context, source: str):
        """Norm of a task gradient over the global batch, identical on every replica.

        Each replica's loss share has mean (over replicas) equal to the global loss, so the
        global gradient is `1/N` times the replica gradients: summed for a shared kernel,
        concatenated (squared norms summed) for the per-sample feature map.
        """
        num_replicas = _num_replicas(replica_context)
        grad = ops.cast(grad, "float32") / scale
        if source == "shared_kernel":
            if num_replicas > 1:
                grad = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, grad / num_replicas)
            return ops.sqrt(ops.sum(ops.square(grad)))
        squared = ops.sum(ops.square(grad))
        if num_replicas > 1:
            squared = replica_context.all_reduce(
                tf.distribute.ReduceOp.SUM, squared / float(num_replicas**2)
            )
        return ops.sqrt(squared)

    def _train_logs(self) -> dict:
        logs = {"loss": self.loss_tracker.result()}
        for task in self.task_names:
            logs[f"loss_{task}"] = self.task_loss_trackers[task].result()
        for task in self.task_names:
            logs[f"weight_{task}"] = self.weight_trackers[task].result()
        return logs

    # ------------------------------------------------------------------ test step

    def test_step(self, data):
        from keras_mtl.metrics import resize_predictions

        inputs, targets = data[0], data[1]
        outputs = self.model(self._model_inputs(inputs), training=False)
        replica_context = tf.distribute.get_replica_context()
        loss_outputs = {}
        for task in self.task_names:
            prediction = outputs[task]
            size = tf.shape(targets[task])[1:3]
            # Validation losses at the target size: logits and depth resized bilinearly.
            if prediction.shape[1:3] != targets[task].shape[1:3]:
                prediction = tf.image.resize(ops.cast(prediction, "float32"), size)
            loss_outputs[task] = prediction
        losses = self._task_losses(targets, loss_outputs, replica_context)
        total = ops.cast(self.weighting.combine_losses(losses), "float32")
        self.loss_tracker.update_state(total)
        for task in self.task_names:
            self.task_loss_trackers[task].update_state(losses[task])
            size = targets[task].shape[1:3]
            if None in size:
                size = tf.shape(targets[task])[1:3]
            resized = resize_predictions({task: outputs[task]}, size)[task]
            for metric in self.validation_metrics[task]:
                metric.update_state(targets[task], resized)
        logs = {"loss": self.loss_tracker.result()}
        for task in self.task_names:
            logs[f"loss_{task}"] = self.task_loss_trackers[task].result()
        for task_metrics in self.validation_metrics.values():
            for metric in task_metrics:
                logs[metric.name] = metric.result()
        return logs

    # ------------------------------------------------------------------ serialisation

    def get_config(self) -> dict:
        if self.weighting_name is not None:
            weighting = self.weighting_name
        else:
            weighting = keras.saving.serialize_keras_object(self.weighting)
        weighting_config = None
        if self.weighting_config is not None:
            weighting_config = {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in vars(self.weighting_config).items()
            }
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "weighting": weighting,
            "weighting_config": weighting_config,
            "semantic_classes": self.semantic_classes,
            "class_weights": self.use_class_weights,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "depth_loss": self.depth_loss,
        }

    @classmethod
    def from_config(cls, config: dict) -> MultiTaskTrainer:
        # Trainers saved before `depth_loss` existed trained with the original SmoothL1.
        config = {"depth_loss": "smooth_l1", **config}
        import keras_mtl.models  # noqa: F401  (registers the model classes)

        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        if isinstance(config["weighting"], Mapping):
            import keras_mtl.weighting  # noqa: F401

            config["weighting"] = keras.saving.deserialize_keras_object(config["weighting"])
        return cls(**config)


def _times(coefficient, gradient):
    """coefficient * gradient in the gradient's dtype (float16 activations under mixed precision)."""
    return ops.cast(coefficient, gradient.dtype) * gradient


def _num_replicas(replica_context) -> int:
    return 1 if replica_context is None else int(replica_context.num_replicas_in_sync)


def overflow_on_any_replica(gradients: Sequence, replica_context) -> list:
    """The gradients, made non-finite on every replica when any replica's are non-finite.

    Keras' `LossScaleOptimizer` decides whether to skip a step from the first replica's
    gradients (it expects all-reduced ones); this step hands it per-replica gradients, so an
    fp16 overflow on another replica alone would be summed into the weights (or the replicas
    would take different branches around the optimizer's all-reduce). Shared, every replica
    skips the step and lowers the loss scale together.
    """
    present = [g for g in gradients if g is not None]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])
    overflowed = replica_context.all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32)
    )
    poison = tf.where(overflowed > 0.0, float("nan"), 0.0)
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in gradients]


# --------------------------------------------------------------------------- callbacks


class NaNGuard(keras.callbacks.Callback):
    """Stops training when a task loss becomes NaN or infinite, naming the task."""

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
    """Calls `weighting.on_epoch_end` with the epoch-mean unweighted training losses (DWA)."""

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
        self._append_history(epoch, logs)
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

    def _append_history(self, epoch: int, logs: Mapping) -> None:
        path = self.save_path / HISTORY_NAME
        rows = read_history_rows(path)
        rows = [row for row in rows if int(row["epoch"]) < epoch + 1]
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        rows.append(row)
        header = self.columns(logs)
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for item in rows:
            writer.writerow({k: item.get(k, "") for k in header})
        write_text_atomic(path, buffer.getvalue())


def read_history_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a history.csv as dicts (empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def truncate_history(path: str | os.PathLike, epochs_done: int) -> None:
    """Keeps the rows of history.csv with epoch <= `epochs_done` (resume)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        header = reader.fieldnames or []
        rows = [row for row in reader if int(row["epoch"]) <= epochs_done]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


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

    def on_epoch_end(self, epoch, logs=None):
        from keras_mtl.data.layout import FLOW_OFFSET
        from keras_mtl.data.pipeline import denormalize_inputs
        from keras_mtl.metrics import resize_predictions
        from keras_mtl.visualize import prediction_grid

        trainer = self.model
        outputs = trainer.model(trainer._model_inputs(self.inputs), training=False)
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "images"))
        grids = []
        for index in range(len(next(iter(self.inputs.values())))):
            truth = {t: self.targets[t][index] for t in trainer.task_names}
            size = truth[trainer.task_names[0]].shape[:2]
            resized = resize_predictions({t: outputs[t] for t in trainer.task_names}, size)
            prediction = {t: np.asarray(resized[t][index]) for t in trainer.task_names}
            flow, rgb = denormalize_inputs(self.inputs["flow"][index], self.inputs["rgb"][index])
            rgb = np.clip(rgb, 0, 255)
            flow = flow - np.array([FLOW_OFFSET, FLOW_OFFSET, 0.0], np.float32)  # u, v in pixels
            grids.append(
                prediction_grid(
                    rgb.astype(np.uint8), flow, truth, prediction, self.semantic_classes
                )
            )
        with self.writer.as_default():
            tf.summary.image("predictions", np.stack(grids), step=epoch, max_outputs=len(grids))
        self.writer.flush()


# --------------------------------------------------------------------------- builders


def build_model(config: Config) -> keras.Model:
    """The functional model of `config` (multi-task, or single-task with `train.single_task`)."""
    from keras_mtl.models import build_multitask_model, build_single_task_model, load_pretrained

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
        if not Path(model_config.pretrained).exists():
            raise UserError(f"--pretrained {model_config.pretrained}: no such file")
        report = load_pretrained(model, model_config.pretrained)
        print(f"pretrained: {report}")
    return model


def resolve_depth_init(config: Config) -> Config:
    """`config` with `model.depth_init` measured from the training split when the log depth
    head needs it and none is given (the value is then saved in the run's config.yaml)."""
    model_config = config.model
    trains_depth = config.train.single_task in (None, "depth")
    if model_config.depth_head != "log" or model_config.depth_init is not None or not trains_depth:
        return config
    from keras_mtl.data.pipeline import median_depth

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
    from keras_mtl.data.pipeline import make_dataset

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
    train_options = {"shuffle": data.shuffle, "augment_data": data.augment}
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


def load_functional_model(path: str | os.PathLike) -> keras.Model:
    """The functional model from a `.keras` file of either the trainer or the bare model."""
    import keras_mtl.models  # noqa: F401  (registers the model classes)

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file (expected a .keras checkpoint)")
    loaded = keras.saving.load_model(path, compile=False)
    return loaded.model if isinstance(loaded, MultiTaskTrainer) else loaded


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
        `{"final": {...}, "best": {...}, "epochs": n}`: validation metrics of the last epoch and
        of the best epoch by the pivot metric.

    Raises:
        UserError: bad configuration, nothing to resume, or a NaN loss (naming the task).
    """
    train = config.train
    save_path = Path(train.save_path)
    checkpoint = save_path / CHECKPOINT_NAME
    pivot_metric = pivot_metric_of(train)
    if train.resume and not checkpoint.is_file():
        raise UserError(f"--resume: nothing to resume, {checkpoint} does not exist")
    if train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
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
        # A new run in an old folder: its history and best model must not outlive it.
        for stale in (HISTORY_NAME, BEST_MODEL_NAME):
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
    val_steps = train.val_steps
    try:
        sample = next(iter(val_ds.take(1)))
        sample = tf.nest.map_structure(lambda x: x.numpy(), sample)
        callbacks.append(
            PredictionImages(save_path / LOGS_DIR, sample, config.data.semantic_classes)
        )
    except (StopIteration, ImportError):
        pass
    if initial_epoch < train.epochs:
        trainer.fit(
            train_ds,
            validation_data=val_ds,
            epochs=train.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=val_steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset shuffles itself
        )
    if guard.failure:
        raise UserError(
            f"training stopped: {guard.failure}; the last good checkpoint is {checkpoint} "
            "(lower --lr or check the data, then --resume)"
        )
    return summarize_history(save_path / HISTORY_NAME, pivot_metric)


def summarize_history(path: str | os.PathLike, pivot_metric: str) -> dict:
    """Final and best (by `val_<pivot_metric>`) validation metrics from history.csv."""
    rows = read_history_rows(path)
    if not rows:
        return {"final": {}, "best": {}, "epochs": 0}

    def metrics_of(row):
        return {k[len("val_") :]: float(v) for k, v in row.items() if k.startswith("val_") and v}

    key = f"val_{pivot_metric}"
    candidates = [r for r in rows if r.get(key) not in (None, "")]
    best_row = rows[-1]
    if candidates:
        pick = max if metric_higher_is_better(pivot_metric) else min
        best_row = pick(candidates, key=lambda r: float(r[key]))
    return {
        "final": metrics_of(rows[-1]),
        "best": {"epoch": int(best_row["epoch"]), **metrics_of(best_row)},
        "epochs": int(rows[-1]["epoch"]),
    }


__all__ = [
    "MultiTaskTrainer",
    "SharedSplit",
    "WarmupMultiStepSchedule",
    "build_datasets",
    "build_model",
    "build_trainer",
    "load_functional_model",
    "make_optimizer",
    "run_training",
    "select_strategy",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("use train.py")
