"""Task losses: masked depth loss and cross-entropy with an ignore label.

Every loss is a mean over the valid pixels of the whole batch, computed in float32 (also under
mixed precision), and is 0 (not NaN) when the batch has no valid pixel.

Each loss is built from additive per-batch statistics (`depth_loss_terms`,
`cross_entropy_terms`: sums and counts) and a finishing step (`depth_loss_from_terms`,
`cross_entropy_from_terms`). The split lets the trainer compute the loss of the *global* batch
exactly under a distribution strategy: it all-reduces the statistics over replicas and finishes
with them, so N replicas train exactly as one device would on the same global batch.

Depth loss, with `v` the valid pixels (target > 0), `n = |v|`, `d_p = pred_p - target_p`:

    depth_loss = (1/n) sum_{p in v} smooth_l1(d_p)  +  rho(mean_v(pred) - mean_v(target))
    smooth_l1(d) = 0.5 d^2 if |d| < 1 else |d| - 0.5                   (beta = 1)
    rho(x) = (x^2 + eps^2)^alpha,  alpha = 0.45, eps = 1e-3            (Charbonnier)

Three depth losses are selectable (`DEPTH_LOSSES`, `train.depth_loss`), all on the valid pixels:

- `smooth_l1`: the formula above, in metres (the original system's loss);
- `log_l1`: `(1/n) sum_{p in v} |log pred_p - log target_p|`, an L1 loss on log depth (a
  relative error: 1 m off at 5 m costs what 10 m off at 50 m does);
- `silog`: Eigen et al. 2014's scale-invariant log loss, `(1/n) sum g_p^2 - lambda ((1/n) sum
  g_p)^2` with `g_p = log pred_p - log target_p` and `lambda = 0.5` (the paper's training value).

Predictions are clamped to `MIN_DEPTH` before the log, so a linear head that outputs <= 0 still
gets a finite loss (and a gradient pushing it up).

Partial labels: every `*_terms` function takes an optional per-sample mask `sample_mask` [B]
(1 = the frame has this task's label, `--labels partial`): masked frames count as if all their
pixels were invalid, so a task's loss is the mean over the labelled pixels of the frames that
have its label, exactly over the global batch like any loss here, and 0 with a zero gradient
when no frame of the batch has it. `labelled_amount` is the statistic (the loss's denominator)
whose global value says whether the batch had the task's labels at all.

Example:

```python
loss = depth_loss(depth_true, model_outputs["depth"])
loss = depth_loss(depth_true, model_outputs["depth"], kind="log_l1")
loss = cross_entropy_ignore(semantic_true, model_outputs["semantic"], SEMANTIC5_CLASS_WEIGHTS)
terms = task_loss_terms("motion", motion_true, model_outputs["motion"])  # as the trainer does
```
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from keras_mtl.tasks import IGNORE_INDEX, TASKS

DEPTH_LOSSES: tuple[str, ...] = ("smooth_l1", "log_l1", "silog")
MIN_DEPTH = 1e-3  # metres; predictions are clamped here before a log
SILOG_LAMBDA = 0.5  # Eigen et al. 2014, eq. 4 with lambda = 0.5 (their training setting)
CHARBONNIER_ALPHA = 0.45
CHARBONNIER_EPS = 1e-3
SMOOTH_L1_BETA = 1.0


def charbonnier(x, alpha: float = CHARBONNIER_ALPHA, eps: float = CHARBONNIER_EPS):
    """Charbonnier penalty `(x^2 + eps^2)^alpha` (smooth, finite gradient at 0)."""
    return ops.power(ops.square(x) + eps * eps, alpha)


def charbonnier_grad(x, alpha: float = CHARBONNIER_ALPHA, eps: float = CHARBONNIER_EPS):
    """Derivative of `charbonnier` with respect to x."""
    return 2.0 * alpha * x * ops.power(ops.square(x) + eps * eps, alpha - 1.0)


def _safe_divide(numerator, denominator):
    """numerator / denominator, and 0 where the denominator is 0."""
    positive = denominator > 0
    return ops.where(positive, numerator / ops.where(positive, denominator, 1.0), 0.0)


def _smooth_l1_terms(y_true, y_pred, sample_mask=None) -> dict:
    """Additive statistics of the SmoothL1 depth loss over one batch (float32 scalars).

    Args:
        y_true: [B, H, W, 1] (or [B, H, W]) depth in metres, 0 = invalid.
        y_pred: predicted depth, same shape as `y_true`.
        sample_mask: optional [B], 0 = the frame has no depth label.

    Returns:
        `{"smooth_l1_sum", "count", "pred_sum", "true_sum"}` over the valid pixels.
    """
    y_true, y_pred, valid = _depth_pair(y_true, y_pred, sample_mask)
    diff = (y_pred - y_true) * valid
    abs_diff = ops.abs(diff)
    smooth_l1 = ops.where(
        abs_diff < SMOOTH_L1_BETA,
        0.5 * ops.square(diff) / SMOOTH_L1_BETA,
        abs_diff - 0.5 * SMOOTH_L1_BETA,
    )
    return {
        "smooth_l1_sum": ops.sum(smooth_l1 * valid),
        "count": ops.sum(valid),
        "pred_sum": ops.sum(y_pred * valid),
        "true_sum": ops.sum(y_true * valid),
    }


def _smooth_l1_from_terms(terms: dict, totals: dict | None = None, num_replicas: int = 1):
    """Finishes the SmoothL1 depth loss from `_smooth_l1_terms`.

    Args:
        terms: this replica's statistics.
        totals: the statistics summed over all replicas (None: `terms` is the whole batch).
        num_replicas: number of replicas holding a share of the global batch.

    Returns:
        With `totals=None`, the depth loss of the batch. Otherwise this replica's share scaled so
        that the mean over replicas equals the global-batch loss in value, and the sum over
        replicas of `1/num_replicas` times its gradient equals the global-batch gradient.
    """
    if totals is None:
        count = terms["count"]
        mean_diff = _safe_divide(terms["pred_sum"] - terms["true_sum"], count)
        smooth = _safe_divide(terms["smooth_l1_sum"], count)
        return ops.where(count > 0, smooth + charbonnier(mean_diff), 0.0)
    count = ops.stop_gradient(totals["count"])
    smooth = num_replicas * _safe_divide(terms["smooth_l1_sum"], count)
    mean_diff = ops.stop_gradient(_safe_divide(totals["pred_sum"] - totals["true_sum"], count))
    # The Charbonnier term depends on global means; its value is the global one and its
    # gradient flows through this replica's prediction sum only (a first-order surrogate).
    local_pred_sum = terms["pred_sum"]
    surrogate = (
        ops.stop_gradient(charbonnier_grad(mean_diff))
        * num_replicas
        * _safe_divide(local_pred_sum - ops.stop_gradient(local_pred_sum), count)
    )
    charb = ops.stop_gradient(charbonnier(mean_diff)) + surrogate
    return ops.where(count > 0, smooth + charb, 0.0)


def _per_pixel(sample_mask, like):
    """A per-sample mask [B] as float32 broadcastable against `like` [B, H, W]."""
    mask = ops.cast(sample_mask, "float32")
    return ops.reshape(mask, (-1,) + (1,) * (len(like.shape) - 1))


def _depth_pair(y_true, y_pred, sample_mask=None):
    """float32 (target, prediction, valid mask) with the prediction's channel axis dropped.

    A frame whose `sample_mask` entry is 0 has no valid pixel (partial labels).
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if len(y_pred.shape) == len(y_true.shape) + 1:
        y_pred = ops.squeeze(y_pred, axis=-1)
    if len(y_true.shape) == len(y_pred.shape) + 1:
        y_true = ops.squeeze(y_true, axis=-1)
    valid = ops.cast(y_true > 0, "float32")
    if sample_mask is not None:
        valid = valid * _per_pixel(sample_mask, valid)
    return y_true, y_pred, valid


def _log_ratio(y_true, y_pred, valid):
    """`log pred - log target` on valid pixels (0 elsewhere); both clamped to `MIN_DEPTH`."""
    safe_true = ops.where(valid > 0, y_true, 1.0)
    ratio = ops.log(ops.maximum(y_pred, MIN_DEPTH)) - ops.log(ops.maximum(safe_true, MIN_DEPTH))
    return ratio * valid


def _log_l1_terms(y_true, y_pred, sample_mask=None) -> dict:
    y_true, y_pred, valid = _depth_pair(y_true, y_pred, sample_mask)
    log_ratio = _log_ratio(y_true, y_pred, valid)
    return {"abs_log_sum": ops.sum(ops.abs(log_ratio)), "count": ops.sum(valid)}


def _log_l1_from_terms(terms: dict, totals: dict | None = None, num_replicas: int = 1):
    if totals is None:
        return _safe_divide(terms["abs_log_sum"], terms["count"])
    count = ops.stop_gradient(totals["count"])
    return num_replicas * _safe_divide(terms["abs_log_sum"], count)


def _silog_terms(y_true, y_pred, sample_mask=None) -> dict:
    y_true, y_pred, valid = _depth_pair(y_true, y_pred, sample_mask)
    log_ratio = _log_ratio(y_true, y_pred, valid)
    return {
        "log_sum": ops.sum(log_ratio),
        "log_square_sum": ops.sum(ops.square(log_ratio)),
        "count": ops.sum(valid),
    }


def _silog_from_terms(terms: dict, totals: dict | None = None, num_replicas: int = 1):
    if totals is None:
        count = terms["count"]
        mean = _safe_divide(terms["log_sum"], count)
        square = _safe_divide(terms["log_square_sum"], count)
        return ops.where(count > 0, square - SILOG_LAMBDA * ops.square(mean), 0.0)
    count = ops.stop_gradient(totals["count"])
    square = num_replicas * _safe_divide(terms["log_square_sum"], count)
    mean = ops.stop_gradient(_safe_divide(totals["log_sum"], count))
    # Same construction as the Charbonnier term: the global value, and a gradient through this
    # replica's share of the sum (d/dx of lambda * mean^2 is 2 lambda mean / n per pixel).
    local = terms["log_sum"]
    surrogate = 2.0 * mean * num_replicas * _safe_divide(local - ops.stop_gradient(local), count)
    penalty = ops.stop_gradient(ops.square(mean)) + surrogate
    return ops.where(count > 0, square - SILOG_LAMBDA * penalty, 0.0)


_DEPTH_TERMS = {"smooth_l1": _smooth_l1_terms, "log_l1": _log_l1_terms, "silog": _silog_terms}
_DEPTH_FINISH = {
    "smooth_l1": _smooth_l1_from_terms,
    "log_l1": _log_l1_from_terms,
    "silog": _silog_from_terms,
}


def check_depth_loss(kind: str) -> str:
    """Returns `kind`; ValueError unless it is one of `DEPTH_LOSSES`."""
    if kind not in DEPTH_LOSSES:
        raise ValueError(f"unknown depth loss {kind!r}; choose one of {', '.join(DEPTH_LOSSES)}")
    return kind


def depth_loss_terms(y_true, y_pred, kind: str = "smooth_l1", sample_mask=None) -> dict:
    """Additive statistics of the depth loss `kind` over one batch (float32 scalars).

    Args:
        y_true: [B, H, W, 1] (or [B, H, W]) depth in metres, 0 = invalid.
        y_pred: predicted depth, same shape as `y_true`.
        kind: one of `DEPTH_LOSSES`.
        sample_mask: optional [B]; a frame with 0 counts as having no valid pixel.

    Returns:
        A dict of sums over the valid pixels (always with `count`).
    """
    return _DEPTH_TERMS[check_depth_loss(kind)](y_true, y_pred, sample_mask)


def depth_loss_from_terms(
    terms: dict, totals: dict | None = None, num_replicas: int = 1, kind: str = "smooth_l1"
):
    """Finishes the depth loss `kind` from `depth_loss_terms`.

    Args:
        terms: this replica's statistics.
        totals: the statistics summed over all replicas (None: `terms` is the whole batch).
        num_replicas: number of replicas holding a share of the global batch.
        kind: one of `DEPTH_LOSSES`.

    Returns:
        With `totals=None`, the depth loss of the batch. Otherwise this replica's share scaled so
        that the mean over replicas equals the global-batch loss in value, and the sum over
        replicas of `1/num_replicas` times its gradient equals the global-batch gradient.
    """
    return _DEPTH_FINISH[check_depth_loss(kind)](terms, totals, num_replicas)


def depth_loss(y_true, y_pred, kind: str = "smooth_l1"):
    """Depth loss over the valid pixels of a batch (see the module docstring for each `kind`).

    Args:
        y_true: [B, H, W, 1] depth in metres, 0 = invalid (ignored).
        y_pred: [B, H, W, 1] predicted depth in metres.
        kind: `smooth_l1` (the original), `log_l1` or `silog`.

    Returns:
        float32 scalar; 0 when no pixel is valid.
    """
    return depth_loss_from_terms(depth_loss_terms(y_true, y_pred, kind), kind=kind)


def cross_entropy_terms(
    y_true, logits, class_weights: Sequence[float] | None = None, sample_mask=None
) -> dict:
    """Additive statistics of the ignore-aware cross-entropy over one batch.

    Args:
        y_true: [B, H, W] integer labels; `IGNORE_INDEX` (255) and any label outside
            `[0, C)` are ignored.
        logits: [B, H, W, C] unnormalised scores.
        class_weights: optional C weights (PyTorch `CrossEntropyLoss(weight=...)` semantics:
            the mean is weighted by the weight of each pixel's true class).
        sample_mask: optional [B]; a frame with 0 counts as entirely ignored.

    Returns:
        `{"weighted_sum", "weight_sum"}` over the valid pixels.
    """
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == len(logits.shape):
        labels = ops.squeeze(labels, axis=-1)
    valid = ops.logical_and(
        ops.logical_and(labels >= 0, labels < num_classes), labels != IGNORE_INDEX
    )
    safe_labels = ops.where(valid, labels, 0)
    per_pixel = ops.sparse_categorical_crossentropy(safe_labels, logits, from_logits=True)
    weights = ops.cast(valid, "float32")
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
        table = ops.convert_to_tensor(list(class_weights), dtype="float32")
        weights = weights * ops.take(table, safe_labels)
    if sample_mask is not None:
        weights = weights * _per_pixel(sample_mask, weights)
    return {"weighted_sum": ops.sum(per_pixel * weights), "weight_sum": ops.sum(weights)}


def cross_entropy_from_terms(terms: dict, totals: dict | None = None, num_replicas: int = 1):
    """Finishes the cross-entropy from `cross_entropy_terms` (see `depth_loss_from_terms`)."""
    if totals is None:
        return _safe_divide(terms["weighted_sum"], terms["weight_sum"])
    weight_sum = ops.stop_gradient(totals["weight_sum"])
    return num_replicas * _safe_divide(terms["weighted_sum"], weight_sum)


def cross_entropy_ignore(y_true, logits, class_weights: Sequence[float] | None = None):
    """Cross-entropy from logits, mean over non-ignored pixels (label 255 ignored).

    Args:
        y_true: [B, H, W] integer labels, 255 = ignore.
        logits: [B, H, W, C].
        class_weights: optional per-class weights (weighted mean, as PyTorch does).

    Returns:
        float32 scalar; 0 when no pixel is valid.
    """
    return cross_entropy_from_terms(cross_entropy_terms(y_true, logits, class_weights))


def task_loss_terms(
    task: str,
    y_true,
    y_pred,
    depth_loss: str = "smooth_l1",
    class_weights: Sequence[float] | None = None,
    sample_mask=None,
) -> dict:
    """Additive statistics of the loss of `task` (`TASKS[task].loss`) over one batch.

    Args:
        task: a task name of `keras_mtl.tasks.TASKS`.
        y_true: the task's targets.
        y_pred: the task's predictions (metres, or logits).
        depth_loss: which depth loss, one of `DEPTH_LOSSES` (tasks whose loss is `depth`).
        class_weights: per-class weights (tasks whose loss is `cross_entropy`), or None.
        sample_mask: optional [B] label mask of the task (`--labels partial`): frames with 0
            do not count; None = every frame has the label.

    Returns:
        The statistics of `depth_loss_terms` or `cross_entropy_terms`.

    Example:

    ```python
    terms = task_loss_terms("motion", motion_true, motion_logits, sample_mask=[1.0, 0.0])
    task_loss_from_terms("motion", terms)  # mean over the pixels of the first frame only
    ```
    """
    if TASKS[task].loss == "depth":
        return depth_loss_terms(y_true, y_pred, depth_loss, sample_mask)
    return cross_entropy_terms(y_true, y_pred, class_weights, sample_mask)


def labelled_amount(task: str, terms: dict):
    """The denominator of `task`'s loss in `task_loss_terms` statistics: valid pixels (depth)
    or their summed class weights (cross-entropy). Summed over replicas and > 0, the global
    batch had the task's labels; 0 means its loss is 0 with no gradient.

    Example:

    ```python
    labelled_amount("depth", {"count": 12.0, ...})  # 12.0
    ```
    """
    return terms["count"] if TASKS[task].loss == "depth" else terms["weight_sum"]


def task_loss_from_terms(
    task: str,
    terms: dict,
    totals: dict | None = None,
    num_replicas: int = 1,
    depth_loss: str = "smooth_l1",
):
    """Finishes the loss of `task` from `task_loss_terms` (see `depth_loss_from_terms`)."""
    if TASKS[task].loss == "depth":
        return depth_loss_from_terms(terms, totals, num_replicas, kind=depth_loss)
    return cross_entropy_from_terms(terms, totals, num_replicas)
