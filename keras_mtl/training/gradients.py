"""The per-task split of the backward pass, and per-task gradient norms.

When a weighting needs per-task gradients (norms for GradNorm and pseudo-GradNorm, gradients of
the shared variables for PCGrad), the backward pass is split where the network's shared trunk
hands off to its task heads, as the network's builder recorded it (`keras_mtl.models.
SharedTrunk`): the heads run on gradient-stopped copies of the hand-off tensors, so one backward
pass per head gives each task's gradient at the hand-off and on its own variables, and one
backward pass through the trunk with the weighted sum of those gradients gives the trunk's
gradient. That is the work of one plain backward pass, so per-task gradient norms come almost
for free (a second per-task backward through every head would add ~30%).

Example:

```python
backward = SplitBackward(model, ["depth", "semantic", "motion"], weighting)
with tf.GradientTape(persistent=backward.persistent) as tape:
    outputs, view = backward.forward(inputs, tape)
    ...  # losses, objective
model_gradients, grad_norms = backward.gradients(tape, view, losses, objective, ...)
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.models import SharedTrunk, shared_trunk_of
from keras_mtl.training.strategy import replicas_in_sync
from keras_mtl.weighting import Weighting
from keras_mtl.weighting.base import call_hook


class SharedSplit:
    """Partition of a multi-task network into its shared trunk and per-task heads.

    Args:
        boundary: the hand-off tensors, produced by the trunk and read by the heads.
        shared_variables: trainable variables of the trunk.
        task_variables: per task, trainable variables of that task's head.

    Example:

    ```python
    split = SharedSplit.from_model(model, ["depth", "semantic", "motion"])
    len(split.boundary)  # 2: the stride-4 fused features and the stride-16 encoder features
    ```
    """

    def __init__(
        self,
        boundary: Sequence[keras.KerasTensor],
        shared_variables: Sequence[keras.Variable],
        task_variables: Mapping[str, Sequence[keras.Variable]],
    ) -> None:
        self.boundary = list(boundary)
        self.shared_variables = list(shared_variables)
        self.task_variables = {t: list(v) for t, v in task_variables.items()}

    @classmethod
    def from_model(cls, model: keras.Model, task_names: Sequence[str]) -> SharedSplit | None:
        """The split at the trunk the network recorded (`keras_mtl.models.shared_trunk_of`).

        Returns:
            The split, or None for a single task or a network that records no trunk.

        Raises:
            ValueError: the recorded trunk and heads do not partition the network's trainable
                variables (a head shares a layer with another head, or misses one).
        """
        trunk = shared_trunk_of(model)
        if trunk is None or len(task_names) < 2 or not isinstance(model.output, Mapping):
            return None
        shared_variables = trunk.trunk_model(model).trainable_variables
        task_variables = {
            task: trunk.heads_model(model, [task]).trainable_variables for task in task_names
        }
        owned = [id(v) for v in shared_variables]
        owned += [id(v) for task in task_names for v in task_variables[task]]
        if sorted(owned) != sorted(id(v) for v in model.trainable_variables):
            raise ValueError(
                f"{model.name}: the trunk recorded as ending at {list(trunk.output_layers)} and "
                f"the heads of {list(task_names)} do not partition the trainable variables"
            )
        return cls(trunk.outputs(model), shared_variables, task_variables)


class SplitBackward:
    """The trainer's forward and backward pass, split at the trunk when the weighting asks.

    For a weighting that needs neither gradient norms nor task gradients the pass is plain.
    Otherwise the forward pass runs through views of the network that share its weights: the
    trunk (inputs -> hand-off tensors, plus the shared feature map when the norms are taken
    there and it is inside the trunk) and the heads (hand-off tensors -> outputs). Without a
    split (single-task network, or one that records no trunk) the norms are taken beside a
    plain backward pass, at the handles' default layer names.

    Args:
        model: the functional network.
        task_names: the tasks trained, in order.
        weighting: the `Weighting`; its `grad_norm_source` and `needs_task_gradients` decide.

    Attributes:
        split: the `SharedSplit`, or None.
        kernel: GradNorm's W (`grad_norm_source="shared_kernel"`), else None.
        features_index: index of the shared feature map among `split.boundary` when the norms
            are taken there and it is a hand-off tensor, else None.

    Raises:
        ValueError: the weighting needs task gradients and the network has no split.
    """

    def __init__(self, model: keras.Model, task_names: Sequence[str], weighting: Weighting):
        self.model = model
        self.task_names = list(task_names)
        self.weighting = weighting
        self.norm_source = weighting.grad_norm_source
        self.needs_task_gradients = bool(weighting.needs_task_gradients)
        self.needs_representation_gram = bool(weighting.needs_representation_gram)
        self.split: SharedSplit | None = None
        self.kernel = None
        self.features_index: int | None = None
        self.trunk_view = self.heads_view = self.plain_view = None
        needs_split = self.needs_task_gradients or self.needs_representation_gram
        if self.norm_source is None and not needs_split:
            return
        self.split = SharedSplit.from_model(model, self.task_names)
        if needs_split and self.split is None:
            raise ValueError(
                f"{type(weighting).__name__} needs a shared trunk, but the model records none "
                "shared by its tasks (single-task model, or no `shared_trunk`: see "
                "keras_mtl.models.SharedTrunk)"
            )
        # A network without a recorded trunk still has the handles' default layer names.
        trunk = shared_trunk_of(model) or SharedTrunk(output_layers=())
        extra_outputs = []
        if self.norm_source == "shared_kernel":
            self.kernel = model.get_layer(trunk.last_shared_layer).kernel
        elif self.norm_source == "shared_features":
            if self.split is not None and trunk.shared_features_layer in trunk.output_layers:
                self.features_index = trunk.output_layers.index(trunk.shared_features_layer)
            else:
                extra_outputs.append(model.get_layer(trunk.shared_features_layer).output)
        elif self.norm_source is not None:
            raise ValueError(f"unknown grad_norm_source {self.norm_source!r}")
        if self.split is None:
            self.plain_view = keras.Model(
                model.input, {"outputs": model.output, "extra": extra_outputs}
            )
            return
        self.trunk_view = keras.Model(
            model.input,
            {"boundary": list(self.split.boundary), "extra": extra_outputs},
            name="trunk_view",
        )
        self.heads_view = trunk.heads_model(model)

    @property
    def persistent(self) -> bool:
        """Whether the gradient tape is read more than once (every pass but the plain one)."""
        return self.trunk_view is not None or self.plain_view is not None

    def forward(self, inputs, tape: tf.GradientTape) -> tuple[Any, dict | None]:
        """The training forward pass under `tape`.

        Returns:
            (the model's outputs, the view's tensors that `gradients` needs, or None for the
            plain pass).
        """
        if self.trunk_view is not None:
            view = self.trunk_view(inputs, training=True)
            # The heads run on gradient-stopped copies of the boundary, so each task's gradient
            # at the boundary is the direct one (not also flowing back through the trunk).
            cut = [tf.stop_gradient(t) for t in view["boundary"]]
            for tensor in cut:
                tape.watch(tensor)
            view["cut"] = cut
            return self.heads_view(cut, training=True), view
        if self.plain_view is not None:
            view = self.plain_view(inputs, training=True)
            return view["outputs"], view
        return self.model(inputs, training=True), None

    def gradients(
        self,
        tape,
        view,
        losses,
        objective,
        scaled_task_losses,
        scale,
        replica_context,
        labelled=None,
    ) -> tuple[list, dict | None]:
        """Model gradients and per-task gradient norms of a pass run by `forward`.

        Args:
            tape: the persistent tape of the forward pass.
            view: what `forward` returned beside the outputs.
            losses: per-task unweighted losses (this replica's shares).
            objective: the total loss divided by the number of replicas.
            scaled_task_losses: `losses` times the loss scale.
            scale: the optimizer's loss scale.
            replica_context: the current replica context.
            labelled: None, or per task whether the global batch had its labels (partial
                labels), handed to the weighting's `combine_gradients`.

        Returns:
            (gradients of the model's trainable variables, in their order, loss-scaled as the
            optimizer expects; per-task norms of the unweighted task gradients at the
            weighting's `grad_norm_source`, identical on every replica, or None).
        """
        num_replicas = replicas_in_sync(replica_context)
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
                norms[task] = _global_norm(grad, scale, replica_context, self.norm_source)
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
            shared_gradients = call_hook(
                self.weighting.combine_gradients, task_shared, labelled=labelled
            )
            if num_replicas > 1:  # every replica holds the global gradient; the optimizer sums
                shared_gradients = [
                    None if g is None else g / num_replicas for g in shared_gradients
                ]
        else:
            if self.needs_representation_gram:  # Aligned-MTL-UB: alpha_t multiplies task t
                alpha = self._representation_weights(
                    per_task, coefficients, num_boundary, replica_context, labelled
                )
                coefficients = {
                    t: coefficients[t] * alpha[i] for i, t in enumerate(self.task_names)
                }
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
                norms[task] = _global_norm(grad, scale, replica_context, self.norm_source)
        return [gradient_by_id.get(id(v)) for v in model_variables], norms

    def _representation_weights(
        self, per_task, coefficients, num_boundary, replica_context, labelled=None
    ):
        """The weighting's multipliers from the Gram matrix of the per-task gradients of the
        weighted losses at the boundary, over the global batch (identical on every replica).

        Each replica's boundary tensors are its own samples', so the global Gram matrix is the
        sum of the replicas'. The loss scale multiplies it uniformly (the weights are invariant
        to that).
        """
        vectors = [
            [ops.cast(_times(coefficients[t], g), "float32") for g in per_task[t][:num_boundary]]
            for t in self.task_names
        ]
        count = len(self.task_names)
        dots = {}
        for i in range(count):
            for j in range(i, count):  # symmetric: each pair once
                pairs = zip(vectors[i], vectors[j], strict=True)
                dots[i, j] = dots[j, i] = ops.sum(ops.stack([ops.sum(a * b) for a, b in pairs]))
        gram = ops.stack([ops.stack([dots[i, j] for j in range(count)]) for i in range(count)])
        if replicas_in_sync(replica_context) > 1:
            gram = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, gram)
        return call_hook(self.weighting.representation_weights, gram, labelled=labelled)


def _global_norm(grad, scale, replica_context, source: str):
    """Norm of a task gradient over the global batch, identical on every replica.

    Each replica's loss share has mean (over replicas) equal to the global loss, so the
    global gradient is `1/N` times the replica gradients: summed for a shared kernel,
    concatenated (squared norms summed) for the per-sample feature map.
    """
    num_replicas = replicas_in_sync(replica_context)
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


def _times(coefficient, gradient):
    """coefficient * gradient in the gradient's dtype (float16 activations under mixed precision)."""
    return ops.cast(coefficient, gradient.dtype) * gradient
