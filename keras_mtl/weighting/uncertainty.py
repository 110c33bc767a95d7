"""Homoscedastic uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018).

Each task learns s_i = log sigma_i^2 jointly with the network (trained by the model's
optimizer). The total loss is the negative log-likelihood up to constants:

    regression, Laplace likelihood (L1-type loss, default for depth):  exp(-s) L + s
    regression, Gaussian likelihood (L2-type loss):               0.5 exp(-s) L + 0.5 s
    classification (cross-entropy):                                    exp(-s) L + 0.5 s

At the optimum of s the effective weight is 1/L (Laplace) or 1/(2L): a negative total loss is
expected, never select models or tune on it. The s variables are trained by the model's
optimizer but never decayed (the trainer decays the network's variables only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.tasks import TASKS
from keras_mtl.weighting.base import MethodInfo, Weighting

LIKELIHOOD_CHOICES = ("laplace", "gaussian")


def likelihood_coefficients(kind: str, regression_likelihood: str) -> tuple[float, float]:
    """(a, b) of the per-task term a * exp(-s) * L + b * s."""
    if kind == "classification":
        return 1.0, 0.5
    if regression_likelihood == "laplace":
        return 1.0, 1.0
    return 0.5, 0.5


@keras.saving.register_keras_serializable(package="keras_mtl")
class UncertaintyWeighting(Weighting):
    """Kendall uncertainty weighting with one trainable log-variance per task.

    s_i starts at -log(w_i) for the initial weights w (0 for the default all-ones), so that
    exp(-s_i) = w_i at the start: the effective weight starts at w_i for Laplace regression and
    classification, and at w_i / 2 for Gaussian regression. `task_weights()` reports the
    effective multiplier of L_i (a_i exp(-s_i)).

    Partial labels (`labelled`): an unlabelled task adds no term at all (its loss is 0, and
    the `b s` regulariser alone would pull its s down without bound); its s is listed by
    `task_state_variables`, so the trainer restores it after the optimizer step.

    Args:
        task_names: the tasks, in order.
        initial_weights: sets the initial s_i = -log(w_i); default all 1 (s = 0).
        depth_likelihood: `"laplace"` (default; for L1/SmoothL1-type depth losses) or
            `"gaussian"` (for L2-type losses); applies to every regression task.

    Example:

    ```python
    weighting = UncertaintyWeighting(["depth", "semantic", "motion"])
    total = weighting.combine_losses({"depth": 0.9, "semantic": 1.6, "motion": 0.7})
    # the trainer trains weighting.trainable_variables with the model
    ```
    """

    info = MethodInfo(
        "uncertainty",
        "Uncertainty (Kendall et al.)",
        config_fields=("uncertainty_depth_likelihood",),
    )
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        depth_likelihood: str = "laplace",
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        if depth_likelihood not in LIKELIHOOD_CHOICES:
            raise ValueError(
                f"depth_likelihood must be one of {LIKELIHOOD_CHOICES}, got {depth_likelihood!r}"
            )
        self.depth_likelihood = depth_likelihood
        coefficients = [
            likelihood_coefficients(TASKS[name].kind, depth_likelihood) for name in self.task_names
        ]
        self._loss_coefficients = tuple(a for a, _ in coefficients)
        self._log_variance_coefficients = tuple(b for _, b in coefficients)
        self.log_variances = [
            self.add_state(f"log_variance_{name}", -math.log(weight), trainable=True)
            for name, weight in zip(self.task_names, self.initial_weights, strict=True)
        ]

    def _log_variance_vector(self):
        return ops.stack([ops.convert_to_tensor(s.value) for s in self.log_variances])

    def combine_losses(self, losses: Mapping[str, object], labelled=None):
        log_variances = self._log_variance_vector()
        loss_terms = ops.convert_to_tensor(self._loss_coefficients) * ops.exp(-log_variances)
        regularizer = ops.convert_to_tensor(self._log_variance_coefficients) * log_variances
        return self.sum_over_labelled(loss_terms * self.stack(losses) + regularizer, labelled)

    def task_state_variables(self) -> dict[str, list]:
        return {
            name: [variable]
            for name, variable in zip(self.task_names, self.log_variances, strict=True)
        }

    def weight_vector(self):
        return ops.convert_to_tensor(self._loss_coefficients) * ops.exp(
            -self._log_variance_vector()
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"depth_likelihood": self.depth_likelihood})
        return config

    @classmethod
    def from_weighting_config(
        cls,
        task_names: Sequence[str],
        initial_weights: Sequence[float],
        config: WeightingConfig,
        **context,
    ) -> UncertaintyWeighting:
        del context
        if config.uncertainty_depth_likelihood not in LIKELIHOOD_CHOICES:
            raise UserError(
                f"--uncertainty_depth_likelihood {config.uncertainty_depth_likelihood!r}: choose "
                f"one of {', '.join(LIKELIHOOD_CHOICES)}"
            )
        return cls(
            task_names, initial_weights, depth_likelihood=config.uncertainty_depth_likelihood
        )
