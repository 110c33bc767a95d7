"""Aligned-MTL (Senushkin, Patakin, Kuznetsov, Konushin; CVPR 2023), and its -UB variant.

With G = [g_1 ... g_T] the per-task gradients, Aligned-MTL replaces sum_i g_i by the sum of
the columns of G aligned to condition number one: with the Gram matrix M = G^T G = V L V^T
(eigenvalues lambda_1 >= ... >= lambda_r > tol kept, r the numerical rank),

    B = sigma_min V_r diag(1 / sqrt(lambda_r)) V_r^T,   sigma_min = sqrt(lambda_r),
    alpha = B 1,   combined gradient = G alpha = sum_i alpha_i g_i.

G B = sigma_min U_r V_r^T (G = U S V^T): the aligned task gradients have orthogonal directions
of one common length, the smallest singular value of G, so no task dominates and the step
does not grow when gradients conflict. The rank tolerance is the authors' (and LibMTL's):
tol = lambda_max * T * eps(float32). Eigen-directions at or below it are dropped; when
every gradient is zero alpha is 0 (the combined gradient is zero, as the sum would be).

`aligned_mtl` takes g_i over the shared variables (one backward pass through the trunk per
task, like PCGrad). `aligned_mtl_ub` (the paper's "upper bound" variant, Aligned-MTL-UB) takes
g_i at the shared representation, the trunk's hand-off tensors, which the split backward pass
has anyway: a T x T Gram matrix and one weighted backward pass, the cost of vanilla.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_mtl.weighting.base import MethodInfo, Weighting, keep_unlabelled

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def aligned_weights(gram):
    """alpha = sigma_min V diag(1/sqrt(lambda)) V^T 1 of a T x T Gram matrix (float32 vector).

    Computed in float64 (a T x T eigendecomposition costs nothing); a non-finite Gram matrix
    (fp16 overflow) gives non-finite weights, so the loss-scale optimizer still skips the step.

    Args:
        gram: the symmetric positive semi-definite Gram matrix G^T G of the task gradients.

    Example:

    ```python
    aligned_weights(tf.constant([[4.0, 0.0], [0.0, 1.0]]))  # [0.5, 1.0]
    ```
    """
    gram = tf.cast(gram, tf.float64)
    count = int(gram.shape[-1])
    finite = tf.reduce_all(tf.math.is_finite(gram))
    # eigh of a NaN matrix is undefined (and slow on some devices): decompose the identity
    # instead and let the NaN through below.
    safe = tf.where(finite, gram, tf.eye(count, dtype=tf.float64))
    safe = 0.5 * (safe + tf.transpose(safe))  # exactly symmetric
    eigenvalues, basis = tf.linalg.eigh(safe)
    tolerance = tf.reduce_max(eigenvalues) * count * FLOAT32_EPS
    kept = eigenvalues > tolerance
    smallest = tf.reduce_min(tf.where(kept, eigenvalues, tf.constant(np.inf, tf.float64)))
    any_kept = tf.reduce_any(kept)
    scale = tf.where(any_kept, tf.sqrt(tf.where(any_kept, smallest, 1.0)), 0.0)
    inverse_roots = tf.where(kept, 1.0 / tf.sqrt(tf.where(kept, eigenvalues, 1.0)), 0.0)
    mixing = scale * tf.matmul(basis * inverse_roots[None, :], basis, transpose_b=True)
    alpha = tf.reduce_sum(mixing, axis=1)
    alpha = tf.where(finite, alpha, tf.constant(np.nan, tf.float64))
    return tf.cast(alpha, tf.float32)


def gram_matrix(per_task: Sequence[Sequence[object]]):
    """T x T float32 matrix of dot products of per-task gradient lists (None entries = 0)."""
    count = len(per_task)
    rows = []
    for i in range(count):
        row = []
        for j in range(count):
            terms = [
                ops.sum(ops.cast(a, "float32") * ops.cast(b, "float32"))
                for a, b in zip(per_task[i], per_task[j], strict=True)
                if a is not None and b is not None
            ]
            row.append(ops.sum(ops.stack(terms)) if terms else ops.zeros((), "float32"))
        rows.append(ops.stack(row))
    return ops.stack(rows)


@keras.saving.register_keras_serializable(package="keras_mtl")
class AlignedMTLWeighting(Weighting):
    """Aligned-MTL on the per-task gradients of the shared variables.

    The losses keep the fixed `--task_weights` (the trainer differentiates w_i L_i per task);
    the trainer all-reduces the per-task gradients over replicas before `combine_gradients`,
    so every replica computes the same alpha and the same combined gradient. Task-specific
    variables get the gradient of the total loss (their own task's). `task_weights()` reports
    alpha_i w_i of the last step (w_i before the first): the multiplier of grad L_i on the
    shared variables.

    Partial labels (`labelled`): an unlabelled task's gradient is zero, so its row and column
    of the Gram matrix are zero, the eigenvalue it brings is dropped and its alpha is 0: the
    step is the aligned combination of the labelled tasks alone. Its logged alpha keeps the
    value of its last labelled step.

    Args:
        task_names: the tasks, in order.
        initial_weights: fixed loss weights; default all 1.

    Example:

    ```python
    weighting = AlignedMTLWeighting(["depth", "semantic"])
    combined = weighting.combine_gradients(
        {"depth": [tf.constant([2.0, 0.0])], "semantic": [tf.constant([0.0, 1.0])]}
    )  # [[1.0, 1.0]]: both directions scaled to the smaller norm
    ```
    """

    info = MethodInfo("aligned_mtl", "Aligned-MTL (Senushkin et al.)")
    needs_task_gradients = True
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        # alpha of the last step; 1 until the first step.
        self.alpha = self.add_state("alpha", [1.0] * self.num_tasks)

    def _step_weights(self, gram, labelled=None):
        """alpha of this step from the Gram matrix, over the labelled tasks (0 for the others,
        whose logged alpha keeps its last labelled value)."""
        mask = self.labelled_vector(labelled)
        if mask is None:
            alpha = aligned_weights(gram)
            self.alpha.assign(alpha)
            return alpha
        # An unlabelled task's gradient is zero already; zeroing its row and column makes
        # that exact whatever round-off the trainer's arithmetic left.
        gram = ops.where(ops.logical_and(mask[:, None], mask[None, :]), gram, 0.0)
        alpha = ops.where(mask, aligned_weights(gram), 0.0)
        self.alpha.assign(keep_unlabelled(alpha, self.alpha, mask))
        return alpha

    def task_weights(self) -> dict[str, object]:
        vector = ops.convert_to_tensor(self.initial_weights, dtype="float32") * self.alpha
        return {name: vector[i] for i, name in enumerate(self.task_names)}

    def combine_gradients(
        self, task_gradients: Mapping[str, Sequence[object]], labelled=None
    ) -> list:
        per_task = self.task_gradient_lists(task_gradients)
        num_variables = len(per_task[0])
        alpha = self._step_weights(gram_matrix(per_task), labelled)
        combined: list = []
        for v in range(num_variables):
            terms = [
                ops.cast(alpha[i], grads[v].dtype) * grads[v]
                for i, grads in enumerate(per_task)
                if grads[v] is not None
            ]
            # A task whose loss does not reach a variable adds nothing; none reaching it: None.
            combined.append(ops.sum(ops.stack(terms), axis=0) if terms else None)
        return combined


@keras.saving.register_keras_serializable(package="keras_mtl")
class AlignedMTLUBWeighting(AlignedMTLWeighting):
    """Aligned-MTL-UB: alpha from the per-task gradients at the shared representation.

    The trainer hands `representation_weights` the Gram matrix of the per-task gradients of
    w_i L_i at the trunk's hand-off tensors (all of them, flattened and concatenated over the
    global batch, summed over replicas), and back-propagates sum_i alpha_i w_i dL_i/dh through
    the trunk once. Task heads get their own task's gradient, as in `aligned_mtl`.

    Args:
        task_names: the tasks, in order.
        initial_weights: fixed loss weights; default all 1.

    Example:

    ```python
    weighting = AlignedMTLUBWeighting(["depth", "semantic"])
    weighting.representation_weights(tf.constant([[4.0, 0.0], [0.0, 1.0]]))  # [0.5, 1.0]
    ```
    """

    info = MethodInfo("aligned_mtl_ub", "Aligned-MTL-UB (Senushkin et al.)")
    needs_task_gradients = False
    needs_representation_gram = True

    def representation_weights(self, gram, labelled=None):
        return self._step_weights(gram, labelled)

    def combine_gradients(
        self, task_gradients: Mapping[str, Sequence[object]], labelled=None
    ) -> list:
        raise NotImplementedError("aligned_mtl_ub combines at the representation")


__all__ = [
    "AlignedMTLUBWeighting",
    "AlignedMTLWeighting",
    "aligned_weights",
    "gram_matrix",
]
