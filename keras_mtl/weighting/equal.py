"""Fixed task weights (the seed's "vanilla" row): total = sum_i w_i L_i with constant w."""

from __future__ import annotations

import keras

from keras_mtl.weighting.base import MethodInfo, Weighting


@keras.saving.register_keras_serializable(package="keras_mtl")
class EqualWeighting(Weighting):
    """Constant task weights: `--task_weights` (all 1 by default), never updated.

    Args:
        task_names: the tasks, in order.
        initial_weights: the fixed weight of each task; default all 1.

    Example:

    ```python
    weighting = EqualWeighting(["depth", "semantic", "motion"], [1.0, 0.5, 2.0])
    weighting.combine_losses({"depth": 1.0, "semantic": 2.0, "motion": 0.5})  # 3.0
    ```
    """

    info = MethodInfo("vanilla", "Vanilla (equal weights)")
    # A fixed weighted sum: an unlabelled task's loss is 0 with no gradient, nothing to keep.
    supports_partial_labels = True
