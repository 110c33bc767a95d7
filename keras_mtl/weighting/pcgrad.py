"""PCGrad, gradient surgery for multi-task learning (Yu et al., NeurIPS 2020).

For each task i, its gradient g_i over the shared variables (the whole list treated as one
flattened vector) is projected, in a random order of the other tasks j, onto the normal plane
of every ORIGINAL g_j it conflicts with:

    if g_i . g_j < 0:   g_i <- g_i - (g_i . g_j) / ||g_j||^2 * g_j

and the projected gradients are summed. The losses keep the fixed task weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.config import WeightingConfig
from keras_mtl.weighting.base import EPSILON, MethodInfo, Weighting


@keras.saving.register_keras_serializable(package="keras_mtl")
class PCGradWeighting(Weighting):
    """PCGrad: fixed loss weights, conflicting shared gradients projected before summing.

    The order in which task i visits the others is a random permutation drawn with stateless
    TF ops from (seed, step), where `step` is a state variable that `update` increments after
    every optimizer step: every replica draws the same order, and a resumed run continues the
    same sequence. Task-specific variables are not seen here (the trainer gives them the
    gradient of the total loss).

    Args:
        task_names: the tasks, in order.
        initial_weights: fixed loss weights (the trainer differentiates w_i L_i per task).
        seed: seed of the projection orders.

    Example:

    ```python
    weighting = PCGradWeighting(["depth", "semantic"])
    combined = weighting.combine_gradients(
        {"depth": [tf.constant([1.0, 0.0])], "semantic": [tf.constant([-1.0, 1.0])]}
    )  # [[0.5, 1.5]]
    ```
    """

    info = MethodInfo("pcgrad", "PCGrad (Yu et al.)")
    needs_task_gradients = True
    # An unlabelled task's gradient is set to exactly 0: it adds nothing and nothing is
    # projected onto it (a zero g_j has g_i . g_j = 0).
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        self.seed = int(seed)
        self.step = self.add_state("step", 0.0)

    def projection_orders(self):
        """int32 [T, T-1]: row i is the order in which task i is projected onto the others."""
        count = self.num_tasks
        step = ops.cast(ops.mod(self.step, 2.0**24), "int32")
        seed = tf.stack([tf.constant(self.seed, tf.int32), step])
        keys = tf.random.stateless_uniform([count, count], seed=seed)
        # A key of 2 puts task i itself last in its own row; the first T-1 entries are the others.
        keys = tf.where(tf.eye(count, dtype=tf.bool), 2.0, keys)
        return tf.argsort(keys, axis=1)[:, : count - 1]

    def combine_gradients(
        self, task_gradients: Mapping[str, Sequence[object]], labelled=None
    ) -> list:
        per_task = self.task_gradient_lists(task_gradients)
        num_variables = len(per_task[0])
        # A task whose loss does not reach a shared variable has a None gradient there: it is
        # zero. A variable no task reaches stays None.
        references = [
            next((grads[v] for grads in per_task if grads[v] is not None), None)
            for v in range(num_variables)
        ]
        present = [v for v in range(num_variables) if references[v] is not None]
        if not present:
            return [None] * num_variables
        # Gradients have their variable's (static) shape.
        shapes = [tuple(references[v].shape) for v in present]
        sizes = [math.prod(shape) for shape in shapes]
        flat = ops.stack(
            [
                ops.concatenate(
                    [
                        ops.reshape(
                            ops.cast(
                                grads[v] if grads[v] is not None else ops.zeros_like(references[v]),
                                "float32",
                            ),
                            [-1],
                        )
                        for v in present
                    ],
                    axis=0,
                )
                for grads in per_task
            ]
        )

        if labelled is not None:
            # The loss of an unlabelled task is 0 with a zero gradient already; zeroing it here
            # makes that exact whatever the tape gave.
            mask = ops.cast(self.labelled_vector(labelled), "float32")
            flat = flat * ops.expand_dims(mask, 1)
        orders = self.projection_orders()
        squared_norms = ops.sum(flat * flat, axis=1)
        total = ops.zeros_like(flat[0])
        for i in range(self.num_tasks):
            projected = flat[i]
            for k in range(self.num_tasks - 1):
                j = orders[i, k]
                other = ops.take(flat, j, axis=0)
                dot = ops.sum(projected * other)
                coefficient = ops.where(
                    dot < 0.0, dot / ops.maximum(ops.take(squared_norms, j), EPSILON), 0.0
                )
                projected = projected - coefficient * other
            total = total + projected

        pieces = tf.split(total, sizes)
        combined: list = [None] * num_variables
        for v, shape, piece in zip(present, shapes, pieces, strict=True):
            combined[v] = ops.cast(ops.reshape(piece, shape), references[v].dtype)
        return combined

    def update(
        self,
        losses: Mapping[str, object],
        grad_norms: Mapping[str, object] | None = None,
        labelled=None,
    ) -> None:
        # `step` is the random order's counter, not a task's state: it moves every step.
        del losses, grad_norms, labelled
        self.step.assign(self.step + 1.0)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"seed": self.seed})
        return config

    @classmethod
    def from_weighting_config(
        cls,
        task_names: Sequence[str],
        initial_weights: Sequence[float],
        config: WeightingConfig,
        *,
        seed: int = 0,
        **context,
    ) -> PCGradWeighting:
        del config, context
        return cls(task_names, initial_weights, seed=seed)
