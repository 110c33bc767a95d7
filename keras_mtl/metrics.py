"""Streaming evaluation metrics for the three tasks, and Delta_m.

Every metric keeps sums and counts (never means) in metric variables, which Keras creates with
`synchronization="on_read"` and `aggregation="sum"`: under `tf.distribute.MirroredStrategy` each
replica accumulates its own share and reading `result()` outside the replicas sums them. Inside
a replica (a custom `test_step` returning `result()`) a read gives only that replica's share,
so `result()` all-reduces the state there first: either way a split evaluated on N replicas
gives exactly the numbers of one device, not the mean of N per-replica ratios. Sums are kept
in float64 because a split at 1024x2048 holds ~1e9 pixels, far beyond float32's exact integer
range (2^24).

Definitions follow the original system (TI edgeai-torchvision, see docs/evaluation.md):

- `DepthARD` (ARD%): prediction and truth clamped to 80 m; the relative error |p - t| / t counts
  only where t > 3 m, but every valid pixel (t != 0) counts in the denominator; x100.
- `DepthAbsRel`: mean |p - t| / t over valid pixels (no clamping).
- `DepthRMSE`: sqrt(mean (p - t)^2) over valid pixels, metres.
- `MeanIoU`: confusion matrix over the whole split, ignore 255; IoU = TP / (TP + FP + FN);
  a class absent from both truth and prediction counts as IoU 0 (as TI's code does) unless
  `present_only=True`; percent.

Example:

```python
metric = MeanIoU(num_classes=5, name="semantic_miou")
metric.update_state(labels, logits)  # labels int [B, H, W], logits [B, H, W, 5]
metric.result()  # mean IoU in percent
metric.per_class_iou()  # [5] IoU per class in percent
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.tasks import IGNORE_INDEX, TASK_NAMES, TASKS, num_channels

DELTA_M_CONVENTION = (
    "Delta_m = mean over tasks of the relative change vs the single-task models, in %; "
    "positive = worse, negative = better"
)

ARD_MAX_DEPTH = 80.0  # metres: prediction and truth are clamped here for ARD
ARD_MIN_DEPTH = 3.0  # metres: relative errors count only where the truth is farther than this
MAX_PREDICTED_DEPTH = 255.0  # metres: resized depth predictions are clipped to [0, this]


def _summed_over_replicas(state):
    """`state` summed over the replicas when read inside one of several; as it is elsewhere."""
    # tf.identity, not ops.convert_to_tensor (which returns a Keras variable as it is): the
    # all-reduce needs a tensor placed on the replica's device.
    state = tf.identity(state)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return state
    return context.all_reduce(tf.distribute.ReduceOp.SUM, state)


def _spatial_size(tensor) -> tuple[int | None, int | None]:
    shape = tuple(tensor.shape)
    return shape[1], shape[2]


def _needs_resize(y_true, y_pred) -> bool:
    true_size, pred_size = _spatial_size(y_true), _spatial_size(y_pred)
    return None in true_size or None in pred_size or true_size != pred_size


# tf.image.resize rather than keras.ops.image.resize: the latter needs a static size, and inside
# a traced test_step the truth's size is only known at run time.
def _resize_depth(depth, size):
    """Bilinear resize of depth [B, H, W, 1] to `size`, clipped to [0, 255] m."""
    depth = tf.image.resize(ops.cast(depth, "float32"), size, method="bilinear")
    return ops.clip(depth, 0.0, MAX_PREDICTED_DEPTH)


def _to_class_map(y_pred):
    """Class ids [B, H, W] int32 from logits [B, H, W, C] (C > 1) or ids [B, H, W(, 1)]."""
    if len(y_pred.shape) == 4:
        if y_pred.shape[-1] == 1:
            return ops.cast(ops.squeeze(y_pred, axis=-1), "int32")
        return ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    return ops.cast(y_pred, "int32")


def _resize_classes(class_map, size):
    """Nearest resize of a class map [B, H, W] to `size`, int32."""
    resized = tf.image.resize(
        ops.expand_dims(ops.cast(class_map, "int32"), -1), size, method="nearest"
    )
    return ops.cast(ops.squeeze(resized, axis=-1), "int32")


def resize_predictions(predictions: Mapping, size: Sequence[int]) -> dict:
    """Resizes model outputs to the evaluation size, as the original evaluates them.

    Depth is resized bilinearly and clipped to [0, 255] m; semantic and motion logits are
    turned into class maps (argmax) first and then resized with nearest neighbour. The method
    per task comes from `keras_mtl.tasks.TASKS[task].resize`. Keys that are not tasks pass
    through unchanged.

    Args:
        predictions: dict with any of `depth` [B, H, W, 1] metres, `semantic` and `motion`
            logits [B, H, W, C] or class ids [B, H, W].
        size: (height, width) to resize to: ints, or an int32 tensor of 2 values inside a
            traced function (e.g. `tf.shape(targets)[1:3]`).

    Returns:
        dict with `depth` float32 [B, h, w, 1] and class maps int32 [B, h, w].
    """
    if hasattr(size, "as_list"):  # a TensorShape slice such as `targets.shape[1:3]`
        size = size.as_list()
    if isinstance(size, list | tuple):
        size = (int(size[0]), int(size[1]))
    resized = {}
    for key, value in predictions.items():
        if key not in TASKS:
            resized[key] = value
            continue
        method = TASKS[key].resize
        if TASKS[key].kind == "regression":
            value = ops.convert_to_tensor(value)
            if len(value.shape) == 3:
                value = ops.expand_dims(value, -1)
            if method != "bilinear":
                raise ValueError(f"unsupported resize {method!r} for task {key!r}")
            resized[key] = _resize_depth(value, size)
        else:
            if method != "nearest":
                raise ValueError(f"unsupported resize {method!r} for task {key!r}")
            resized[key] = _resize_classes(_to_class_map(ops.convert_to_tensor(value)), size)
    return resized


class _DepthMetric(keras.metrics.Metric):
    """Shared state of the depth metrics: a float64 sum and a float64 pixel count.

    Predictions at another size than the truth are resized bilinearly to the truth's size
    first (clipped to [0, 255] m), so the trainer can feed validation targets at output_size.
    """

    def __init__(self, name: str, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def _pixel_terms(self, y_true, y_pred):
        """Returns (per-pixel term, per-pixel weight) as float32 [B, H, W]."""
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates one batch.

        Args:
            y_true: depth in metres [B, H, W, 1] or [B, H, W]; 0 = invalid.
            y_pred: predicted depth in metres [B, h, w, 1] or [B, h, w].
            sample_weight: optional weight per image [B] or per pixel [B, H, W(, 1)].
        """
        y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        if len(y_true.shape) == 3:
            y_true = ops.expand_dims(y_true, -1)
        if len(y_pred.shape) == 3:
            y_pred = ops.expand_dims(y_pred, -1)
        if _needs_resize(y_true, y_pred):
            y_pred = _resize_depth(y_pred, ops.shape(y_true)[1:3])
        y_true, y_pred = y_true[..., 0], y_pred[..., 0]
        terms, weights = self._pixel_terms(y_true, y_pred)
        if sample_weight is not None:
            sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(sample_weight.shape) == 4:
                sample_weight = sample_weight[..., 0]
            while len(sample_weight.shape) < 3:
                sample_weight = ops.expand_dims(sample_weight, -1)
            weights = weights * sample_weight
        # Reduce each image in float32 (at most a few million pixels), then add in float64.
        per_image_total = ops.sum(terms * weights, axis=(1, 2))
        per_image_count = ops.sum(weights, axis=(1, 2))
        self.total.assign_add(ops.sum(ops.cast(per_image_total, "float64")))
        self.count.assign_add(ops.sum(ops.cast(per_image_count, "float64")))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def _mean(self):
        # NaN, not 0, without valid pixels: 0 would read as a perfect depth score.
        total = _summed_over_replicas(self.total)
        count = _summed_over_replicas(self.count)
        return ops.where(count > 0, total / ops.maximum(count, 1.0), float("nan"))


class DepthARD(_DepthMetric):
    """ARD%: average relative depth error of the original system, in percent.

    Prediction and truth are clamped to `max_depth` (80 m); |p - t| / t is counted only where
    t > `min_depth` (3 m), and every valid pixel (t > 0) counts in the denominator, so near
    pixels lower the average. Streams over batches; exact under MirroredStrategy.

    Args:
        max_depth: clamp in metres for prediction and truth.
        min_depth: truths at or below this (metres) contribute 0 to the numerator.
        name: metric name.
        dtype: dtype of `result()`.

    Example:

    ```python
    ard = DepthARD()
    ard.update_state(depth_true, depth_pred)  # [B, H, W, 1] metres, 0 = invalid
    float(ard.result())  # e.g. 12.3 (percent)
    ```
    """

    def __init__(
        self,
        max_depth: float = ARD_MAX_DEPTH,
        min_depth: float = ARD_MIN_DEPTH,
        name: str = "depth_ard_percent",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.max_depth = float(max_depth)
        self.min_depth = float(min_depth)

    def _pixel_terms(self, y_true, y_pred):
        valid = ops.cast(y_true > 0, "float32")
        truth = ops.minimum(y_true, self.max_depth)
        pred = ops.minimum(y_pred, self.max_depth)
        far = truth > self.min_depth
        relative = ops.where(far, ops.abs(pred - truth) / ops.where(far, truth, 1.0), 0.0)
        return relative, valid

    def result(self):
        return ops.cast(self._mean() * 100.0, self.dtype)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "max_depth": self.max_depth,
            "min_depth": self.min_depth,
        }


class DepthAbsRel(_DepthMetric):
    """AbsRel: mean |p - t| / t over valid pixels (t > 0), no clamping, as a fraction.

    Args:
        name: metric name.
        dtype: dtype of `result()`.

    Example:

    ```python
    abs_rel = DepthAbsRel()
    abs_rel.update_state(depth_true, depth_pred)
    ```
    """

    def __init__(self, name: str = "depth_abs_rel", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def _pixel_terms(self, y_true, y_pred):
        valid = y_true > 0
        relative = ops.abs(y_pred - y_true) / ops.where(valid, y_true, 1.0)
        return ops.where(valid, relative, 0.0), ops.cast(valid, "float32")

    def result(self):
        return ops.cast(self._mean(), self.dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


class DepthRMSE(_DepthMetric):
    """RMSE in metres over valid pixels (t > 0), no clamping.

    Args:
        name: metric name.
        dtype: dtype of `result()`.

    Example:

    ```python
    rmse = DepthRMSE()
    rmse.update_state(depth_true, depth_pred)
    ```
    """

    def __init__(self, name: str = "depth_rmse", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def _pixel_terms(self, y_true, y_pred):
        valid = y_true > 0
        squared = ops.where(valid, ops.square(y_pred - y_true), 0.0)
        return squared, ops.cast(valid, "float32")

    def result(self):
        return ops.cast(ops.sqrt(self._mean()), self.dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


class MeanIoU(keras.metrics.Metric):
    """Mean intersection over union from a confusion matrix accumulated over a split, percent.

    Pixels whose truth is `ignore_index` (or outside [0, num_classes)) are skipped. Predictions
    may be logits [B, H, W, C] (argmax is taken) or class ids [B, H, W]; at another size than
    the truth they are resized with nearest neighbour first.

    Args:
        num_classes: number of classes C.
        ignore_index: truth value that is not evaluated.
        present_only: False (default, the original's convention): a class absent from both
            truth and prediction over the whole split has IoU 0 and still counts in the mean.
            True: the mean is taken over classes that occur in the truth or the prediction
            (TP + FP + FN > 0) only, as most other benchmarks report it.
        name: metric name.
        dtype: dtype of `result()`.

    Example:

    ```python
    miou = MeanIoU(num_classes=2, name="motion_miou")
    miou.update_state(motion_true, motion_logits)
    float(miou.result()), miou.per_class_iou().numpy()
    ```
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        present_only: bool = False,
        name: str = "miou",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.present_only = bool(present_only)
        # Rows: truth, columns: prediction.
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float64",
            name="confusion_matrix",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Accumulates one batch.

        Args:
            y_true: class ids [B, H, W] (or [B, H, W, 1]); `ignore_index` = not evaluated.
            y_pred: logits [B, h, w, C] or class ids [B, h, w].
            sample_weight: optional weight per image [B] or per pixel [B, H, W(, 1)].
        """
        y_true = _to_class_map(ops.convert_to_tensor(y_true))
        y_pred = _to_class_map(ops.convert_to_tensor(y_pred))
        if _needs_resize(y_true, y_pred):
            y_pred = _resize_classes(y_pred, ops.shape(y_true)[1:3])
        classes = self.num_classes
        valid = (y_true >= 0) & (y_true < classes) & (y_true != self.ignore_index)
        # Ids outside [0, C) cannot come from an argmax; skip them rather than corrupt the index.
        valid = valid & (y_pred >= 0) & (y_pred < classes)
        index = ops.where(valid, y_true * classes + y_pred, 0)
        if sample_weight is None:
            # int32 counts stay exact for any batch (float32 would stop at 2^24 pixels).
            weights = ops.cast(valid, "int32")
        else:
            sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(sample_weight.shape) == 4:
                sample_weight = sample_weight[..., 0]
            while len(sample_weight.shape) < 3:
                sample_weight = ops.expand_dims(sample_weight, -1)
            weights = ops.cast(valid, "float32") * sample_weight
        # A segment sum with a static number of segments (unlike bincount) compiles under XLA.
        counts = ops.segment_sum(
            ops.reshape(weights, (-1,)), ops.reshape(index, (-1,)), num_segments=classes * classes
        )
        counts = ops.reshape(ops.cast(counts, "float64"), (classes, classes))
        self.confusion.assign_add(counts)

    def _iou(self):
        confusion = _summed_over_replicas(self.confusion)
        true_positive = ops.diagonal(confusion)
        union = ops.sum(confusion, axis=0) + ops.sum(confusion, axis=1) - true_positive
        iou = ops.where(union > 0, true_positive / ops.maximum(union, 1.0), 0.0)
        return iou, union > 0

    def per_class_iou(self):
        """IoU of every class in percent, [num_classes] (0 for a class absent from both)."""
        iou, _ = self._iou()
        return ops.cast(iou * 100.0, self.dtype)

    def result(self):
        iou, present = self._iou()
        if self.present_only:
            present = ops.cast(present, "float64")
            mean = ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)
        else:
            mean = ops.mean(iou)
        return ops.cast(mean * 100.0, self.dtype)

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), dtype="float64"))

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "present_only": self.present_only,
        }


# The regression metrics by the names the task table uses (classification tasks use MeanIoU).
REGRESSION_METRICS: dict[str, type[_DepthMetric]] = {
    "depth_ard_percent": DepthARD,
    "depth_abs_rel": DepthAbsRel,
    "depth_rmse": DepthRMSE,
}


def task_metrics(
    semantic_classes: int = 5, tasks: Sequence[str] = TASK_NAMES, epoch_only: bool = False
) -> dict[str, list[keras.metrics.Metric]]:
    """Fresh metrics per task, named and chosen by the task table (`keras_mtl.tasks.TASKS`).

    The one place metric sets are built: the trainer validates with `epoch_only=True`, the
    evaluation uses every metric.

    Args:
        semantic_classes: C of the semantic task.
        tasks: which tasks, in order.
        epoch_only: only the metrics the trainer validates every epoch (`Task.epoch_metrics`)
            instead of all of them (`Task.metrics`).

    Returns:
        By default `{"depth": [DepthARD, DepthAbsRel, DepthRMSE], "semantic": [MeanIoU(C)],
        "motion": [MeanIoU(2)]}` named `depth_ard_percent`, `depth_abs_rel`, `depth_rmse`,
        `semantic_miou`, `motion_miou` (with `epoch_only`, no `depth_rmse`).

    Example:

    ```python
    metrics = task_metrics(19, tasks=("semantic",))
    metrics["semantic"][0].num_classes  # 19
    ```
    """
    metrics: dict[str, list[keras.metrics.Metric]] = {}
    for task in tasks:
        spec = TASKS[task]
        names = spec.epoch_metrics if epoch_only else spec.metrics
        if spec.kind == "regression":
            metrics[task] = [REGRESSION_METRICS[name](name=name) for name in names]
        else:
            classes = num_channels(task, semantic_classes)
            metrics[task] = [MeanIoU(classes, name=name) for name in names]
    return metrics


def delta_m(
    results: Mapping[str, float],
    single_task_results: Mapping[str, float],
    tasks: Sequence[str] = TASK_NAMES,
) -> float:
    """Mean relative change of each task's headline metric against its single-task model, x100.

    Delta_m = (1/T) sum_i (-1)^{h_i} (M_i - S_i) / S_i * 100 with h_i = 1 when higher is
    better (`TASKS[task].higher_is_better`). Positive = worse than single-task, negative =
    better; print `DELTA_M_CONVENTION` beside it.

    Args:
        results: metric name -> value of the multi-task model (e.g. `semantic_miou`).
        single_task_results: the same metric names for the single-task models.
        tasks: which tasks to average over.

    Returns:
        Delta_m in percent.

    Raises:
        ValueError: a headline metric is missing or the single-task value is 0.
    """
    if not tasks:
        raise ValueError("delta_m needs at least one task")
    changes = []
    for task in tasks:
        metric = TASKS[task].metric
        missing = [
            where
            for where, values in (
                ("results", results),
                ("single_task_results", single_task_results),
            )
            if metric not in values
        ]
        if missing:
            raise ValueError(f"{metric!r} is missing from {' and '.join(missing)}")
        value, baseline = float(results[metric]), float(single_task_results[metric])
        if baseline == 0.0:
            raise ValueError(f"single-task {metric!r} is 0; Delta_m divides by it")
        change = (value - baseline) / baseline
        changes.append(-change if TASKS[task].higher_is_better else change)
    return 100.0 * sum(changes) / len(changes)
