"""The one interface every task-weighting method implements.

A weighting is a `keras.layers.Layer` only so that Keras tracks its state: every quantity it
keeps (weights, log-variances, EMAs, initial losses, previous epoch losses) lives in a
`keras.Variable` created with `add_weight(..., aggregation="mean")`, float32, so that
`ModelCheckpoint`/`BackupAndRestore`/`.keras` files save and resume it and replicas stay equal.
It is never part of the exported model.

The trainer (`keras_mtl.training.MultiTaskTrainer`) drives it, once per training step, inside
the replica context:

1. `total = weighting.combine_losses(losses)` inside the gradient tape. `losses` maps task name
   to that replica's unweighted scalar loss. The trainer divides the returned total by the
   number of replicas before differentiating (so every term a weighting adds, such as the
   `0.5 * s` of uncertainty weighting, is scaled correctly); weightings never do. A total that
   is not linear in the losses (FAMO's logs) must take its coefficients from the global losses
   (the mean over replicas) and stay linear in this replica's share, or N replicas would not
   sum to the one-device gradient.
2. If `grad_norm_source` is not None, the trainer computes for every task i the norm
   `n_i = ||d L_i / d X||` of the UNWEIGHTED task loss at X = the last shared layer's kernel
   (`"shared_kernel"`) or the shared encoder feature map (`"shared_features"`), combined over
   replicas so that every replica holds the value a single device would compute for the global
   batch.
3. If `needs_task_gradients` is True (PCGrad), the trainer computes each task's gradient of
   `w_i L_i` over the shared variables and calls `combine_gradients`; task-specific variables
   get the gradient of the total loss.
   If `needs_representation_gram` is True (Aligned-MTL-UB), the trainer computes the T x T
   Gram matrix of the per-task gradients of w_i L_i at the trunk's hand-off tensors (the
   shared representation; flattened, concatenated, summed over replicas: the global batch's),
   calls `alpha = representation_weights(gram)` and back-propagates sum_i alpha_i w_i dL_i/dh
   through the trunk; task-specific variables get the gradient of the total loss.
4. After the optimizer step: `weighting.update(losses, grad_norms)` with `losses` the mean over
   replicas of the unweighted task losses (identical on every replica) and `grad_norms` from 2.
   It updates the state variables (e.g. GradNorm's closed-form step and renormalisation).
5. If `needs_losses_after_step` is True (FAMO), the trainer then runs the network once more on
   the same batch, without gradient and without side effects (same dropout masks, batch
   statistics, no BatchNorm moving-average update), and calls
   `weighting.update_after_step(losses, losses_after)`, both means over replicas of the
   unweighted task losses, before and after the optimizer step.

Epoch-level methods (DWA) also implement `on_epoch_end(epoch, epoch_losses)`, called by a
callback with the epoch-mean unweighted training losses as Python floats.

`task_weights()` returns the current effective weight of each task, for logging as
`weight_<task>` in history.csv and TensorBoard.

Partial labels (`--labels partial`): a batch may lack some task's labels. The trainer then
passes one more argument, `labelled`, to every hook of the step: `combine_losses(losses,
labelled=...)`, `combine_gradients(task_gradients, labelled=...)` and `update(losses,
grad_norms, labelled=...)`. `labelled` maps each task name to a scalar boolean tensor, True
when the GLOBAL batch (all replicas) had at least one labelled pixel of the task; it is the
same on every replica. A task with `labelled` False has loss 0 and a zero gradient (its
gradient norm is 0 too). Without label masks (`--labels strict`) the trainer makes the calls
exactly as before, without the argument, so a method's strict path stays bit-identical.

What a method must do to take part (and declare `supports_partial_labels = True`; the trainer
refuses partial-label training with a method that does not declare it):

- accept `labelled=None` in `combine_losses`, `update` and (gradient methods)
  `combine_gradients`, None meaning every task is labelled;
- in `update`, leave every per-task state entry of an unlabelled task exactly as it was
  (`keep_unlabelled`): no loss average, initial loss, ratio, EMA or counter of that task may
  move; statistics pooled over tasks (means, sums, renormalisations) are taken over the
  labelled tasks only (`masked_mean`, `renormalize_labelled`), so the weights of unlabelled
  tasks keep their values and the weights keep their sum;
- in `combine_losses`, add no term for an unlabelled task (e.g. uncertainty's `0.5 s`
  regulariser, which alone would drive its `s` down);
- trainable per-task state (learned by the model's optimizer) is listed by
  `task_state_variables()`: the trainer restores those of an unlabelled task after the
  optimizer step, since the optimizer's momentum would move them with a zero gradient;
- epoch-level methods get in `on_epoch_end` the mean loss over the batches that had the
  task's labels, and 0.0 for a task no batch of the epoch had: keep that task's state then.

Each method also describes itself to the registry with a `MethodInfo` in its `info` class
attribute (name, aliases, table label, the `WeightingConfig` fields it reads); every list of
methods (the registry, the command line, tuning, benchmarks, tests) is read from there.

The helpers shared by several methods (`EPSILON`, `all_finite`, `normalized_weights`,
`renormalize`, `require_grad_norms`, and for partial labels `labelled_vector`,
`keep_unlabelled`, `masked_mean`, `renormalize_labelled`) live here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.config import WeightingConfig

# Divisor floor: losses, loss ratios and norms are positive in practice; this only keeps a
# zero (a task with no gradient at W, a perfect batch) from producing inf/NaN weights.
EPSILON = 1e-12


@dataclass(frozen=True)
class MethodInfo:
    """What the registry, the command line and the result tables know of a weighting method.

    Args:
        name: the `--multi_task_type` name (the registry key).
        label: the method's row label in result tables.
        aliases: other names `--multi_task_type` accepts for it.
        config_fields: the `keras_mtl.config.WeightingConfig` fields (one flag each) it reads,
            besides `task_weights` which every method reads.

    Example:

    ```python
    info = MethodInfo("grad_norm", "GradNorm (Chen et al.)", config_fields=("grad_norm_alpha",))
    ```
    """

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    config_fields: tuple[str, ...] = ()


def normalized_weights(initial_weights: Sequence[float]) -> list[float]:
    """Scales positive weights so that they sum to the number of tasks (GradNorm's invariant)."""
    total = float(sum(initial_weights))
    return [len(initial_weights) * float(w) / total for w in initial_weights]


def all_finite(*tensors):
    """Scalar boolean tensor: True when every element of every tensor is finite."""
    return ops.all(ops.stack([ops.all(ops.isfinite(t)) for t in tensors]))


def renormalize(weights, min_weight: float):
    """Clips weights to >= `min_weight`, then rescales them to sum to their count."""
    weights = ops.maximum(weights, min_weight)
    count = ops.cast(ops.shape(weights)[0], "float32")
    return count * weights / ops.sum(weights)


def keep_unlabelled(new, old, labelled_mask):
    """`new` where the task is labelled, `old` elsewhere (per-task vectors); `new` when the
    mask is None (every task labelled).

    Example:

    ```python
    self.loss_ema.assign(keep_unlabelled(ema, self.loss_ema, mask))
    ```
    """
    if labelled_mask is None:
        return new
    return ops.where(labelled_mask, new, old)


def masked_mean(values, labelled_mask):
    """Mean of a per-task vector over the labelled tasks (`ops.mean` when the mask is None;
    0 when no task is labelled).

    Example:

    ```python
    masked_mean(ops.convert_to_tensor([1.0, 3.0, 9.0]), ops.convert_to_tensor([True, True, False]))
    # 2.0
    ```
    """
    if labelled_mask is None:
        return ops.mean(values)
    mask = ops.cast(labelled_mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def renormalize_labelled(new_weights, old_weights, min_weight: float, labelled_mask):
    """`renormalize` for a step that saw only the labelled tasks.

    The labelled tasks' new weights are clipped to >= `min_weight` and rescaled so that they
    keep the sum they had before the step; the unlabelled tasks keep their old weights. The
    total stays what it was (the number of tasks). With the mask None: `renormalize`.

    Example:

    ```python
    renormalize_labelled(new, old, 1e-3, ops.convert_to_tensor([True, False, True]))
    ```
    """
    if labelled_mask is None:
        return renormalize(new_weights, min_weight)
    mask = ops.cast(labelled_mask, "float32")
    clipped = ops.maximum(new_weights, min_weight) * mask
    scale = ops.sum(old_weights * mask) / ops.maximum(ops.sum(clipped), EPSILON)
    return ops.where(labelled_mask, clipped * scale, old_weights)


class Weighting(keras.layers.Layer):
    """Base class of task weightings: fixed weights, and the hooks the trainer calls.

    Args:
        task_names: the tasks, in order (a subset of `keras_mtl.tasks.TASK_NAMES`).
        initial_weights: one initial (or fixed) weight per task; default all 1.

    Example:

    ```python
    weighting = get_weighting("vanilla", ["depth", "semantic", "motion"])
    total = weighting.combine_losses({"depth": 0.5, "semantic": 1.2, "motion": 0.3})
    ```
    """

    # The method's name, aliases, table label and flags (see `MethodInfo`); every subclass sets it.
    info: ClassVar[MethodInfo]
    # Where the trainer must measure per-task gradient norms: None, "shared_kernel" or
    # "shared_features".
    grad_norm_source: ClassVar[str | None] = None
    # Whether the trainer must hand per-task gradients of the shared variables to
    # `combine_gradients` (PCGrad).
    needs_task_gradients: ClassVar[bool] = False
    # Whether the method honours `labelled` (partial labels, see the module docstring); the
    # trainer refuses label masks with a method that does not.
    supports_partial_labels: ClassVar[bool] = False
    # Whether the trainer must hand the Gram matrix of per-task gradients at the shared
    # representation to `representation_weights` (Aligned-MTL-UB).
    needs_representation_gram: ClassVar[bool] = False
    # Whether the trainer must recompute the losses on the same batch after the optimizer
    # step and call `update_after_step` (FAMO).
    needs_losses_after_step: ClassVar[bool] = False

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        kwargs.pop("dtype", None)  # state is always float32, also under mixed precision
        super().__init__(dtype="float32", **kwargs)
        self.task_names = tuple(task_names)
        if initial_weights is None:
            initial_weights = [1.0] * len(self.task_names)
        if len(initial_weights) != len(self.task_names):
            raise ValueError(
                f"{len(initial_weights)} initial weights for {len(self.task_names)} tasks "
                f"{self.task_names}"
            )
        self.initial_weights = tuple(float(w) for w in initial_weights)
        self.built = True

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def add_state(self, name: str, initial, trainable: bool = False) -> keras.Variable:
        """Creates a float32 state variable shaped like `initial`, mean-aggregated over replicas."""
        initial = ops.convert_to_tensor(initial, dtype="float32")
        return self.add_weight(
            name=name,
            shape=tuple(initial.shape),
            initializer=keras.initializers.Constant(initial),
            dtype="float32",
            trainable=trainable,
            autocast=False,
            aggregation="mean",
        )

    def stack(self, values: Mapping[str, object]):
        """Stacks per-task scalars into a float32 vector in `task_names` order."""
        return ops.stack([ops.cast(values[name], "float32") for name in self.task_names])

    def labelled_vector(self, labelled: Mapping[str, object] | None):
        """`labelled` as a boolean vector in `task_names` order, or None when it is None.

        Example:

        ```python
        mask = self.labelled_vector(labelled)  # [T] bool, or None: every task labelled
        ```
        """
        if labelled is None:
            return None
        return ops.stack([ops.cast(labelled[name], "bool") for name in self.task_names])

    def combine_losses(self, losses: Mapping[str, object], labelled=None):
        """Total loss to differentiate, from per-task unweighted scalar losses.

        Args:
            losses: task -> unweighted loss (this replica's share).
            labelled: None, or task -> whether the global batch had the task's labels. An
                unlabelled task's loss is already 0 with no gradient, so a fixed weighted sum
                needs nothing more.
        """
        del labelled
        weights = self.weight_vector()
        return ops.sum(weights * self.stack(losses))

    def weight_vector(self):
        """Current effective weights as a float32 vector in `task_names` order."""
        return ops.convert_to_tensor(self.initial_weights, dtype="float32")

    def task_weights(self) -> dict[str, object]:
        """Current effective weight of each task (scalars), for logging."""
        vector = self.weight_vector()
        return {name: vector[i] for i, name in enumerate(self.task_names)}

    def combine_gradients(
        self, task_gradients: Mapping[str, Sequence[object]], labelled=None
    ) -> list:
        """Combines per-task gradients (lists over the shared variables) into one list.

        `labelled` as in `combine_losses`: an unlabelled task's gradients are zero and must not
        steer the others' (e.g. PCGrad projects nothing onto them).
        """
        raise NotImplementedError(f"{type(self).__name__} does not combine gradients")

    def sum_over_labelled(self, terms, labelled=None):
        """Sum of a per-task vector of loss terms over the labelled tasks (all when None).

        `where`, not a product with the mask: an unlabelled task's terms add nothing and no
        gradient reaches its state (a regulariser such as `b s` or `-s` alone would drive it
        without bound).
        """
        if labelled is None:
            return ops.sum(terms)
        return ops.sum(ops.where(self.labelled_vector(labelled), terms, 0.0))

    def task_gradient_lists(self, task_gradients: Mapping[str, Sequence[object]]) -> list[list]:
        """The per-task gradient lists in `task_names` order, dense (sparse IndexedSlices of an
        embedding-like variable converted), one entry per shared variable (None: the task's
        loss does not reach it). For `combine_gradients`.

        Raises:
            ValueError: the tasks' lists differ in length.
        """
        per_task = [
            [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            for grads in (task_gradients[name] for name in self.task_names)
        ]
        if any(len(grads) != len(per_task[0]) for grads in per_task):
            raise ValueError(
                "combine_gradients needs one gradient per shared variable for every task, got "
                f"{[len(grads) for grads in per_task]}"
            )
        return per_task

    def representation_weights(self, gram, labelled=None):
        """Per-task multipliers (float32 vector) from the Gram matrix of the per-task
        gradients at the shared representation (`needs_representation_gram`); `labelled` as
        in `combine_losses` (an unlabelled task's row and column are zero)."""
        raise NotImplementedError(f"{type(self).__name__} does not weight representations")

    def update_after_step(
        self, losses: Mapping[str, object], losses_after: Mapping[str, object], labelled=None
    ) -> None:
        """Updates the state from the same batch's unweighted losses before and after the
        optimizer step (`needs_losses_after_step`; both means over replicas); `labelled` as in
        `update`."""
        raise NotImplementedError(f"{type(self).__name__} does not update after the step")

    def update(
        self,
        losses: Mapping[str, object],
        grad_norms: Mapping[str, object] | None = None,
        labelled=None,
    ) -> None:
        """Updates the state after an optimizer step (no-op for fixed weights).

        `labelled` as in `combine_losses`: an unlabelled task's state must stay as it was.
        """
        del losses, grad_norms, labelled

    def task_state_variables(self) -> dict[str, list]:
        """Trainable state that belongs to one task (trained by the model's optimizer), by
        task; the trainer restores a task's entries after a step whose batch lacked its
        labels. Default: none.

        Example:

        ```python
        UncertaintyWeighting(["depth", "motion"]).task_state_variables()
        # {"depth": [log_variance_depth], "motion": [log_variance_motion]}
        ```
        """
        return {}

    def on_epoch_end(self, epoch: int, epoch_losses: Mapping[str, float]) -> None:
        """Epoch-level update from epoch-mean unweighted training losses (no-op by default)."""
        del epoch, epoch_losses

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {"task_names": list(self.task_names), "initial_weights": list(self.initial_weights)}
        )
        return config

    @classmethod
    def from_weighting_config(
        cls,
        task_names: Sequence[str],
        initial_weights: Sequence[float],
        config: WeightingConfig,
        **context,
    ) -> Weighting:
        """Builds the method from the run's `WeightingConfig` (the registry's constructor).

        Methods with hyper-parameters override it to read their `info.config_fields`, raising
        `UserError` that names the flag of a bad value.

        Args:
            task_names: the tasks, in order.
            initial_weights: the `--task_weights` entries of `task_names`.
            config: the weighting section of the run's configuration.
            **context: `semantic_classes` and `seed`, for methods that need them.
        """
        del config, context
        return cls(task_names, initial_weights)


def call_hook(hook, *args, labelled=None):
    """Calls a weighting hook, passing `labelled` only when there is one (partial labels).

    Strict training calls every hook exactly as before partial labels existed, so a method
    written without the `labelled` argument keeps working there.

    Example:

    ```python
    call_hook(weighting.update, losses, grad_norms, labelled=labelled)
    ```
    """
    if labelled is None:
        return hook(*args)
    return hook(*args, labelled=labelled)


def require_grad_norms(weighting: Weighting, grad_norms: Mapping[str, object] | None) -> None:
    """Raises ValueError when a method that asks for gradient norms is updated without them."""
    if grad_norms is None:
        raise ValueError(
            f"{type(weighting).__name__}.update needs grad_norms measured at "
            f"{weighting.grad_norm_source!r}; the trainer must pass them"
        )
