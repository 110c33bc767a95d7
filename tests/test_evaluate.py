"""evaluate.py and keras_mtl.evaluation end to end on the tiny synthetic dataset with a tiny
untrained model; the end-of-training table."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import evaluate
from keras_mtl import evaluation
from keras_mtl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
IMG_RESIZE = (64, 128)
OUTPUT_SIZE = (32, 64)  # smaller than the inputs: predictions are resized, targets too
METRIC_KEYS = ("depth_ard_percent", "depth_abs_rel", "depth_rmse", "semantic_miou", "motion_miou")
SINGLE_TASK = {"depth_ard_percent": 10.0, "semantic_miou": 80.0, "motion_miou": 60.0}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from keras_mtl.models import build_multitask_model

    path = tmp_path_factory.mktemp("evaluate_model") / "model_best.keras"
    build_multitask_model(IMG_RESIZE, width_mult=0.25).save(path)
    return path


def run_main(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert evaluate.main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def evaluated(tiny_dataset: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("evaluate_run")
    single_task = work / "single_task.json"
    single_task.write_text(json.dumps(SINGLE_TASK))
    argv = [
        "--data_path", str(tiny_dataset),
        "--checkpoint", str(tiny_model),
        "--img_resize", *map(str, IMG_RESIZE),
        "--output_size", *map(str, OUTPUT_SIZE),
        "--batch_size", "1",
        "--json", str(work / "eval.json"),
        "--save_predictions", str(work / "predictions"),
        "--single_task_results", str(single_task),
        "--no_progress",
    ]  # fmt: skip
    stdout = run_main(argv)
    results = json.loads((work / "eval.json").read_text())
    return {"stdout": stdout, "results": results, "pred_dir": work / "predictions", "argv": argv}


def val_targets(data_path: Path) -> list[dict[str, np.ndarray]]:
    from keras_mtl.data.pipeline import make_dataset

    dataset = make_dataset(
        data_path, "val", img_resize=(16, 16), batch_size=1, training=False, output_size=OUTPUT_SIZE
    )
    return [{k: v.numpy()[0] for k, v in targets.items()} for _, targets in dataset]


def test_json_keys_and_values(evaluated, tiny_model):
    results = evaluated["results"]
    for key in (*METRIC_KEYS, "per_class_iou", "gmacs", "num_frames", "checkpoint", "delta_m"):
        assert key in results, key
    assert results["num_frames"] == 2
    assert results["checkpoint"] == str(tiny_model)
    assert set(results["per_class_iou"]["semantic"]) == {
        "road", "sky", "pedestrian", "vehicle", "background",
    }  # fmt: skip
    assert set(results["per_class_iou"]["motion"]) == {"static", "moving"}
    semantic_ious = list(results["per_class_iou"]["semantic"].values())
    np.testing.assert_allclose(np.mean(semantic_ious), results["semantic_miou"], rtol=1e-5)
    assert 0 < results["gmacs"] < 1  # width 0.25 at 64x128
    # Delta_m by hand: depth lower-is-better, the two mIoUs higher-is-better.
    expected = (
        (results["depth_ard_percent"] - 10.0) / 10.0
        - (results["semantic_miou"] - 80.0) / 80.0
        - (results["motion_miou"] - 60.0) / 60.0
    ) * 100.0 / 3.0  # fmt: skip
    np.testing.assert_allclose(results["delta_m"], expected, rtol=1e-9)
    assert "positive = worse" in results["delta_m_convention"]


def test_table_format(evaluated):
    lines = evaluated["stdout"].splitlines()
    results = evaluated["results"]
    assert (
        lines[0] == "| Model | Depth(ARD%), Semantic(mIOU), Motion(mIOU) | Complexity (GigaMACS) |"
    )
    headline = ", ".join(
        f"{results[k]:.2f}" for k in ("depth_ard_percent", "semantic_miou", "motion_miou")
    )
    assert lines[2] == f"| model_best.keras | {headline} | {results['gmacs']:.3f} |"
    text = evaluated["stdout"]
    assert f"Depth AbsRel {results['depth_abs_rel']:.4f}" in text
    assert re.search(r"Semantic IoU per class \(%\): road [\d.]+, sky", text)
    assert re.search(r"Motion IoU per class \(%\): static [\d.]+, moving [\d.]+", text)
    delta_line = [line for line in lines if line.startswith("Delta_m ")][0]
    assert delta_line.startswith(f"Delta_m {results['delta_m']:+.2f} %")
    assert "positive = worse" in delta_line


def test_saved_prediction_files(evaluated, tiny_dataset):
    from keras_mtl.data.pipeline import list_stems

    stems = list_stems(tiny_dataset, "val")
    pred_dir = evaluated["pred_dir"]
    assert sorted(p.name for p in pred_dir.iterdir()) == sorted(
        f"{stem}{suffix}"
        for stem in stems
        for suffix in ("_depth.png", "_semantic.png", "_motion.png", "_vis.png")
    )
    for stem in stems:
        depth = cv2.imread(str(pred_dir / f"{stem}_depth.png"), cv2.IMREAD_UNCHANGED)
        semantic = cv2.imread(str(pred_dir / f"{stem}_semantic.png"), cv2.IMREAD_UNCHANGED)
        motion = cv2.imread(str(pred_dir / f"{stem}_motion.png"), cv2.IMREAD_UNCHANGED)
        vis = cv2.imread(str(pred_dir / f"{stem}_vis.png"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == OUTPUT_SIZE
        assert semantic.dtype == np.uint8 and semantic.shape == OUTPUT_SIZE
        assert semantic.max() < 5
        assert set(np.unique(motion)) <= {0, 255}
        assert vis.ndim == 3 and vis.shape[2] == 3 and vis.shape[1] > 2 * OUTPUT_SIZE[1]


def numpy_reference(targets, pred_dir: Path, stems) -> dict[str, float]:
    """ARD% and mIoUs from the PNG files and the targets, in plain numpy."""
    ard_sum, ard_count = 0.0, 0
    confusion = {"semantic": np.zeros((5, 5)), "motion": np.zeros((2, 2))}
    for target, stem in zip(targets, stems, strict=True):
        depth = cv2.imread(str(pred_dir / f"{stem}_depth.png"), cv2.IMREAD_UNCHANGED) / 256.0
        truth = target["depth"][..., 0]
        valid = truth > 0
        t, p = np.minimum(truth, 80.0), np.minimum(depth, 80.0)
        relative = np.where(t > 3.0, np.abs(p - t) / np.where(t > 3.0, t, 1.0), 0.0)
        ard_sum += relative[valid].sum()
        ard_count += valid.sum()
        for task in ("semantic", "motion"):
            pred = cv2.imread(str(pred_dir / f"{stem}_{task}.png"), cv2.IMREAD_UNCHANGED)
            pred = (pred > 0).astype(int) if task == "motion" else pred.astype(int)
            keep = target[task] != 255
            np.add.at(confusion[task], (target[task][keep], pred[keep]), 1)
    out = {"depth_ard_percent": 100.0 * ard_sum / ard_count}
    for task, matrix in confusion.items():
        tp = np.diag(matrix)
        union = matrix.sum(0) + matrix.sum(1) - tp
        out[f"{task}_miou"] = 100.0 * np.mean(np.where(union > 0, tp / np.maximum(union, 1), 0))
    return out


def test_metrics_recomputed_from_prediction_files(evaluated, tiny_dataset):
    from keras_mtl.data.pipeline import list_stems

    results = evaluated["results"]
    recomputed = evaluation.metrics_from_prediction_files(
        evaluated["pred_dir"], tiny_dataset, "val", OUTPUT_SIZE, semantic_classes=5
    )
    assert recomputed["num_frames"] == 2
    # Depth PNGs store 1/256 m steps: ARD moves by far less than 0.01 points.
    for key in ("depth_ard_percent", "depth_abs_rel", "depth_rmse"):
        np.testing.assert_allclose(recomputed[key], results[key], rtol=1e-3, atol=1e-3)
    for key in ("semantic_miou", "motion_miou"):
        np.testing.assert_allclose(recomputed[key], results[key], rtol=1e-6)
    for task in ("semantic", "motion"):
        assert recomputed["per_class_iou"][task] == pytest.approx(results["per_class_iou"][task])
    reference = numpy_reference(
        val_targets(tiny_dataset), evaluated["pred_dir"], list_stems(tiny_dataset, "val")
    )
    np.testing.assert_allclose(
        reference["depth_ard_percent"], results["depth_ard_percent"], rtol=1e-3
    )
    for key in ("semantic_miou", "motion_miou"):
        np.testing.assert_allclose(reference[key], results[key], rtol=1e-5)


class ThresholdServingModule:
    """A stand-in for an exported model: a SavedModel whose `serving_default` takes raw 0..255
    `flow` and `rgb` and returns depth and class maps computed from the pixels by hand."""

    @staticmethod
    def outputs(flow, rgb, np_or_tf=np):
        depth = rgb[..., :1] / 10.0 + 1.0
        semantic = np_or_tf.minimum(rgb[..., 1] // 52.0, 4.0)
        motion = flow[..., 0] > 128.0
        return depth, semantic, motion

    @classmethod
    def save(cls, path: Path, size) -> Path:
        import tensorflow as tf

        module = tf.Module()
        spec = tf.TensorSpec([None, *size, 3], tf.float32)

        @tf.function(input_signature=[spec, spec])
        def serve(flow, rgb):
            depth, semantic, motion = cls.outputs(flow, rgb, tf.math)
            return {
                "depth": depth,
                "semantic": tf.cast(semantic, tf.int32),
                "motion": tf.cast(motion, tf.int32),
            }

        module.serve = serve
        tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
        return path


def test_saved_model_folder_gets_raw_pixels(tiny_dataset, tmp_path):
    from keras_mtl.data.pipeline import make_dataset
    from keras_mtl.metrics import DepthARD, MeanIoU, resize_predictions

    saved_model = ThresholdServingModule.save(tmp_path / "saved_model", IMG_RESIZE)
    results = evaluation.evaluate(
        str(tiny_dataset), str(saved_model), IMG_RESIZE, OUTPUT_SIZE, batch_size=2, progress=False
    )
    assert results["gmacs"] is None and results["num_frames"] == 2
    # Reference: the same arithmetic on the pipeline's inputs turned back into stored pixels.
    dataset = make_dataset(
        tiny_dataset, "val", img_resize=IMG_RESIZE, batch_size=2, training=False,
        output_size=OUTPUT_SIZE,
    )  # fmt: skip
    ard, semantic_iou, motion_iou = DepthARD(), MeanIoU(5), MeanIoU(2)
    for inputs, targets in dataset:
        flow, rgb = (inputs[k].numpy() * 64.0 + 128.0 for k in ("flow", "rgb"))
        depth, semantic, motion = ThresholdServingModule.outputs(flow, rgb)
        resized = resize_predictions(
            {
                "depth": depth,
                "semantic": semantic.astype(np.int32),
                "motion": motion.astype(np.int32),
            },
            OUTPUT_SIZE,
        )
        ard.update_state(targets["depth"], resized["depth"])
        semantic_iou.update_state(targets["semantic"], resized["semantic"])
        motion_iou.update_state(targets["motion"], resized["motion"])
    np.testing.assert_allclose(results["depth_ard_percent"], float(ard.result()), rtol=1e-5)
    np.testing.assert_allclose(results["semantic_miou"], float(semantic_iou.result()), rtol=1e-5)
    np.testing.assert_allclose(results["motion_miou"], float(motion_iou.result()), rtol=1e-5)
    assert results["semantic_miou"] > 0  # the hand-made maps overlap the truth somewhere


def test_single_task_model_scores_its_task_only(tiny_dataset, tmp_path):
    from keras_mtl.models import build_single_task_model

    path = tmp_path / "depth.keras"
    build_single_task_model("depth", IMG_RESIZE, width_mult=0.25).save(path)
    results = evaluation.evaluate(
        str(tiny_dataset), str(path), IMG_RESIZE, OUTPUT_SIZE, batch_size=2, progress=False
    )
    assert results["tasks"] == ["depth"]
    assert "depth_ard_percent" in results and "semantic_miou" not in results
    assert "-----, -----" in evaluation.format_table(results)


@pytest.fixture(scope="module")
def not_a_keras_mtl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    path = tmp_path_factory.mktemp("bad_models") / "dense.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    return path


def test_bad_inputs_raise_user_errors(tiny_dataset, tiny_model, not_a_keras_mtl_model, tmp_path):
    def argv(**changes):
        args = [
            "--data_path", str(tiny_dataset), "--checkpoint", str(tiny_model),
            "--img_resize", *map(str, IMG_RESIZE), "--output_size", *map(str, OUTPUT_SIZE),
            "--no_progress",
        ]  # fmt: skip
        for flag, value in changes.items():
            flag = f"--{flag}"
            if flag in args:
                index = args.index(flag)
                width = 3 if flag in ("--img_resize", "--output_size") else 2
                del args[index : index + width]
            args += [flag, *value] if isinstance(value, list) else [flag, value]
        return args

    garbage = tmp_path / "garbage.keras"
    garbage.write_text("not a zip file")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.png").write_bytes(b"x")
    partial = tmp_path / "depth_only.json"
    partial.write_text(json.dumps({"depth_ard_percent": 12.0}))
    cases = [
        (argv(checkpoint=str(tmp_path / "missing.keras")), "does not exist"),
        (argv(checkpoint=str(garbage)), "not a Keras .keras archive"),
        (argv(checkpoint=str(not_a_keras_mtl_model)), "not a keras-mtl model"),
        (argv(img_resize=["60", "128"]), "multiples of 16"),
        (argv(split="test"), "'test'"),
        (argv(save_predictions=str(busy)), "--overwrite"),
        (argv(semantic_classes="19"), "--semantic_classes 19 does not match"),
        (argv(single_task_results=str(partial)), "lack semantic_miou, motion_miou"),
    ]
    for args, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            evaluate.main(args)
    assert (busy / "old.png").read_bytes() == b"x"


def test_cli_prints_one_line_and_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), "--data_path", str(tmp_path),
         "--checkpoint", "x.keras", "--img_resize", "100", "200", "--output_size", "8", "8"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --img_resize 100 200")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_training_results_table_reads_run_training_results():
    results = {
        "final": {"depth_ard_percent": 31.5, "semantic_miou": 40.25, "motion_miou": 55.0},
        "best": {"epoch": 4, "depth_ard_percent": 30.0, "semantic_miou": 41.0, "motion_miou": 56.5},
        "epochs": 5,
        "per_class_iou": {
            "semantic": {"road": 90.0, "sky": 80.5},
            "motion": {"static": 98.0, "moving": 15.25},
        },
        "files": ["runs/x/checkpoint.keras", "runs/x/results.json"],
    }
    lines = evaluation.format_training_results(results).splitlines()
    assert lines[:4] == [
        "| Model | Depth(ARD%), Semantic(mIOU), Motion(mIOU) | Epoch |",
        "|---|---|---|",
        "| model_best.keras | 30.00, 41.00, 56.50 | 4 of 5 |",
        "| last epoch | 31.50, 40.25, 55.00 | 5 of 5 |",
    ]
    assert "Semantic IoU per class (%): road 90.00, sky 80.50" in lines
    assert "Motion IoU per class (%): static 98.00, moving 15.25" in lines
    assert lines[-3:] == ["wrote:", "  runs/x/checkpoint.keras", "  runs/x/results.json"]


def test_training_results_table_tolerates_missing_keys():
    # Before run_training reports per-class IoU and files; a single-task run scores one task.
    single = {"final": {"depth_ard_percent": 12.0}, "best": {"epoch": 2, "depth_ard_percent": 11.0}}
    text = evaluation.format_training_results(single, save_path="runs/depth")
    assert "| model_best.keras | 11.00, -----, ----- | 2 |" in text
    assert text.splitlines()[-1] == "wrote into runs/depth"
    assert "IoU per class" not in text
    nothing = evaluation.format_training_results({"final": {}, "best": {}, "epochs": 0})
    assert nothing == "no epoch finished: no validation metrics to report"
