"""Streaming metrics and Delta_m against hand-computed numpy references."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_mtl.metrics import (
    DELTA_M_CONVENTION,
    DepthAbsRel,
    DepthARD,
    DepthRMSE,
    MeanIoU,
    delta_m,
    resize_predictions,
    task_metrics,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_ard(truth: np.ndarray, pred: np.ndarray) -> float:
    valid = truth > 0
    t = np.minimum(truth, 80.0)
    p = np.minimum(pred, 80.0)
    relative = np.where(t > 3.0, np.abs(p - t) / np.where(t > 3.0, t, 1.0), 0.0)
    return 100.0 * relative[valid].sum() / valid.sum()


def numpy_confusion(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    keep = truth != 255
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (truth[keep], pred[keep]), 1)
    return matrix


def numpy_iou(matrix: np.ndarray) -> np.ndarray:
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), 0.0) * 100.0


def random_depth(rng: np.random.Generator, shape=(3, 6, 10, 1)):
    truth = rng.uniform(0.5, 120.0, shape).astype(np.float32)
    truth[rng.random(shape) < 0.2] = 0.0  # invalid pixels
    pred = (truth + rng.normal(0, 5, shape)).astype(np.float32)
    pred[rng.random(shape) < 0.1] = 150.0  # beyond the 80 m clamp
    return truth, pred


def test_ard_hand_computed_pixels():
    # Pixels: invalid (t=0) -> ignored; t=2 m (< 3 m) -> 0 in the numerator but counted;
    # t=5 vs 4 -> 0.2; t=100 vs 90 -> both clamped to 80 -> 0; t=10 vs 13 -> 0.3.
    truth = np.array([0.0, 2.0, 5.0, 100.0, 10.0], np.float32).reshape(1, 1, 5, 1)
    pred = np.array([7.0, 1.0, 4.0, 90.0, 13.0], np.float32).reshape(1, 1, 5, 1)
    metric = DepthARD()
    metric.update_state(truth, pred)
    assert metric.name == "depth_ard_percent"
    np.testing.assert_allclose(float(metric.result()), 100.0 * (0.2 + 0.3) / 4, rtol=1e-6)


def test_depth_metrics_match_numpy_and_stream():
    rng = np.random.default_rng(0)
    truth, pred = random_depth(rng)
    valid = truth > 0
    expected_ard = numpy_ard(truth, pred)
    expected_abs_rel = (np.abs(pred - truth)[valid] / truth[valid]).mean()
    expected_rmse = np.sqrt(((pred - truth)[valid] ** 2).mean())
    for metric, expected in (
        (DepthARD(), expected_ard),
        (DepthAbsRel(), expected_abs_rel),
        (DepthRMSE(), expected_rmse),
    ):
        metric.update_state(truth, pred)
        one_shot = float(metric.result())
        np.testing.assert_allclose(one_shot, expected, rtol=1e-5)
        metric.reset_state()
        for index in range(truth.shape[0]):  # one image at a time, [B, H, W] truth this time
            metric.update_state(truth[index : index + 1, ..., 0], pred[index : index + 1])
        np.testing.assert_allclose(float(metric.result()), one_shot, rtol=1e-6)


def test_depth_sample_weight_zero_drops_an_image():
    rng = np.random.default_rng(1)
    truth, pred = random_depth(rng)
    weighted = DepthARD()
    weighted.update_state(truth, pred, sample_weight=np.array([1.0, 0.0, 1.0], np.float32))
    expected = numpy_ard(truth[[0, 2]], pred[[0, 2]])
    np.testing.assert_allclose(float(weighted.result()), expected, rtol=1e-5)


def test_depth_prediction_at_other_size_is_resized_bilinearly():
    truth = np.full((1, 4, 4, 1), 10.0, np.float32)
    pred = np.full((1, 2, 2, 1), 12.0, np.float32)  # constant: bilinear keeps 12 everywhere
    metric = DepthAbsRel()
    metric.update_state(truth, pred)
    np.testing.assert_allclose(float(metric.result()), 0.2, rtol=1e-6)


def test_miou_known_confusion_matrix_with_logits_and_ids():
    truth = np.array([[0, 0, 1, 1, 2, 255], [0, 1, 1, 2, 2, 255]], np.int32)[None]
    pred = np.array([[0, 1, 1, 1, 2, 0], [0, 1, 0, 2, 1, 2]], np.int32)[None]
    # Truth rows / prediction columns, the two ignored pixels left out.
    expected_matrix = np.array([[2, 1, 0], [1, 3, 0], [0, 1, 2]])
    np.testing.assert_array_equal(numpy_confusion(truth, pred, 3), expected_matrix)
    # IoU: class 0: 2 / (2 + 1 + 1) = 0.5; class 1: 3 / (3 + 2 + 1) = 0.5; class 2: 2 / 3.
    expected_iou = np.array([50.0, 50.0, 200.0 / 3])
    for y_pred in (pred, np.eye(3, dtype=np.float32)[pred] * 4.0 - 1.0):
        metric = MeanIoU(3, name="semantic_miou")
        metric.update_state(truth, y_pred)
        np.testing.assert_array_equal(metric.confusion.numpy(), expected_matrix)
        np.testing.assert_allclose(metric.per_class_iou().numpy(), expected_iou, rtol=1e-6)
        np.testing.assert_allclose(float(metric.result()), expected_iou.mean(), rtol=1e-6)


def test_miou_class_absent_from_split_counts_zero_unless_present_only():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, (2, 5, 7)).astype(np.int32)  # class 3 and 4 never occur
    truth[0, 0, :3] = 255
    pred = rng.integers(0, 4, (2, 5, 7)).astype(np.int32)  # class 3 predicted, 4 never
    iou = numpy_iou(numpy_confusion(truth, pred, 5))
    assert iou[3] == 0.0 and iou[4] == 0.0
    default = MeanIoU(5)
    default.update_state(truth, pred)
    np.testing.assert_allclose(float(default.result()), iou.mean(), rtol=1e-6)
    present = MeanIoU(5, present_only=True)
    present.update_state(truth, pred)
    np.testing.assert_allclose(float(present.result()), iou[:4].mean(), rtol=1e-6)


def test_miou_streaming_equals_one_shot_and_reset():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, (4, 6, 8)).astype(np.int32)
    truth[rng.random(truth.shape) < 0.1] = 255
    logits = rng.normal(size=(4, 6, 8, 2)).astype(np.float32)
    one_shot = MeanIoU(2)
    one_shot.update_state(truth, logits)
    streamed = MeanIoU(2)
    for index in range(4):
        streamed.update_state(truth[index : index + 1], logits[index : index + 1])
    np.testing.assert_array_equal(one_shot.confusion.numpy(), streamed.confusion.numpy())
    expected = numpy_iou(numpy_confusion(truth, logits.argmax(-1), 2)).mean()
    np.testing.assert_allclose(float(streamed.result()), expected, rtol=1e-6)
    streamed.reset_state()
    assert float(np.abs(streamed.confusion.numpy()).sum()) == 0.0


def test_depth_metrics_without_valid_pixels_are_nan_not_perfect():
    truth = np.zeros((1, 4, 4, 1), np.float32)  # every pixel invalid
    for metric in (DepthARD(), DepthAbsRel(), DepthRMSE()):
        metric.update_state(truth, np.ones_like(truth))
        assert np.isnan(float(metric.result())), metric.name


def test_miou_prediction_at_other_size_is_argmax_then_nearest():
    truth = np.array([[[0, 0, 1, 1], [0, 0, 1, 1]]], np.int32)  # [1, 2, 4]
    logits = np.array([[[[3.0, 0.0], [0.0, 3.0]]]], np.float32)  # [1, 1, 2, 2] -> ids [0, 1]
    metric = MeanIoU(2)
    metric.update_state(truth, logits)
    np.testing.assert_allclose(float(metric.result()), 100.0)


def test_task_metrics_names():
    names = {task: [m.name for m in metrics] for task, metrics in task_metrics(19).items()}
    assert names == {
        "depth": ["depth_ard_percent", "depth_abs_rel", "depth_rmse"],
        "semantic": ["semantic_miou"],
        "motion": ["motion_miou"],
    }
    assert task_metrics(19)["semantic"][0].num_classes == 19
    # The trainer's per-epoch set: the task table's epoch metrics of the tasks it trains.
    epoch = task_metrics(5, tasks=("motion", "depth"), epoch_only=True)
    assert {task: [m.name for m in metrics] for task, metrics in epoch.items()} == {
        "motion": ["motion_miou"],
        "depth": ["depth_ard_percent", "depth_abs_rel"],
    }
    assert epoch["motion"][0].num_classes == 2


def test_resize_predictions_shapes_and_values():
    depth = np.array([[1.0, 3.0], [300.0, -2.0]], np.float32).reshape(1, 2, 2, 1)
    semantic = np.zeros((1, 2, 2, 5), np.float32)
    semantic[0, 0, 1, 3] = 1.0
    motion_ids = np.array([[[0, 1], [1, 0]]], np.int32)
    out = resize_predictions({"depth": depth, "semantic": semantic, "motion": motion_ids}, (4, 4))
    assert tuple(out["depth"].shape) == (1, 4, 4, 1)
    resized_depth = out["depth"].numpy()[0, ..., 0]
    assert resized_depth.min() == 0.0 and resized_depth.max() == 255.0
    # Bilinear with half-pixel centres: the first row's inner pixels blend 1 and 3 (1.5, 2.5).
    np.testing.assert_allclose(resized_depth[0], [1.0, 1.5, 2.5, 3.0])
    assert out["semantic"].dtype == "int32" and out["motion"].dtype == "int32"
    expected_semantic = np.repeat(np.repeat(np.array([[0, 3], [0, 0]]), 2, 0), 2, 1)
    np.testing.assert_array_equal(out["semantic"].numpy()[0], expected_semantic)
    np.testing.assert_array_equal(
        out["motion"].numpy()[0], np.repeat(np.repeat(motion_ids[0], 2, 0), 2, 1)
    )

    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.int32)])
    def resize_like(target):  # the size is only known at run time inside a traced step
        return resize_predictions({"motion": motion_ids}, tf.shape(target)[1:3])["motion"]

    np.testing.assert_array_equal(resize_like(np.zeros((1, 4, 4), np.int32)), out["motion"])


def test_delta_m_sign_and_value():
    single = {"depth_ard_percent": 10.0, "semantic_miou": 80.0, "motion_miou": 50.0}
    worse = {"depth_ard_percent": 11.0, "semantic_miou": 72.0, "motion_miou": 50.0}
    # depth +10% (lower is better: worse), semantic -10% (higher is better: worse), motion 0.
    np.testing.assert_allclose(delta_m(worse, single), (10.0 + 10.0 + 0.0) / 3)
    better = {"depth_ard_percent": 9.0, "semantic_miou": 88.0, "motion_miou": 55.0}
    np.testing.assert_allclose(delta_m(better, single), -(10.0 + 10.0 + 10.0) / 3)
    assert delta_m(single, single) == 0.0
    np.testing.assert_allclose(delta_m(worse, single, tasks=("depth",)), 10.0)
    assert "positive = worse" in DELTA_M_CONVENTION
    with pytest.raises(ValueError, match="motion_miou"):
        delta_m({"depth_ard_percent": 1.0, "semantic_miou": 1.0}, single)


TWO_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
    )
    from keras_mtl.metrics import DepthARD, DepthRMSE, MeanIoU

    rng = np.random.default_rng(5)
    depth_true = rng.uniform(0.0, 100.0, (8, 6, 8, 1)).astype(np.float32)
    depth_true[depth_true < 10] = 0.0
    depth_pred = (depth_true + rng.normal(0, 4, depth_true.shape)).astype(np.float32)
    class_true = rng.integers(0, 3, (8, 6, 8)).astype(np.int32)
    class_true[class_true == 2] = 255
    class_pred = rng.normal(size=(8, 6, 8, 3)).astype(np.float32)

    def evaluate(strategy):
        with strategy.scope():
            metrics = [DepthARD(), DepthRMSE(), MeanIoU(3)]
        data = tf.data.Dataset.from_tensor_slices(
            (depth_true, depth_pred, class_true, class_pred)).batch(4)
        data = strategy.experimental_distribute_dataset(data)

        @tf.function
        def step(batch):
            def replica_fn(dt, dp, ct, cp):
                metrics[0].update_state(dt, dp)
                metrics[1].update_state(dt, dp)
                metrics[2].update_state(ct, cp)
                # Read inside the replica, as a custom test_step does.
                return [m.result() for m in metrics]
            return strategy.run(replica_fn, args=batch)

        for batch in data:
            per_replica = step(batch)
        # Keras averages step logs over replicas when it cannot re-read the metrics.
        in_replica = [
            float(np.mean([t.numpy() for t in strategy.experimental_local_results(v)]))
            for v in per_replica
        ]
        return [float(m.result()) for m in metrics], in_replica

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    two, two_in_replica = evaluate(tf.distribute.MirroredStrategy(devices))
    one, _ = evaluate(tf.distribute.OneDeviceStrategy(devices[0]))
    print("RESULT " + json.dumps(
        {"replicas": len(devices), "two": two, "two_in_replica": two_in_replica, "one": one}))
    """
)


def test_two_replicas_equal_one_replica():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", TWO_REPLICA_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = [row for row in completed.stdout.splitlines() if row.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["two"], result["one"], rtol=1e-6)
    np.testing.assert_allclose(result["two_in_replica"], result["one"], rtol=1e-6)
    assert all(value > 0 for value in result["one"])


def test_miou_sample_weight_and_xla_compile():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    truth = rng.integers(0, 3, (2, 8, 8)).astype(np.int32)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)  # resized to 8x8 inside
    depth_true = rng.uniform(0, 90, (2, 8, 8, 1)).astype(np.float32)
    depth_pred = rng.uniform(0, 90, (2, 4, 4, 1)).astype(np.float32)
    eager_iou, eager_ard = MeanIoU(3), DepthARD()
    eager_iou.update_state(truth, logits)
    eager_ard.update_state(depth_true, depth_pred)
    compiled_iou, compiled_ard = MeanIoU(3), DepthARD()

    @tf.function(jit_compile=True)  # a trainer may compile its test_step with XLA
    def update(truth, logits, depth_true, depth_pred):
        compiled_iou.update_state(truth, logits)
        compiled_ard.update_state(depth_true, depth_pred)

    update(truth, logits, depth_true, depth_pred)
    np.testing.assert_array_equal(compiled_iou.confusion.numpy(), eager_iou.confusion.numpy())
    np.testing.assert_allclose(float(compiled_ard.result()), float(eager_ard.result()), rtol=1e-5)

    weighted = MeanIoU(3)
    weighted.update_state(truth, logits, sample_weight=np.array([0.0, 1.0], np.float32))
    second_only = MeanIoU(3)
    second_only.update_state(truth[1:], logits[1:])
    np.testing.assert_array_equal(weighted.confusion.numpy(), second_only.confusion.numpy())
