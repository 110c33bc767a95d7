"""FAMO, Fast Adaptive Multitask Optimization (Liu, Liang, Chen, Qiang; NeurIPS 2023).

Task logits xi (one per task, initial 0), z = softmax(xi). With D_i = L_i - L_i* + eps (L_i*
a lower bound of task i's loss, default 0), the network is trained on

    sum_i z_i log D_i / c,    c = stop_gradient(sum_i z_i / D_i),

whose gradient is sum_i k_i grad L_i with k_i = z_i / (c D_i): the update direction of the
paper's Algorithm 1, d = (sum_i z_i / D_i)^-1 sum_i (z_i / D_i) grad L_i, so that every task's
log-loss decreases at about the same rate. The normaliser DIVIDES, as in the paper; the
authors' repository writes it both ways across its experiment scripts, this follows the paper
(the weights k_i then sum to 1: the step is a convex combination of the task gradients
whatever the losses' scale; multiplying by c instead would scale it by (sum_i z_i / D_i)^2).

After the optimizer step the trainer recomputes the losses on the same batch without gradient
(`update_after_step`); with delta_i = log D_i(before) - log D_i(after) the logits take one Adam
step (their own Adam, lr 0.025, betas 0.9/0.999, eps 1e-8, as PyTorch's `Adam(weight_decay=
gamma)` in the authors' code) on the gradient

    g = z * (delta - <z, delta>) + gamma * xi

(the softmax Jacobian applied to delta, plus the coupled weight decay). A task whose loss fell
faster than the z-weighted mean loses weight.

Partial labels (`labelled`): a batch without a task's labels leaves that task out of the step,
as if the problem had only the labelled tasks: z is the softmax over the labelled tasks' logits
(the objective, k_i, delta's mean and the logit gradient use it), an unlabelled task gets k_i = 0
and adds no term, and its logit, Adam moments, Adam step count and logged weight stay as they
were. Each task has its own Adam step count, so a task's bias correction counts the steps that
updated it (with every task labelled, the counts are equal and this is plain Adam).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.tasks import TASK_NAMES
from keras_mtl.weighting.base import MethodInfo, Weighting, all_finite

# D_i = L_i - L_i* + FAMO_EPSILON, the authors' constant.
FAMO_EPSILON = 1e-8
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-8


def mean_over_replicas(values):
    """`values` (a float32 vector) averaged over the replicas of the current replica context.

    Each replica holds its share of a task loss, whose mean over replicas is the loss of the
    global batch (`keras_mtl.losses`); outside any strategy this is the identity.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, values)
    return total / float(context.num_replicas_in_sync)


@keras.saving.register_keras_serializable(package="keras_mtl")
class FAMOWeighting(Weighting):
    """FAMO: softmax task logits moved by the observed drop of each task's log-loss.

    The logits xi, their Adam moments and step count are state variables (not trained by the
    model optimizer), so checkpoints resume them. `task_weights()` reports k_i = z_i / (c D_i),
    the multiplier of L_i in the gradient of the last training step (1 before the first).

    Under N replicas each replica holds its share L_{i,r} of the global loss; the weights k_i
    are taken from the global losses (the mean over replicas), and each replica differentiates
    sum_i k_i L_{i,r}, so the summed gradient is the one-device gradient exactly (the
    objective is not linear in the losses: the per-replica log D would not be).

    Args:
        task_names: the tasks, in order.
        initial_weights: initial xi_i = log(w_i) - mean(log w), so z is proportional to w;
            all ones (the default) give xi = 0, the paper's start.
        learning_rate: Adam learning rate of the logits (0.025 in the paper).
        gamma: weight decay of the logits (0.01 on Cityscapes, 0.001 on NYUv2 in the paper).
        min_losses: L_i*, one lower bound per task (default 0).

    Example:

    ```python
    famo = FAMOWeighting(["depth", "semantic"])
    total = famo.combine_losses({"depth": 0.8, "semantic": 1.5})  # inside the tape
    # ... optimizer step, then the same batch's losses without gradient:
    famo.update_after_step({"depth": 0.8, "semantic": 1.5}, {"depth": 0.6, "semantic": 1.45})
    famo.task_weights()  # depth's loss fell faster: its logit goes down
    ```
    """

    info = MethodInfo(
        "famo",
        "FAMO (Liu et al.)",
        config_fields=("famo_lr", "famo_gamma", "famo_min_losses"),
    )
    needs_losses_after_step = True
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        learning_rate: float = 0.025,
        gamma: float = 0.01,
        min_losses: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        self.learning_rate = float(learning_rate)
        self.gamma = float(gamma)
        if min_losses is None:
            min_losses = [0.0] * self.num_tasks
        if len(min_losses) != self.num_tasks:
            raise ValueError(f"{len(min_losses)} min_losses for {self.num_tasks} tasks")
        self.min_losses = tuple(float(v) for v in min_losses)
        logs = [math.log(w) for w in self.initial_weights]
        mean_log = sum(logs) / len(logs)
        self.logits = self.add_state("logits", [v - mean_log for v in logs])
        self.adam_m = self.add_state("adam_m", [0.0] * self.num_tasks)
        self.adam_v = self.add_state("adam_v", [0.0] * self.num_tasks)
        self.adam_steps = self.add_state("adam_steps", [0.0] * self.num_tasks)
        self.last_weights = self.add_state("last_weights", [1.0] * self.num_tasks)

    def _shifted(self, losses):
        """D = max(L - L*, 0) + eps: a loss below its bound counts as reaching it (log stays
        finite; such a task gets the largest weight, as its D is eps)."""
        floor = ops.convert_to_tensor(self.min_losses, dtype="float32")
        return ops.maximum(losses - floor, 0.0) + FAMO_EPSILON

    def softmax(self, mask=None):
        """z = softmax(xi) over the labelled tasks (`mask`, a boolean vector; None = all),
        0 for the others; a float32 vector in `task_names` order."""
        z = ops.softmax(ops.convert_to_tensor(self.logits))
        if mask is None:
            return z
        z = ops.where(mask, z, 0.0)
        return z / ops.maximum(ops.sum(z), FAMO_EPSILON)

    def gradient_weights(self, losses, mask=None):
        """k_i = z_i / (D_i sum_j z_j / D_j) of global-batch losses (a float32 vector); 0 for
        an unlabelled task (all 0 when no task is labelled)."""
        inverse = self.softmax(mask) / self._shifted(losses)
        return inverse / ops.maximum(ops.sum(inverse), FAMO_EPSILON)

    def combine_losses(self, losses: Mapping[str, object], labelled=None):
        mask = self.labelled_vector(labelled)
        local = self.stack(losses)
        global_losses = mean_over_replicas(ops.stop_gradient(local))
        z = self.softmax(mask)
        shifted = self._shifted(global_losses)
        weights = ops.stop_gradient(self.gradient_weights(global_losses, mask))
        # Value: the paper's objective on the global batch; gradient: sum_i k_i grad L_{i,r}.
        normaliser = ops.maximum(ops.sum(z / shifted), FAMO_EPSILON)
        objective = ops.sum(z * ops.log(shifted)) / normaliser
        return ops.stop_gradient(objective) + ops.sum(weights * (local - ops.stop_gradient(local)))

    def weight_vector(self):
        return ops.convert_to_tensor(self.last_weights)

    def logit_gradient(self, losses_before, losses_after, mask=None):
        """g = z * (delta - <z, delta>) + gamma * xi, delta = log D(before) - log D(after);
        z over the labelled tasks (`mask`), whose entries alone are used."""
        z = self.softmax(mask)
        delta = ops.log(self._shifted(losses_before)) - ops.log(self._shifted(losses_after))
        logits = ops.convert_to_tensor(self.logits)
        return z * (delta - ops.sum(z * delta)) + self.gamma * logits

    def update_after_step(
        self, losses: Mapping[str, object], losses_after: Mapping[str, object], labelled=None
    ) -> None:
        mask = self.labelled_vector(labelled)
        before, after = self.stack(losses), self.stack(losses_after)
        if mask is not None:
            # An unlabelled task's losses are 0 both times: no information, and log(eps)
            # terms are kept out of the arithmetic altogether.
            before, after = ops.where(mask, before, 1.0), ops.where(mask, after, 1.0)
        gradient = self.logit_gradient(before, after, mask)
        step = self.adam_steps + 1.0
        m = ADAM_BETA_1 * self.adam_m + (1.0 - ADAM_BETA_1) * gradient
        v = ADAM_BETA_2 * self.adam_v + (1.0 - ADAM_BETA_2) * ops.square(gradient)
        m_hat = m / (1.0 - ops.power(ADAM_BETA_1, step))
        v_hat = v / (1.0 - ops.power(ADAM_BETA_2, step))
        logits = self.logits - self.learning_rate * m_hat / (ops.sqrt(v_hat) + ADAM_EPSILON)
        weights = self.gradient_weights(before, mask)
        # A non-finite loss (diverged batch, fp16 overflow) leaves every state variable as is;
        # so does a batch without a task's labels for that task's entries.
        ok = all_finite(before, after, logits, weights)
        if mask is not None:
            ok = ops.logical_and(ok, mask)
        self.last_weights.assign(ops.where(ok, weights, self.last_weights))
        self.logits.assign(ops.where(ok, logits, self.logits))
        self.adam_m.assign(ops.where(ok, m, self.adam_m))
        self.adam_v.assign(ops.where(ok, v, self.adam_v))
        self.adam_steps.assign(ops.where(ok, step, self.adam_steps))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "learning_rate": self.learning_rate,
                "gamma": self.gamma,
                "min_losses": list(self.min_losses),
            }
        )
        return config

    @classmethod
    def from_weighting_config(
        cls,
        task_names: Sequence[str],
        initial_weights: Sequence[float],
        config: WeightingConfig,
        **context,
    ) -> FAMOWeighting:
        del context
        if not (math.isfinite(config.famo_lr) and config.famo_lr > 0):
            raise UserError(f"--famo_lr {config.famo_lr}: must be > 0 (0.025 in the paper)")
        if not (math.isfinite(config.famo_gamma) and config.famo_gamma >= 0):
            raise UserError(
                f"--famo_gamma {config.famo_gamma}: must be >= 0 (0.01 on Cityscapes, "
                "0.001 on NYUv2 in the paper)"
            )
        bounds = tuple(config.famo_min_losses)
        if len(bounds) != len(TASK_NAMES) or not all(
            isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in bounds
        ):
            raise UserError(
                f"--famo_min_losses {list(bounds)}: give {len(TASK_NAMES)} numbers >= 0, one "
                f"per task ({', '.join(TASK_NAMES)})"
            )
        return cls(
            task_names,
            initial_weights,
            learning_rate=config.famo_lr,
            gamma=config.famo_gamma,
            min_losses=[bounds[TASK_NAMES.index(name)] for name in task_names],
        )
