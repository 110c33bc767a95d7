"""Optimizer and learning-rate schedule: Adam on a linear warm-up and multi-step decay.

Weight decay is not the optimizer's: the trainer adds coupled L2 (`g += wd * w`) to the
network's gradients (see `keras_mtl.training.trainer`).

Example:

```python
optimizer = make_optimizer(config, steps_per_epoch=200)
```
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_mtl.config import Config


@keras.saving.register_keras_serializable(package="keras_mtl")
class WarmupMultiStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then the rate multiplied by `gamma` at each milestone (in steps).

    `lr(step) = base_lr * min(1, (step + 1) / warmup_steps) * gamma^(#milestones <= step)`.

    Args:
        base_lr: rate after warm-up.
        warmup_steps: steps of linear warm-up (0 = none).
        milestones: steps at which the rate is multiplied by `gamma`.
        gamma: decay factor.

    Example:

    ```python
    schedule = WarmupMultiStepSchedule(1e-4, warmup_steps=500, milestones=[10000, 20000])
    optimizer = keras.optimizers.Adam(schedule)
    ```
    """

    def __init__(
        self,
        base_lr: float,
        warmup_steps: int = 0,
        milestones: Sequence[int] = (),
        gamma: float = 0.5,
    ) -> None:
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.base_lr, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        for milestone in self.milestones:
            rate = ops.where(step >= float(milestone), rate * self.gamma, rate)
        return rate

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }


def make_schedule(config: Config, steps_per_epoch: int) -> WarmupMultiStepSchedule:
    """The learning-rate schedule of `config.train`, over optimizer steps.

    Args:
        config: the run configuration (`lr`, `warmup_epochs`, `lr_milestones` as fractions of
            `epochs`, `lr_gamma`).
        steps_per_epoch: optimizer steps per epoch.
    """
    train = config.train
    epochs = max(int(train.epochs), 1)
    milestones = sorted({int(round(f * epochs)) * steps_per_epoch for f in train.lr_milestones})
    return WarmupMultiStepSchedule(
        base_lr=train.lr,
        warmup_steps=int(train.warmup_epochs) * steps_per_epoch,
        milestones=[m for m in milestones if m > 0],
        gamma=train.lr_gamma,
    )


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam(0.9, 0.999) on the warm-up/multi-step schedule (weight decay: see the trainer)."""
    return keras.optimizers.Adam(
        learning_rate=make_schedule(config, steps_per_epoch), beta_1=0.9, beta_2=0.999
    )
