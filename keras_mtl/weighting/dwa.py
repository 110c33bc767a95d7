"""Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019).

    w_k(t) = T * exp(r_k / Temp) / sum_i exp(r_i / Temp),   r_k = L_k(t-1) / L_k(t-2)

with L_k the epoch-mean UNWEIGHTED training loss of task k, Temp = 2. The first two epochs use
the initial weights (all 1 by default, as in the paper) because no ratio exists yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.weighting.base import EPSILON, MethodInfo, Weighting


@keras.saving.register_keras_serializable(package="keras_mtl")
class DynamicWeightAverage(Weighting):
    """DWA weights, recomputed at the end of every epoch by `on_epoch_end`.

    The state keeps the last two epochs' mean losses and the number of epochs seen, so a run
    resumed from a checkpoint continues with the same weights. The epoch index passed to
    `on_epoch_end` is not used: the count of recorded epochs decides.

    Partial labels: the trainer's epoch-mean loss of a task is the mean over the batches that
    had its labels, and 0.0 when none had. A task with 0.0 keeps its two recorded epoch means
    (its ratio is that of its last two labelled epochs), and a task with fewer than two
    recorded epochs has ratio 1.

    Args:
        task_names: the tasks, in order.
        initial_weights: weights of the first two epochs; default all 1.
        temperature: softmax temperature (2 in the paper).

    Example:

    ```python
    weighting = DynamicWeightAverage(["depth", "semantic", "motion"])
    weighting.on_epoch_end(0, {"depth": 1.0, "semantic": 2.0, "motion": 0.5})
    weighting.on_epoch_end(1, {"depth": 0.5, "semantic": 1.8, "motion": 0.5})
    weighting.task_weights()  # semantic (slowest to improve) now weighs most
    ```
    """

    info = MethodInfo("dwa", "DWA (Liu et al.)", config_fields=("dwa_temperature",))
    supports_partial_labels = True

    def __init__(
        self,
        task_names: Sequence[str],
        initial_weights: Sequence[float] | None = None,
        temperature: float = 2.0,
        **kwargs,
    ) -> None:
        super().__init__(task_names, initial_weights, **kwargs)
        self.temperature = float(temperature)
        zeros = [0.0] * self.num_tasks
        self.last_epoch_losses = self.add_state("last_epoch_losses", zeros)
        self.previous_epoch_losses = self.add_state("previous_epoch_losses", zeros)
        self.epochs_seen = self.add_state("epochs_seen", 0.0)

    def weight_vector(self):
        ratio = self.last_epoch_losses / ops.maximum(self.previous_epoch_losses, EPSILON)
        ratio = ops.where(ops.isfinite(ratio), ratio, 1.0)
        # A task with fewer than two recorded epochs (partial labels) has no ratio yet.
        recorded = ops.logical_and(self.last_epoch_losses > 0, self.previous_epoch_losses > 0)
        ratio = ops.where(recorded, ratio, 1.0)
        dynamic = self.num_tasks * ops.softmax(ratio / self.temperature)
        fixed = ops.convert_to_tensor(self.initial_weights, dtype="float32")
        return ops.where(self.epochs_seen >= 2.0, dynamic, fixed)

    def on_epoch_end(self, epoch: int, epoch_losses: Mapping[str, float]) -> None:
        del epoch
        missing = [name for name in self.task_names if name not in epoch_losses]
        if missing:
            raise ValueError(f"on_epoch_end needs the epoch-mean loss of {missing}")
        values = [float(epoch_losses[name]) for name in self.task_names]
        if not all(math.isfinite(v) for v in values):
            return  # a diverged epoch must not turn the weights into NaN
        if all(v > 0 for v in values):
            self.previous_epoch_losses.assign(ops.convert_to_tensor(self.last_epoch_losses))
            self.last_epoch_losses.assign(values)
        else:
            # An epoch mean of 0 (partial labels: no batch of the epoch had the task's labels;
            # a loss is never 0 otherwise) keeps that task's recorded means.
            last = self.last_epoch_losses.numpy().tolist()
            previous = self.previous_epoch_losses.numpy().tolist()
            shifted = [v > 0 for v in values]
            self.previous_epoch_losses.assign(
                [a if s else b for a, b, s in zip(last, previous, shifted, strict=True)]
            )
            self.last_epoch_losses.assign(
                [v if s else a for v, a, s in zip(values, last, shifted, strict=True)]
            )
        self.epochs_seen.assign(self.epochs_seen + 1.0)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config

    @classmethod
    def from_weighting_config(
        cls,
        task_names: Sequence[str],
        initial_weights: Sequence[float],
        config: WeightingConfig,
        **context,
    ) -> DynamicWeightAverage:
        del context
        if not config.dwa_temperature > 0:
            raise UserError(f"--dwa_temperature {config.dwa_temperature}: must be > 0 (paper: 2)")
        return cls(task_names, initial_weights, temperature=config.dwa_temperature)
