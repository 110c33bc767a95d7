"""The multi-task trainer: a `keras.Model` that trains the functional network with a weighting.

`MultiTaskTrainer` wraps the functional network (`trainer.model`, the only thing ever
exported) and a `Weighting` (`trainer.weighting`). Its `train_step` follows the call order of
`keras_mtl/weighting/base.py`:

1. forward pass; per-task unweighted losses of the *global* batch (loss statistics are
   all-reduced over replicas, so N replicas compute what one device computes, see
   `keras_mtl.losses`);
2. `total = weighting.combine_losses(losses) + regularisation`, divided by the number of
   replicas before differentiating;
3. per-task gradient norms at the shared kernel or the shared features when the weighting asks,
   combined over replicas exactly; per-task gradients of the shared variables for PCGrad (both
   from one backward pass split at the network's shared trunk, `keras_mtl.training.gradients`);
4. coupled L2 weight decay (`g += weight_decay * w`, as PyTorch's `Adam(weight_decay=...)`;
   the weighting's own variables, e.g. uncertainty's log-variances, are never decayed);
5. optimizer step, then `weighting.update(mean losses, grad_norms)`.

Partial labels (`--labels partial`): the dataset's third element holds per-sample label masks
`{task: [B]}` (Keras hands them over as the sample weights). Each task's loss is then the mean
over the labelled pixels of the frames that have its label in the global batch, 0 with no
gradient when none has (`keras_mtl.losses`), and the weighting is told which tasks the global
batch had labels for (`labelled`, `{task: bool scalar}`, identical on every replica), so that it
never updates a task's state from a batch without its labels (`keras_mtl/weighting/base.py`).
The logged `loss_<task>` is then the mean over the batches that had the task's labels. Without
masks (`--labels strict`) every call is exactly the one made before partial labels existed.

Dropout draws from the network's own seed generators; the trainer sets their state from
(seed, optimizer step) before every step (`StepSeeds`), so a resumed run draws what the
uninterrupted run drew at the same step.

`train_step` and `test_step` share Keras' hooks: `compute_loss` (per-task losses and their
weighted total; validation resizes predictions to the targets first) and `compute_metrics`
(task weights when training, the task table's epoch metrics when validating), which returns the
logs built in one place, `metrics_logs`.

Example:

```python
trainer = MultiTaskTrainer(build_multitask_model((64, 128), width_mult=0.25), "grad_norm")
trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
trainer.fit(train_ds, validation_data=val_ds, epochs=2)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_mtl import losses as loss_lib
from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.metrics import resize_predictions, task_metrics
from keras_mtl.tasks import TASK_NAMES, TASKS, class_weights_for
from keras_mtl.training.gradients import SplitBackward
from keras_mtl.training.strategy import (
    local_batch,
    overflow_on_any_replica,
    reducible_logs,
    replicas_in_sync,
)
from keras_mtl.weighting import Weighting, get_weighting
from keras_mtl.weighting.base import call_hook

# The validation metrics of every epoch (`val_<name>` in history.csv), in task order.
VALIDATION_METRICS: tuple[str, ...] = tuple(m for t in TASK_NAMES for m in TASKS[t].epoch_metrics)


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


class StepSeeds:
    """The random-number generators a network draws from while training, reseeded per step.

    Keras layers that draw random numbers (dropout) keep a `SeedGenerator` whose state moves
    on with every call; that state depends on how many calls a process made. Setting every
    generator's state to (seed + its index, step) before each training step makes the draws a
    function of the seed and the optimizer step alone, which the checkpoint holds.

    A plain object (not tracked by Keras): the generators belong to the network's layers.

    Args:
        model: the network; every layer's seed generators are collected, in layer order.
        seed: the run's seed.

    Example:

    ```python
    seeds = StepSeeds(model, seed=0)
    seeds.reseed(optimizer.iterations)  # inside train_step, before the forward pass
    ```
    """

    def __init__(self, model: keras.Model, seed: int) -> None:
        generators, seen = [], set()
        for layer in model._flatten_layers(include_self=True, recursive=True):
            for generator in getattr(layer, "_seed_generators", ()):
                if id(generator) not in seen:
                    seen.add(id(generator))
                    generators.append(generator)
        self.generators = tuple(generators)
        self.seed = int(seed)

    def reseed(self, step) -> None:
        """Sets generator i's state to (seed * 1000003 + i + 1, step)."""
        for index, generator in enumerate(self.generators):
            dtype = generator.state.dtype
            key = ops.convert_to_tensor(self.seed * 1_000_003 + index + 1, dtype)
            generator.state.assign(ops.stack([key, ops.cast(step, dtype)]))


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
            by task (see `keras_mtl.models`; the per-task gradient split needs the trunk it
            records, `keras_mtl.models.SharedTrunk`).
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
        self.weighting: Weighting = weighting
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

        # Dropout's random state, reseeded from (seed, step) at every training step.
        self.step_seeds = StepSeeds(model, self.seed)

        # The forward/backward pass, split at the shared trunk when the weighting needs
        # per-task gradients. A plain object: its views share the model's weights and must not
        # be tracked (saved twice).
        self.backward = SplitBackward(model, self.task_names, weighting)
        # GradNorm's kernel is one of the trainer's own tracked variables in every checkpoint
        # written so far (first in its variables and in the optimizer's): keep it so, or those
        # checkpoints would not load.
        self.kernel = self.backward.kernel

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {t: keras.metrics.Mean(name=f"loss_{t}") for t in self.task_names}
        self.weight_trackers = {t: LastValue(name=f"weight_{t}") for t in self.task_names}
        self.validation_metrics = task_metrics(
            self.semantic_classes, self.task_names, epoch_only=True
        )
        self.built = True

    # ------------------------------------------------------------------ Keras hooks

    @property
    def metrics(self) -> list:
        tracked = [self.loss_tracker, *self.task_loss_trackers.values()]
        tracked += list(self.weight_trackers.values())
        for validation in self.validation_metrics.values():
            tracked += validation
        return tracked

    def call(self, inputs, training: bool = False):
        return self.model(self.model_inputs(inputs), training=training)

    def model_inputs(self, inputs):
        """The inputs the network takes, from a dict that may hold more (e.g. a dataset's)."""
        if isinstance(inputs, Mapping):
            return {name: inputs[name] for name in self.input_names}
        return inputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted total loss and the per-task losses of a batch; updates the loss logs.

        Keras' hook, returning the per-task losses beside the total because the weighting and
        the per-task gradient split need them.

        Args:
            x: the inputs (unused).
            y: targets per task.
            y_pred: the network's outputs per task.
            sample_weight: None (every frame has every label), or the per-sample label masks
                `{task: [B]}` of `--labels partial`.
            training: training adds the network's regularisation losses; validation resizes
                each prediction bilinearly to its target's size first.

        Returns:
            `(total, losses, labelled)`: the float32 total, the per-task unweighted losses,
            each replica's share under N replicas (their mean is the global-batch loss), and
            None without masks, else `{task: bool scalar}`, whether the global batch had any
            labelled pixel of the task.

        Raises:
            UserError: label masks with a weighting that does not declare
                `supports_partial_labels`.
        """
        del x
        if not training:
            y_pred = {t: _resized_like(y_pred[t], y[t]) for t in self.task_names}
        losses, labelled = self._task_losses(
            y, y_pred, tf.distribute.get_replica_context(), sample_weight
        )
        if labelled is not None:
            self._check_partial_support()
        total = ops.cast(
            call_hook(self.weighting.combine_losses, losses, labelled=labelled), "float32"
        )
        if training and self.model.losses:
            total = total + ops.cast(ops.sum(ops.stack(self.model.losses)), "float32")
        self.loss_tracker.update_state(total)
        for task in self.task_names:
            if labelled is None:
                self.task_loss_trackers[task].update_state(losses[task])
            else:
                # The mean over the batches that had the task's labels (DWA's epoch means).
                self.task_loss_trackers[task].update_state(
                    losses[task], sample_weight=ops.cast(labelled[task], "float32")
                )
        return total, losses, labelled

    def _check_partial_support(self) -> None:
        if not getattr(self.weighting, "supports_partial_labels", False):
            name = getattr(getattr(self.weighting, "info", None), "name", type(self.weighting))
            raise UserError(
                f"--multi_task_type {name}: this weighting does not handle batches without some "
                "task's labels (it does not declare `supports_partial_labels`); use --labels "
                "strict with complete labels, or another method (docs/weighting.md)"
            )

    def compute_metrics(self, x, y, y_pred, sample_weight=None, training=False) -> dict:
        """Updates the metrics of a batch and returns the logs.

        Training logs the current task weights (after the weighting's update); validation
        updates the task table's epoch metrics on predictions resized to the targets
        (`keras_mtl.metrics.resize_predictions`).
        """
        del x, sample_weight
        if training:
            for task, weight in self.weighting.task_weights().items():
                self.weight_trackers[task].update_state(weight)
            return self.metrics_logs(training=True)
        for task in self.task_names:
            size = y[task].shape[1:3]
            if None in size:
                size = tf.shape(y[task])[1:3]
            resized = resize_predictions({task: y_pred[task]}, size)[task]
            for metric in self.validation_metrics[task]:
                metric.update_state(y[task], resized)
        return self.metrics_logs(training=False)

    def metrics_logs(self, training: bool) -> dict:
        """The logs of a step: `loss`, `loss_<task>`, then `weight_<task>` (training) or the
        validation metrics (keys of `VALIDATION_METRICS`)."""
        logs = {"loss": self.loss_tracker.result()}
        for task in self.task_names:
            logs[f"loss_{task}"] = self.task_loss_trackers[task].result()
        if training:
            for task in self.task_names:
                logs[f"weight_{task}"] = self.weight_trackers[task].result()
            return logs
        for validation in self.validation_metrics.values():
            for metric in validation:
                logs[metric.name] = metric.result()
        return logs

    # ------------------------------------------------------------------ losses

    def _task_losses(self, targets, outputs, replica_context, label_masks=None) -> tuple:
        """Per-task losses; under N replicas, each replica's share (mean = global loss).

        Returns:
            (losses, labelled): `labelled` is None without `label_masks`, else per task
            whether the global batch had any labelled pixel (a global statistic: every replica
            holds the same value).
        """
        terms = {
            t: loss_lib.task_loss_terms(
                t,
                targets[t],
                outputs[t],
                self.depth_loss,
                self.class_weights[t],
                sample_mask=None if label_masks is None else label_masks[t],
            )
            for t in self.task_names
        }
        num_replicas = replicas_in_sync(replica_context)
        if num_replicas == 1:
            totals = {t: None for t in self.task_names}
        else:
            totals = replica_context.all_reduce(
                tf.distribute.ReduceOp.SUM, tf.nest.map_structure(tf.stop_gradient, terms)
            )
        losses = {
            t: loss_lib.task_loss_from_terms(t, terms[t], totals[t], num_replicas, self.depth_loss)
            for t in self.task_names
        }
        if label_masks is None:
            return losses, None
        labelled = {
            t: loss_lib.labelled_amount(t, terms[t] if totals[t] is None else totals[t]) > 0
            for t in self.task_names
        }
        return losses, labelled

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras reduces the first distributed batch with one `strategy.reduce` of the whole
        # dict, which MultiWorkerMirroredStrategy cannot do ("Attempt to convert a value
        # ({'flow': PerReplica...}) to a Tensor", issue 14). The batch only gives shapes (the
        # trainer is built in __init__): this replica's part of it serves, with no collective.
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, batches in iterator:
                data_batch = local_batch(self._distribute_strategy, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------ steps

    def train_step(self, data):
        x, y = self.model_inputs(data[0]), data[1]
        label_masks = data[2] if len(data) > 2 else None
        replica_context = tf.distribute.get_replica_context()
        num_replicas = replicas_in_sync(replica_context)
        weighting = self.weighting
        model_variables = list(self.model.trainable_variables)
        weighting_variables = list(weighting.trainable_variables)
        scale = ops.cast(self.optimizer.scale_loss(ops.ones((), "float32")), "float32")
        # The step before the optimizer's update, read now (ops.convert_to_tensor would hand
        # back the variable itself, which the update then moves on).
        step = tf.identity(self.optimizer.iterations.value)
        self.step_seeds.reseed(step)

        with tf.GradientTape(persistent=self.backward.persistent) as tape:
            y_pred, view = self.backward.forward(x, tape)
            total, losses, labelled = self.compute_loss(
                x, y, y_pred, sample_weight=label_masks, training=True
            )
            objective = total / num_replicas
            scaled_objective = objective * scale
            scaled_task_losses = {t: losses[t] * scale for t in self.task_names}

        grad_norms = None
        if view is None:
            gradients = tape.gradient(scaled_objective, model_variables + weighting_variables)
            model_gradients = gradients[: len(model_variables)]
            weighting_gradients = gradients[len(model_variables) :]
        else:
            model_gradients, grad_norms = self.backward.gradients(
                tape, view, losses, objective, scaled_task_losses, scale, replica_context, labelled
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
        held = self._task_state_before_step(labelled)
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        self._restore_unlabelled_task_state(held, labelled)

        if num_replicas > 1:
            mean_losses = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, losses)
            mean_losses = {t: mean_losses[t] / num_replicas for t in self.task_names}
        else:
            mean_losses = losses
        call_hook(weighting.update, mean_losses, grad_norms, labelled=labelled)
        if weighting.needs_losses_after_step:
            after = self.losses_after_step(x, y, step, replica_context, label_masks)
            call_hook(weighting.update_after_step, mean_losses, after, labelled=labelled)
        return reducible_logs(self.compute_metrics(x, y, y_pred, training=True))

    def _task_state_before_step(self, labelled) -> dict:
        """The values of the weighting's trainable per-task state (`task_state_variables`)
        before the optimizer step (only with label masks: a batch may lack a task's labels)."""
        if labelled is None:
            return {}
        return {
            task: [tf.identity(variable.value) for variable in variables]
            for task, variables in self.weighting.task_state_variables().items()
        }

    def _restore_unlabelled_task_state(self, held: dict, labelled) -> None:
        """Puts back the per-task state of the tasks the batch had no labels for: their
        gradient was 0, but the optimizer's momentum would still move them."""
        for task, values in held.items():
            variables = self.weighting.task_state_variables()[task]
            for variable, value in zip(variables, values, strict=True):
                variable.assign(ops.where(labelled[task], variable.value, value))

    def losses_after_step(self, x, y, step, replica_context, label_masks=None) -> dict:
        """The batch's unweighted task losses after the optimizer step (FAMO's second pass).

        The step's forward pass once more, with the step's dropout masks (the generators set
        to the step's state) and batch statistics, inside a `keras.StatelessScope` so that it
        writes nothing (no BatchNorm moving-average update, no generator advance), without a
        tape: before and after differ only by the optimizer's update.

        Returns:
            Per task, the mean over replicas of the unweighted loss (the global batch's).
        """
        with keras.StatelessScope():
            self.step_seeds.reseed(step)
            outputs = self.model(x, training=True)
        outputs = tf.nest.map_structure(tf.stop_gradient, outputs)
        losses, _ = self._task_losses(y, outputs, replica_context, label_masks)
        num_replicas = replicas_in_sync(replica_context)
        if num_replicas > 1:
            losses = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, losses)
            losses = {t: losses[t] / num_replicas for t in self.task_names}
        return losses

    def test_step(self, data):
        x, y = self.model_inputs(data[0]), data[1]
        label_masks = data[2] if len(data) > 2 else None
        y_pred = self.model(x, training=False)
        self.compute_loss(x, y, y_pred, sample_weight=label_masks, training=False)
        return reducible_logs(self.compute_metrics(x, y, y_pred, training=False))

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
        # The model and weighting classes are registered by this module's imports.
        config = {"depth_loss": "smooth_l1", **config}
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        if isinstance(config["weighting"], Mapping):
            config["weighting"] = keras.saving.deserialize_keras_object(config["weighting"])
        return cls(**config)


def _resized_like(prediction, target):
    """`prediction` resized bilinearly to `target`'s size when their static sizes differ (the
    validation losses are taken at the targets' size)."""
    if prediction.shape[1:3] == target.shape[1:3]:
        return prediction
    return tf.image.resize(ops.cast(prediction, "float32"), tf.shape(target)[1:3])
