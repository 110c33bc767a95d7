"""IMTL-L, the loss-balancing part of Impartial Multi-Task Learning (Liu et al., ICLR 2021).

Each task learns a scale s_i (trained with the network by the model's optimizer); the total
loss is

    sum_i exp(s_i) L_i - s_i.

d/ds_i = exp(s_i) L_i - 1, so at the optimum exp(s_i) L_i = 1: every scaled loss is driven to
the same value 1, whatever the task's loss scale. The -s_i term keeps s_i from going to -inf;
the total can be negative. The s_i are never weight-decayed (the trainer decays the network's
variables only, not `weighting.trainable_variables`).

Partial labels (`labelled`): an unlabelled task adds no term, and its s_i is listed by
`task_state_variables`, so the trainer restores it after the optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from keras_mtl.weighting.base import MethodInfo, Weighting


@keras.saving.register_keras_serializable(package="keras_mtl")
class IMTLLWeighting(Weighting):
    """IMTL-L: one trainable log-scale s_i per task, total sum_i exp(s_i) L_i - s_i.

    s_i starts at log(w_i) for the initial weights w (0 for the default all-ones, the paper's
    start), so the effective weight exp(s_i) starts at w_i. `task_weights()` reports exp(s_i).

    Args:
        task_names: the tasks, in order.
        initial_weights: sets the initial s_i = log(w_i); default all 1 (s = 0).

    Example:

    ```python
    weighting = IMTLLWeighting(["depth", "semantic", "motion"])
    total = weighting.combine_losses({"depth": 0.9, "semantic": 1.6, "motion": 0.7})
    # the trainer trains weighting.trainable_variables with the model, without weight decay
    ```
    """

    info = MethodInfo("imtl_l", "IMTL-L (Liu et al.)")
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        self.log_scales = [
            self.add_state(f"log_scale_{name}", math.log(weight), trainable=True)
            for name, weight in zip(self.task_names, self.initial_weights, strict=True)
        ]

    def _log_scale_vector(self):
        return ops.stack([ops.convert_to_tensor(s.value) for s in self.log_scales])

    def combine_losses(self, losses: Mapping[str, object], labelled=None):
        log_scales = self._log_scale_vector()
        return self.sum_over_labelled(
            ops.exp(log_scales) * self.stack(losses) - log_scales, labelled
        )

    def task_state_variables(self) -> dict[str, list]:
        return {name: [s] for name, s in zip(self.task_names, self.log_scales, strict=True)}

    def weight_vector(self):
        return ops.exp(self._log_scale_vector())
