"""Task losses against hand-written numpy references on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from keras_mtl import losses
from keras_mtl.tasks import MOTION_CLASS_WEIGHTS, SEMANTIC5_CLASS_WEIGHTS


def numpy_depth_loss(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    valid = y_true > 0
    if not valid.any():
        return 0.0
    diff = y_pred[valid] - y_true[valid]
    smooth = np.where(np.abs(diff) < 1.0, 0.5 * diff**2, np.abs(diff) - 0.5).mean()
    mean_diff = y_pred[valid].mean() - y_true[valid].mean()
    return float(smooth + (mean_diff**2 + 1e-6) ** 0.45)


def numpy_cross_entropy(labels: np.ndarray, logits: np.ndarray, weights=None) -> float:
    num_classes = logits.shape[-1]
    valid = labels != 255
    if not valid.any():
        return 0.0
    flat_logits = logits[valid].astype(np.float64)
    flat_labels = labels[valid]
    shifted = flat_logits - flat_logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -log_probs[np.arange(len(flat_labels)), flat_labels]
    pixel_weights = np.ones_like(nll) if weights is None else np.asarray(weights)[flat_labels]
    assert num_classes == logits.shape[-1]
    return float((nll * pixel_weights).sum() / pixel_weights.sum())


@pytest.fixture(scope="module")
def depth_batch():
    rng = np.random.default_rng(0)
    y_true = rng.uniform(1.0, 40.0, size=(2, 6, 8, 1)).astype(np.float32)
    y_true[0, :2] = 0.0  # invalid pixels
    y_true[1, :, :3] = 0.0
    # Mix of small (quadratic) and large (linear) errors.
    y_pred = (y_true + rng.normal(0.0, 2.0, size=y_true.shape)).astype(np.float32)
    return y_true, y_pred


def test_depth_loss_matches_numpy(depth_batch):
    y_true, y_pred = depth_batch
    expected = numpy_depth_loss(y_true, y_pred)
    assert float(losses.depth_loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_depth_loss_ignores_invalid_pixels(depth_batch):
    y_true, y_pred = depth_batch
    changed = y_pred.copy()
    changed[y_true == 0] = 1e6  # predictions on invalid pixels do not matter
    assert float(losses.depth_loss(y_true, changed)) == pytest.approx(
        float(losses.depth_loss(y_true, y_pred)), rel=1e-6
    )


def test_depth_loss_perfect_prediction_is_charbonnier_floor(depth_batch):
    y_true, _ = depth_batch
    assert float(losses.depth_loss(y_true, y_true)) == pytest.approx((1e-6) ** 0.45, rel=1e-4)


def test_losses_are_zero_without_valid_pixels():
    y_true = np.zeros((1, 4, 4, 1), np.float32)
    y_pred = np.full((1, 4, 4, 1), 3.0, np.float32)
    assert float(losses.depth_loss(y_true, y_pred)) == 0.0
    labels = np.full((1, 4, 4), 255, np.int32)
    logits = np.random.default_rng(1).normal(size=(1, 4, 4, 5)).astype(np.float32)
    value = float(losses.cross_entropy_ignore(labels, logits))
    weighted = float(losses.cross_entropy_ignore(labels, logits, SEMANTIC5_CLASS_WEIGHTS))
    assert value == 0.0 and weighted == 0.0


def test_empty_mask_gradient_is_finite():
    import tensorflow as tf

    y_true = tf.zeros((1, 4, 4, 1))
    y_pred = tf.Variable(tf.ones((1, 4, 4, 1)))
    with tf.GradientTape() as tape:
        value = losses.depth_loss(y_true, y_pred)
    grad = tape.gradient(value, y_pred)
    assert np.all(np.isfinite(grad.numpy())) and float(value) == 0.0


@pytest.mark.parametrize("weights", [None, SEMANTIC5_CLASS_WEIGHTS])
def test_cross_entropy_matches_numpy(weights):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, size=(2, 5, 7)).astype(np.int32)
    labels[0, 0] = 255
    labels[1, :, 0] = 255
    logits = rng.normal(0.0, 3.0, size=(2, 5, 7, 5)).astype(np.float32)
    expected = numpy_cross_entropy(labels, logits, weights)
    value = float(losses.cross_entropy_ignore(labels, logits, weights))
    assert value == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_motion_weights():
    labels = np.array([[[0, 1, 1, 255]]], np.int32)
    logits = np.array([[[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, -9.0]]]], np.float32)
    expected = numpy_cross_entropy(labels, logits, MOTION_CLASS_WEIGHTS)
    value = float(losses.cross_entropy_ignore(labels, logits, MOTION_CLASS_WEIGHTS))
    assert value == pytest.approx(expected, rel=1e-6)


def test_replica_shares_reproduce_global_loss_and_gradient(depth_batch):
    """Finishing with all-reduced statistics: mean of shares = loss, sum of grads/N = grad."""
    import tensorflow as tf

    y_true, y_pred = depth_batch
    # Uneven valid counts on the two "replicas" (rows 0 and 1).
    pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        whole = losses.depth_loss(y_true, pred)
    expected_grad = tape.gradient(whole, pred).numpy()
    with tf.GradientTape() as tape:
        terms = [losses.depth_loss_terms(y_true[i : i + 1], pred[i : i + 1]) for i in range(2)]
        totals = {k: terms[0][k] + terms[1][k] for k in terms[0]}
        shares = [losses.depth_loss_from_terms(t, totals, num_replicas=2) for t in terms]
        objective = (shares[0] + shares[1]) / 2.0
    grad = tape.gradient(objective, pred).numpy()
    assert float(objective) == pytest.approx(float(whole), rel=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-8)

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(2, 4, 4)).astype(np.int32)
    labels[0, :3] = 255
    logits = tf.Variable(rng.normal(size=(2, 4, 4, 5)).astype(np.float32))
    weights = SEMANTIC5_CLASS_WEIGHTS
    with tf.GradientTape() as tape:
        whole = losses.cross_entropy_ignore(labels, logits, weights)
    expected_grad = tape.gradient(whole, logits).numpy()
    with tf.GradientTape() as tape:
        terms = [
            losses.cross_entropy_terms(labels[i : i + 1], logits[i : i + 1], weights)
            for i in range(2)
        ]
        totals = {k: terms[0][k] + terms[1][k] for k in terms[0]}
        shares = [losses.cross_entropy_from_terms(t, totals, num_replicas=2) for t in terms]
        objective = (shares[0] + shares[1]) / 2.0
    grad = tape.gradient(objective, logits).numpy()
    assert float(objective) == pytest.approx(float(whole), rel=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-8)


def numpy_log_depth_loss(y_true: np.ndarray, y_pred: np.ndarray, kind: str) -> float:
    valid = y_true > 0
    if not valid.any():
        return 0.0
    g = np.log(np.maximum(y_pred[valid].astype(np.float64), 1e-3)) - np.log(y_true[valid])
    if kind == "log_l1":
        return float(np.abs(g).mean())
    return float((g**2).mean() - 0.5 * g.mean() ** 2)  # Eigen et al. 2014, lambda 0.5


@pytest.mark.parametrize("kind", ["log_l1", "silog"])
def test_log_depth_losses_match_numpy(depth_batch, kind):
    y_true, y_pred = depth_batch
    y_pred = np.abs(y_pred) + 0.5
    expected = numpy_log_depth_loss(y_true, y_pred, kind)
    assert float(losses.depth_loss(y_true, y_pred, kind)) == pytest.approx(expected, rel=1e-5)
    # Non-positive predictions (a linear head) are clamped, not NaN.
    clamped = y_pred.copy()
    clamped[0, 3:, :, 0] = -4.0
    value = float(losses.depth_loss(y_true, clamped, kind))
    assert value == pytest.approx(numpy_log_depth_loss(y_true, clamped, kind), rel=1e-5)
    # Zero without valid pixels.
    assert float(losses.depth_loss(np.zeros_like(y_true), y_pred, kind)) == 0.0


def test_log_losses_are_relative_and_silog_scale_invariant(depth_batch):
    y_true, _ = depth_batch
    # log_l1: the same relative error costs the same at any depth.
    near = float(
        losses.depth_loss(np.full((1, 2, 2, 1), 5.0), np.full((1, 2, 2, 1), 6.0), "log_l1")
    )
    far = float(
        losses.depth_loss(np.full((1, 2, 2, 1), 50.0), np.full((1, 2, 2, 1), 60.0), "log_l1")
    )
    assert near == pytest.approx(far, rel=1e-5) == pytest.approx(np.log(1.2), rel=1e-5)
    # silog with lambda 0.5: a global scale error costs half of what log-MSE charges.
    scaled = y_true * 2.0
    value = float(losses.depth_loss(y_true, scaled, "silog"))
    assert value == pytest.approx(0.5 * np.log(2.0) ** 2, rel=1e-4)
    with pytest.raises(ValueError, match="unknown depth loss"):
        losses.depth_loss(y_true, y_true, "l2")


@pytest.mark.parametrize("kind", ["log_l1", "silog"])
def test_log_losses_replica_shares_reproduce_global_loss_and_gradient(depth_batch, kind):
    import tensorflow as tf

    y_true, y_pred = depth_batch
    pred = tf.Variable(np.abs(y_pred) + 0.5)
    with tf.GradientTape() as tape:
        whole = losses.depth_loss(y_true, pred, kind)
    expected_grad = tape.gradient(whole, pred).numpy()
    with tf.GradientTape() as tape:
        terms = [
            losses.depth_loss_terms(y_true[i : i + 1], pred[i : i + 1], kind) for i in range(2)
        ]
        totals = {k: terms[0][k] + terms[1][k] for k in terms[0]}
        shares = [losses.depth_loss_from_terms(t, totals, num_replicas=2, kind=kind) for t in terms]
        objective = (shares[0] + shares[1]) / 2.0
    grad = tape.gradient(objective, pred).numpy()
    assert float(objective) == pytest.approx(float(whole), rel=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-8)


def test_task_losses_follow_the_task_table(depth_batch):
    y_true, y_pred = depth_batch
    depth_terms = losses.task_loss_terms("depth", y_true, y_pred, depth_loss="log_l1")
    assert float(losses.task_loss_from_terms("depth", depth_terms, depth_loss="log_l1")) == (
        pytest.approx(float(losses.depth_loss(y_true, y_pred, "log_l1")), rel=1e-6)
    )
    labels = np.array([[[0, 1, 1, 255]]], np.int32)
    logits = np.array([[[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, -9.0]]]], np.float32)
    terms = losses.task_loss_terms("motion", labels, logits, class_weights=MOTION_CLASS_WEIGHTS)
    assert float(losses.task_loss_from_terms("motion", terms)) == pytest.approx(
        float(losses.cross_entropy_ignore(labels, logits, MOTION_CLASS_WEIGHTS)), rel=1e-6
    )
