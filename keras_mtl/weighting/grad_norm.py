"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018) with the closed-form weight step.

GradNorm balances the gradient norms G_i = ||grad_W (w_i L_i)|| = w_i n_i at the last shared
layer's kernel W so that tasks that train slower (larger loss ratio L_i / L_i(0)) get larger
gradients. Its objective L_grad = sum_i |G_i - target_i|, target_i = mean(G) * r_i^alpha held
constant, has the closed-form derivative dL_grad/dw_i = sign(G_i - target_i) * n_i, so no
second-order tape is needed (TF cannot differentiate twice through bilinear resize anyway).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.tasks import TASKS, num_channels
from keras_mtl.weighting.base import (
    EPSILON,
    MethodInfo,
    Weighting,
    all_finite,
    keep_unlabelled,
    masked_mean,
    normalized_weights,
    renormalize,
    renormalize_labelled,
    require_grad_norms,
)

INITIAL_LOSS_CHOICES = ("measured", "theoretical")


@keras.saving.register_keras_serializable(package="keras_mtl")
class GradNormWeighting(Weighting):
    """GradNorm task weighting, updated every step by `update(losses, grad_norms)`.

    The weights w live in a state variable (not trained by the model optimizer). Each update
    takes one plain gradient step of L_grad with its own learning rate (the paper's rate 0.025;
    no momentum, so the step size scales with the norms n_i), clips w to >= `min_weight` and
    rescales it to sum to T. The initial weights are rescaled to sum to T at construction.

    L_i(0), the loss the ratios are taken against, is measured at the first update and kept in
    a state variable with an `initialized` flag, so resuming from a checkpoint does not measure
    it again. With `initial_loss="theoretical"`, classification tasks use log(C) (the loss of a
    uniform prediction over C classes) and regression tasks are still measured.

    Partial labels (`labelled`): a step sees only the tasks the batch had labels for. Their
    L_i(0) is measured at their first labelled batch (an unmeasured L_i(0) is 0); the loss
    ratios, their mean, the mean norm and the target are taken over them; only their weights
    move, rescaled to keep their sum, so an unlabelled task keeps its weight and L_i(0).

    Args:
        task_names: the tasks, in order.
        initial_weights: initial weights (rescaled to sum to T); default all 1.
        alpha: GradNorm's restoring-force exponent (1.5 in the paper).
        learning_rate: step size of the weight update.
        initial_loss: `"measured"` or `"theoretical"`.
        semantic_classes: C of the semantic task (for the theoretical initial loss).
        min_weight: floor applied before renormalisation, keeps every weight > 0.

    Example:

    ```python
    weighting = GradNormWeighting(["depth", "semantic", "motion"], alpha=1.5)
    weighting.update({"depth": 0.9, "semantic": 1.6, "motion": 0.7},
                     {"depth": 2.0, "semantic": 0.5, "motion": 0.4})
    weighting.task_weights()  # depth, with the largest gradient norm, loses weight
    ```
    """

    info = MethodInfo(
        "grad_norm",
        "GradNorm (Chen et al.)",
        config_fields=("grad_norm_alpha", "grad_norm_lr", "grad_norm_initial_loss"),
    )
    grad_norm_source = "shared_kernel"
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        alpha: float = 1.5,
        learning_rate: float = 0.025,
        initial_loss: str = "measured",
        semantic_classes: int = 5,
        min_weight: float = 1e-3,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        if initial_loss not in INITIAL_LOSS_CHOICES:
            raise ValueError(
                f"initial_loss must be one of {INITIAL_LOSS_CHOICES}, got {initial_loss!r}"
            )
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)
        self.initial_loss = initial_loss
        self.semantic_classes = int(semantic_classes)
        self.min_weight = float(min_weight)

        # 1 where L_i(0) is log(C), known before training; 0 where it is measured.
        theoretical = [
            initial_loss == "theoretical" and TASKS[name].kind == "classification"
            for name in self.task_names
        ]
        self._measured = tuple(not t for t in theoretical)
        known_initial = [
            math.log(num_channels(name, self.semantic_classes)) if t else 0.0
            for name, t in zip(self.task_names, theoretical, strict=True)
        ]
        self.loss_weights = self.add_state("loss_weights", normalized_weights(self.initial_weights))
        self.initial_losses = self.add_state("initial_losses", known_initial)
        self.initialized = self.add_state("initialized", 0.0)

    def weight_vector(self):
        return ops.convert_to_tensor(self.loss_weights)

    def update(
        self,
        losses: Mapping[str, object],
        grad_norms: Mapping[str, object] | None = None,
        labelled=None,
    ) -> None:
        require_grad_norms(self, grad_norms)
        if labelled is not None:
            self._update_labelled(losses, grad_norms, self.labelled_vector(labelled))
            return
        losses = self.stack(losses)
        norms = self.stack(grad_norms)
        weights = ops.convert_to_tensor(self.loss_weights)

        measured = ops.convert_to_tensor(self._measured)
        measure_now = ops.logical_and(measured, self.initialized < 0.5)
        initial = ops.where(measure_now, losses, self.initial_losses)
        ratio = losses / ops.maximum(initial, EPSILON)
        inverse_rate = ratio / ops.maximum(ops.mean(ratio), EPSILON)
        norms_weighted = weights * norms
        target = ops.stop_gradient(ops.mean(norms_weighted) * inverse_rate**self.alpha)
        # dL_grad/dw_i = sign(G_i - target_i) n_i, divided by the mean norm so the step is
        # independent of the losses' scale (as an Adam step on w would be): a raw step of
        # lr * n_i swung the weights by +-0.5 per step on real gradient norms.
        grad = ops.sign(norms_weighted - target) * norms / ops.maximum(ops.mean(norms), EPSILON)
        new_weights = renormalize(weights - self.learning_rate * grad, self.min_weight)

        # A non-finite step (NaN loss, overflowing norm) leaves every state variable untouched.
        ok = ops.logical_and(all_finite(losses, norms, new_weights), ops.all(initial > 0))
        self.loss_weights.assign(ops.where(ok, new_weights, weights))
        self.initial_losses.assign(ops.where(ok, initial, self.initial_losses))
        self.initialized.assign(ops.where(ok, 1.0, self.initialized))

    def _update_labelled(self, losses, grad_norms, mask) -> None:
        """`update` of a step that saw only the tasks of `mask` (partial labels)."""
        losses = self.stack(losses)
        norms = self.stack(grad_norms)
        weights = ops.convert_to_tensor(self.loss_weights)
        old_initial = ops.convert_to_tensor(self.initial_losses)

        # L_i(0) of a measured task: at its first labelled batch (0 = not measured yet).
        measured = ops.convert_to_tensor(self._measured)
        unmeasured = ops.logical_or(self.initialized < 0.5, old_initial <= 0.0)
        measure_now = ops.logical_and(ops.logical_and(measured, unmeasured), mask)
        initial = ops.where(measure_now, losses, old_initial)
        ratio = ops.where(mask, losses / ops.maximum(initial, EPSILON), 0.0)
        inverse_rate = ratio / ops.maximum(masked_mean(ratio, mask), EPSILON)
        norms_weighted = weights * norms
        target = ops.stop_gradient(masked_mean(norms_weighted, mask) * inverse_rate**self.alpha)
        step = ops.sign(norms_weighted - target) * norms
        grad = ops.where(mask, step / ops.maximum(masked_mean(norms, mask), EPSILON), 0.0)
        new_weights = renormalize_labelled(
            weights - self.learning_rate * grad, weights, self.min_weight, mask
        )

        # A non-finite step leaves every state variable untouched, as does a batch without
        # any labelled task; an unlabelled task's entries stay as they were.
        labelled_initial = ops.where(mask, initial, 1.0)
        ok = ops.logical_and(
            all_finite(ops.where(mask, losses, 0.0), ops.where(mask, norms, 0.0), new_weights),
            ops.logical_and(ops.all(labelled_initial > 0), ops.any(mask)),
        )
        self.loss_weights.assign(ops.where(ok, new_weights, weights))
        self.initial_losses.assign(
            ops.where(ok, keep_unlabelled(initial, old_initial, mask), old_initial)
        )
        self.initialized.assign(ops.where(ok, 1.0, self.initialized))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "learning_rate": self.learning_rate,
                "initial_loss": self.initial_loss,
                "semantic_classes": self.semantic_classes,
                "min_weight": self.min_weight,
            }
        )
        return config

    @classmethod
    def from_weighting_config(
        cls,
        task_names: Sequence[str],
        initial_weights: Sequence[float],
        config: WeightingConfig,
        *,
        semantic_classes: int = 5,
        **context,
    ) -> GradNormWeighting:
        del context
        if config.grad_norm_initial_loss not in INITIAL_LOSS_CHOICES:
            raise UserError(
                f"--grad_norm_initial_loss {config.grad_norm_initial_loss!r}: choose one of "
                f"{', '.join(INITIAL_LOSS_CHOICES)}"
            )
        if not config.grad_norm_alpha >= 0:
            raise UserError(
                f"--grad_norm_alpha {config.grad_norm_alpha}: must be >= 0 (1.5 in the paper)"
            )
        if not config.grad_norm_lr > 0:
            raise UserError(
                f"--grad_norm_lr {config.grad_norm_lr}: must be > 0 (0.025 in the paper)"
            )
        return cls(
            task_names,
            initial_weights,
            alpha=config.grad_norm_alpha,
            learning_rate=config.grad_norm_lr,
            initial_loss=config.grad_norm_initial_loss,
            semantic_classes=semantic_classes,
        )
