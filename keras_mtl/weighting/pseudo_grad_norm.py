"""Texas Instruments' "pseudo GradNorm": a first-order multiplicative GradNorm heuristic.

The rule of TI's edgeai-torchvision multitask script (the seed's "gradient-norm based" row),
with its branch bug fixed so the weights actually move. Every step, with n_i = ||dL_i/dF|| the
norm of the unweighted task loss at the shared encoder feature map F:

    G_i      = w_i * n_i
    Gbar_i   = EMA(G_i, rate 1e-3)
    S_i, R_i = EMA(L_i, rate 1e-3), EMA(L_i, rate 1e-6)   (R_i ~ L_i(0))
    r_i      = S_i / R_i
    target_i = mean(Gbar) * (r_i / sum(r))^alpha          (alpha 0.75)
    w_i     += rate * w_i * (target_i / Gbar_i - 1)       (rate 1e-4)
    w       <- T * w / sum(w)

EMA(x, a) means e <- (1 - a) e + a x.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
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


def _ema(average, value, rate: float, first):
    # The first update starts every average at its first value: starting at 0 would make
    # S / R and target / Gbar blow up for thousands of steps.
    return ops.where(first, value, (1.0 - rate) * average + rate * value)


@keras.saving.register_keras_serializable(package="keras_mtl")
class PseudoGradNormWeighting(Weighting):
    """TI's pseudo GradNorm, updated every step by `update(losses, grad_norms)`.

    All EMAs (norms, short and long loss averages) are initialised to their first value at
    the first update (an `initialized` state variable marks it, so resume does not restart
    them). The gradient-norm EMA uses the short rate (1e-3 in TI's code). Weights start at the
    initial weights rescaled to sum to T, are clipped to >= `min_weight` and renormalised to
    sum to T after every step.

    Partial labels (`labelled`): the EMAs of an unlabelled task stay as they were (a task's
    EMAs start at its first labelled batch: a long loss EMA of 0 marks "not started"), the
    mean norm and the ratio sum are taken over the labelled tasks (the sum scaled by T / |P|,
    so that it equals the plain sum when every task is labelled), and only the labelled
    tasks' weights move, rescaled to keep their sum.

    Args:
        task_names: the tasks, in order.
        initial_weights: initial weights (rescaled to sum to T); default all 1.
        alpha: exponent of the normalised loss ratio (0.75).
        rate: multiplicative update rate (1e-4).
        ema_short: rate of the gradient-norm EMA and the short loss EMA (1e-3).
        ema_long: rate of the long loss EMA (1e-6), which approximates L_i(0).
        min_weight: floor applied before renormalisation, keeps every weight > 0.

    Example:

    ```python
    weighting = PseudoGradNormWeighting(["depth", "semantic", "motion"])
    weighting.update({"depth": 0.9, "semantic": 1.6, "motion": 0.7},
                     {"depth": 2.0, "semantic": 0.5, "motion": 0.4})
    ```
    """

    # The original's command line spelled TI's method "learned" in places.
    info = MethodInfo(
        "pseudo_grad_norm",
        "Pseudo-GradNorm (TI, seed's row)",
        aliases=("learned",),
        config_fields=(
            "pseudo_grad_norm_alpha",
            "pseudo_grad_norm_rate",
            "pseudo_grad_norm_ema_short",
            "pseudo_grad_norm_ema_long",
        ),
    )
    grad_norm_source = "shared_features"
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        alpha: float = 0.75,
        rate: float = 1e-4,
        ema_short: float = 1e-3,
        ema_long: float = 1e-6,
        min_weight: float = 1e-3,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        self.alpha = float(alpha)
        self.rate = float(rate)
        self.ema_short = float(ema_short)
        self.ema_long = float(ema_long)
        self.min_weight = float(min_weight)
        zeros = [0.0] * self.num_tasks
        self.loss_weights = self.add_state("loss_weights", normalized_weights(self.initial_weights))
        self.grad_norm_ema = self.add_state("grad_norm_ema", zeros)
        self.loss_ema_short = self.add_state("loss_ema_short", zeros)
        self.loss_ema_long = self.add_state("loss_ema_long", zeros)
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
        first = self.initialized < 0.5

        norm_ema = _ema(self.grad_norm_ema, weights * norms, self.ema_short, first)
        short = _ema(self.loss_ema_short, losses, self.ema_short, first)
        long = _ema(self.loss_ema_long, losses, self.ema_long, first)
        ratio = short / ops.maximum(long, EPSILON)
        target = ops.mean(norm_ema) * (ratio / ops.maximum(ops.sum(ratio), EPSILON)) ** self.alpha
        step = self.rate * weights * (target / ops.maximum(norm_ema, EPSILON) - 1.0)
        new_weights = renormalize(weights + step, self.min_weight)

        # A non-finite step (NaN loss, overflowing norm) leaves every state variable untouched.
        ok = all_finite(losses, norms, new_weights)
        self.loss_weights.assign(ops.where(ok, new_weights, weights))
        self.grad_norm_ema.assign(ops.where(ok, norm_ema, self.grad_norm_ema))
        self.loss_ema_short.assign(ops.where(ok, short, self.loss_ema_short))
        self.loss_ema_long.assign(ops.where(ok, long, self.loss_ema_long))
        self.initialized.assign(ops.where(ok, 1.0, self.initialized))

    def _update_labelled(self, losses, grad_norms, mask) -> None:
        """`update` of a step that saw only the tasks of `mask` (partial labels)."""
        losses = self.stack(losses)
        norms = self.stack(grad_norms)
        weights = ops.convert_to_tensor(self.loss_weights)
        # Per task: the EMAs start at the task's first labelled batch.
        first = ops.logical_or(self.initialized < 0.5, self.loss_ema_long <= 0.0)

        norm_ema = _ema(self.grad_norm_ema, weights * norms, self.ema_short, first)
        short = _ema(self.loss_ema_short, losses, self.ema_short, first)
        long = _ema(self.loss_ema_long, losses, self.ema_long, first)
        ratio = ops.where(mask, short / ops.maximum(long, EPSILON), 0.0)
        ratio_sum = masked_mean(ratio, mask) * self.num_tasks
        target = masked_mean(norm_ema, mask) * (ratio / ops.maximum(ratio_sum, EPSILON)) ** (
            self.alpha
        )
        step = self.rate * weights * (target / ops.maximum(norm_ema, EPSILON) - 1.0)
        new_weights = renormalize_labelled(
            weights + ops.where(mask, step, 0.0), weights, self.min_weight, mask
        )

        # A non-finite step leaves every state variable untouched, as does a batch without
        # any labelled task; an unlabelled task's entries stay as they were.
        ok = ops.logical_and(
            all_finite(ops.where(mask, losses, 0.0), ops.where(mask, norms, 0.0), new_weights),
            ops.any(mask),
        )
        for variable, value in (
            (self.grad_norm_ema, norm_ema),
            (self.loss_ema_short, short),
            (self.loss_ema_long, long),
        ):
            kept = keep_unlabelled(value, variable, mask)
            variable.assign(ops.where(ok, kept, variable))
        self.loss_weights.assign(ops.where(ok, new_weights, weights))
        self.initialized.assign(ops.where(ok, 1.0, self.initialized))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "rate": self.rate,
                "ema_short": self.ema_short,
                "ema_long": self.ema_long,
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
        **context,
    ) -> PseudoGradNormWeighting:
        del context
        if not config.pseudo_grad_norm_alpha >= 0:
            raise UserError(
                f"--pseudo_grad_norm_alpha {config.pseudo_grad_norm_alpha}: must be >= 0 (TI: 0.75)"
            )
        for flag, value in (
            ("pseudo_grad_norm_rate", config.pseudo_grad_norm_rate),
            ("pseudo_grad_norm_ema_short", config.pseudo_grad_norm_ema_short),
            ("pseudo_grad_norm_ema_long", config.pseudo_grad_norm_ema_long),
        ):
            if not 0 < value < 1:
                raise UserError(f"--{flag} {value}: must be between 0 and 1 (exclusive)")
        return cls(
            task_names,
            initial_weights,
            alpha=config.pseudo_grad_norm_alpha,
            rate=config.pseudo_grad_norm_rate,
            ema_short=config.pseudo_grad_norm_ema_short,
            ema_long=config.pseudo_grad_norm_ema_long,
        )
