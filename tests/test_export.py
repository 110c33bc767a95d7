"""Export: serving wrapper arithmetic, every format round trip, parity report, bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_mtl import checkpoints
from keras_mtl import export as export_lib
from keras_mtl.data.pipeline import normalize_inputs
from keras_mtl.errors import UserError, run_cli
from keras_mtl.models import build_multitask_model

# Keras converts variables with np.array(copy=False) internally; numpy 2 warns, harmlessly.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    # One worker builds the shared export (run pytest-xdist with --dist loadgroup).
    pytest.mark.xdist_group("export"),
]

SAVED_SIZE = (32, 64)  # the checkpoint's own size; exports are rebuilt at EXPORT_SIZE
EXPORT_SIZE = (64, 128)  # the tiny dataset's frame size
# ONNX needs tf2onnx and onnxruntime (requirements.txt); without them it is left out here and
# its own test is skipped.
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnxruntime"))
ALL_FORMATS = ("saved_model", "tflite", "tflite_fp16", "tflite_int8", *(("onnx",) * HAS_ONNX))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_multitask_model(SAVED_SIZE, width_mult=0.25)
    # Shrink the depth head so that depth is in a realistic range (metres, not thousands).
    classifier = model.get_layer("depth_decoder.classifier")
    classifier.kernel.assign(classifier.kernel * 0.01)
    path = tmp_path_factory.mktemp("export_ckpt") / "model_best.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def loaded(checkpoint: Path) -> keras.Model:
    return checkpoints.load_model(checkpoint, multitask=True)


@pytest.fixture(scope="module")
def network(loaded: keras.Model) -> keras.Model:
    from keras_mtl.models import rebuild

    return rebuild(loaded, EXPORT_SIZE)


@pytest.fixture(scope="module")
def frames(tiny_dataset: Path):
    inputs, targets = export_lib.load_frames(str(tiny_dataset), "val", EXPORT_SIZE, 2, 5)
    return inputs, targets


@pytest.fixture(scope="module")
def expected(network: keras.Model, frames) -> dict[str, np.ndarray]:
    """Keras serving outputs on the first val frame (eager call: no tracing)."""
    outputs = export_lib.build_serving_model(network)(frames[0][0], training=False)
    return {name: np.asarray(value) for name, value in outputs.items()}


@pytest.fixture(scope="module")
def exported(loaded: keras.Model, tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("exported")
    report = export_lib.export_model(
        loaded,  # at SAVED_SIZE: export_model rebuilds it at EXPORT_SIZE
        out,
        ALL_FORMATS,
        img_resize=EXPORT_SIZE,
        data_path=str(tiny_dataset),
        num_calibration=3,
        num_eval=2,
        latency_runs=2,
        verbose=False,
    )
    return out, report


def test_input_normalization_is_the_pipeline_arithmetic():
    rng = np.random.default_rng(0)
    raw = {name: rng.integers(0, 256, (2, 4, 6, 3)).astype("float32") for name in ("flow", "rgb")}
    layer = export_lib.InputNormalization()
    got = {name: np.asarray(value) for name, value in layer(raw).items()}
    expected_flow, expected_rgb = normalize_inputs(raw["flow"], raw["rgb"])
    np.testing.assert_array_equal(got["flow"], expected_flow)
    np.testing.assert_array_equal(got["rgb"], (raw["rgb"] - 128.0) / 64.0)
    np.testing.assert_array_equal(got["rgb"], expected_rgb)


def test_serving_model_normalizes_and_argmaxes(network: keras.Model, frames, expected):
    inputs = frames[0][0]
    normalized = {name: (inputs[name] - 128.0) / 64.0 for name in ("flow", "rgb")}
    logits = {k: np.asarray(v) for k, v in network(normalized, training=False).items()}

    maps = expected
    np.testing.assert_allclose(maps["depth"], logits["depth"], rtol=1e-5, atol=1e-4)
    for task in ("semantic", "motion"):
        assert maps[task].dtype == np.int32 and maps[task].shape == (1, *EXPORT_SIZE)
        np.testing.assert_array_equal(maps[task], np.argmax(logits[task], axis=-1))

    logits_model = export_lib.build_serving_model(network, class_maps=False)
    raw_logits = {k: np.asarray(v) for k, v in logits_model(inputs, training=False).items()}
    np.testing.assert_allclose(raw_logits["semantic"], logits["semantic"], rtol=1e-5, atol=1e-4)
    assert raw_logits["semantic"].shape == (1, *EXPORT_SIZE, 5)


def test_compare_outputs_against_hand_computed_values():
    # Batched like serving outputs: depth [1, 2, 2, 1], class maps [1, 2, 2], logits [1, 2, 2, C].
    reference = [
        {
            "depth": np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1),
            "semantic": np.array([[[0, 1], [2, 3]]]),
            "motion": np.array([[[0, 1], [1, 1]]]),
        }
    ]
    candidate = [
        {
            "depth": np.array([[1.0, 2.5], [3.0, 3.0]]).reshape(1, 2, 2, 1),
            "semantic": np.array([[[0, 1], [2, 4]]]),
            # logits: argmax -> [[0, 1], [0, 1]]
            "motion": np.array([[[[2.0, 1.0], [0.0, 1.0]], [[3.0, -1.0], [0.0, 5.0]]]]),
        }
    ]
    diff = export_lib.compare_outputs(reference, candidate)
    assert diff["depth_max_abs_diff_m"] == pytest.approx(1.0)
    assert diff["depth_mean_abs_diff_m"] == pytest.approx(1.5 / 4)
    assert diff["depth_reference_max_abs_m"] == pytest.approx(4.0)
    assert diff["semantic_agreement_percent"] == pytest.approx(75.0)
    assert diff["motion_agreement_percent"] == pytest.approx(75.0)
    # 1 mm + 1e-4 * 4 m = 1.4 mm allowed: 1 m fails; a tiny difference with full agreement passes.
    assert not export_lib.fp32_parity_ok(diff)
    ok = dict(diff, depth_max_abs_diff_m=1.3e-3, semantic_agreement_percent=100.0)
    assert not export_lib.fp32_parity_ok(ok)  # motion agreement 75% still fails
    ok["motion_agreement_percent"] = 99.95
    assert export_lib.fp32_parity_ok(ok)
    assert not export_lib.fp32_parity_ok(dict(ok, depth_max_abs_diff_m=1.5e-3))


def test_export_writes_every_format_and_a_consistent_report(exported):
    out, report = exported
    assert (out / "saved_model" / "saved_model.pb").is_file()
    for fmt in ("tflite", "tflite_fp16", "tflite_int8"):
        path = out / export_lib.TFLITE_FILES[fmt]
        assert path.is_file()
        assert report["files"][fmt]["size_bytes"] == path.stat().st_size
    # fp16 weights halve the file, int8 quarters it (roughly).
    sizes = {fmt: report["files"][fmt]["size_bytes"] for fmt in ("tflite", "tflite_int8")}
    assert sizes["tflite_int8"] < 0.5 * sizes["tflite"]
    assert report["files"]["tflite_fp16"]["size_bytes"] < 0.7 * sizes["tflite"]

    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["img_size"] == list(EXPORT_SIZE)
    assert report["parity_passed"] is True
    assert report["parity"]["saved_model"]["passed"] and report["parity"]["tflite"]["passed"]
    # Every format is made from the inference form, checked against the trained network.
    assert report["parity"]["folded"]["reference"] == "keras"
    assert report["parity"]["folded"]["passed"]
    assert report["parity"]["saved_model"]["reference"] == "folded"
    assert report["folding"]["batch_norms_folded"] == 94
    assert report["folding"]["batch_norms_kept"] == 0
    assert report["folding"]["linear_tails_folded"] == 3
    for fmt in ("tflite", "tflite_fp16", "tflite_int8"):
        for task in ("semantic", "motion"):
            assert 0.0 <= report["parity"][fmt][f"{task}_agreement_percent"] <= 100.0
    assert report["parity"]["tflite"]["semantic_agreement_percent"] >= 99.9
    assert set(report["latency_ms"]) == {"keras", "folded", *ALL_FORMATS}
    assert all(value > 0 for value in report["latency_ms"].values())
    metrics, drop = report["metrics"], report["int8_drop"]
    for key in ("semantic_miou", "motion_miou"):
        assert drop[key] == pytest.approx(metrics["saved_model"][key] - metrics["tflite_int8"][key])
    # The formats' metrics say what they are computed on, so they cannot pass for evaluate.py's.
    frames = report["eval_frames"]
    assert frames["count"] == 2 and frames["size"] == list(EXPORT_SIZE)
    assert report["metrics_scope"].startswith(f"2 frames of {frames['source']}")
    assert "64x128" in report["metrics_scope"] and "evaluate.py" in report["metrics_scope"]
    table = export_lib.format_report_table(report)
    assert "tflite_int8" in table
    assert table.splitlines()[-1] == f"metrics: {report['metrics_scope']}"


def test_tflite_files_run_on_litert_and_match_keras(exported, frames, expected):
    out, _ = exported
    inputs = frames[0][0]
    runners = {
        fmt: export_lib.litert_runner(out / export_lib.TFLITE_FILES[fmt], num_threads=1)
        for fmt in ("tflite", "tflite_fp16", "tflite_int8")
    }
    results = {fmt: runner(**inputs) for fmt, runner in runners.items()}
    for fmt, result in results.items():
        assert result["depth"].dtype == np.float32 and result["depth"].shape == (1, *EXPORT_SIZE, 1)
        assert result["semantic"].dtype == np.int32 and result["semantic"].shape == (
            1,
            *EXPORT_SIZE,
        )
        assert set(result["motion"].ravel()) <= {0, 1}, fmt
    fp32 = export_lib.compare_outputs([expected], [results["tflite"]])
    assert export_lib.fp32_parity_ok(fp32), fp32
    fp16 = export_lib.compare_outputs([expected], [results["tflite_fp16"]])
    assert fp16["semantic_agreement_percent"] > 95.0
    depth_range = float(np.ptp(expected["depth"]))
    assert fp16["depth_max_abs_diff_m"] < 0.05 * depth_range + 1e-3
    # int8 is approximate but must follow the float model, not be noise.
    int8 = export_lib.compare_outputs([expected], [results["tflite_int8"]])
    assert int8["motion_agreement_percent"] > 80.0
    assert int8["depth_mean_abs_diff_m"] < 0.2 * depth_range + 1e-3


def test_saved_model_loads_in_a_fresh_process_with_tensorflow_only(
    exported, frames, expected, tmp_path: Path
):
    out, _ = exported
    inputs = frames[0][0]
    np.savez(tmp_path / "inputs.npz", **inputs)
    client = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        model = tf.saved_model.load({str(out / "saved_model")!r})
        inputs = np.load({str(tmp_path / "inputs.npz")!r})
        outputs = model.signatures["serving_default"](
            flow=tf.constant(inputs["flow"]), rgb=tf.constant(inputs["rgb"])
        )
        assert not any(name.startswith("keras_mtl") for name in sys.modules), "project imported"
        np.savez({str(tmp_path / "outputs.npz")!r}, **{{k: v.numpy() for k, v in outputs.items()}})
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", client], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = dict(np.load(tmp_path / "outputs.npz"))
    assert sorted(outputs) == ["depth", "motion", "semantic"]
    np.testing.assert_allclose(outputs["depth"], expected["depth"], rtol=1e-5, atol=1e-4)
    for task in ("semantic", "motion"):
        assert outputs[task].dtype == np.int32
        np.testing.assert_array_equal(outputs[task], expected[task])


@pytest.mark.skipif(
    not HAS_ONNX, reason="tf2onnx/onnxruntime not installed: pip install -r requirements.txt"
)
def test_onnx_file_runs_on_onnxruntime_and_matches_keras(exported, frames, expected):
    out, report = exported
    assert report["parity"]["onnx"]["passed"] and report["parity"]["onnx"]["reference"] == "folded"
    assert report["files"]["onnx"]["size_bytes"] == (out / export_lib.ONNX_FILE).stat().st_size
    session = __import__("onnxruntime").InferenceSession(str(out / export_lib.ONNX_FILE))
    assert sorted(i.name for i in session.get_inputs()) == ["flow", "rgb"]
    assert sorted(o.name for o in session.get_outputs()) == ["depth", "motion", "semantic"]
    result = export_lib.onnx_runner(out / export_lib.ONNX_FILE, num_threads=1)(**frames[0][0])
    assert result["semantic"].dtype == np.int32 and result["depth"].dtype == np.float32
    # Against the trained (unfolded) network, through folding and conversion.
    assert export_lib.fp32_parity_ok(export_lib.compare_outputs([expected], [result]))


def test_median_latency_calls_the_runner_and_takes_the_median():
    calls = []

    def runner(**inputs):
        calls.append(sorted(inputs))

    latency = export_lib.median_latency_ms(runner, {"flow": 0, "rgb": 1}, runs=3)
    assert calls == [["flow", "rgb"]] * 4  # one warm-up + three timed calls
    assert 0.0 <= latency < 1000.0


def test_int8_without_calibration_data_is_a_user_error(checkpoint: Path, tmp_path: Path):
    with pytest.raises(UserError, match="--data_path"):
        export_lib.export_model(checkpoint, tmp_path, ["tflite_int8"], verbose=False)


def test_bad_formats_and_counts_are_user_errors(checkpoint: Path, tiny_dataset: Path, tmp_path):
    with pytest.raises(UserError, match="--formats"):
        export_lib.export_model(checkpoint, tmp_path, ["coreml"], verbose=False)
    with pytest.raises(UserError, match="--num_calibration"):
        export_lib.export_model(
            checkpoint, tmp_path, ["tflite_int8"], data_path=str(tiny_dataset), num_calibration=0
        )
    with pytest.raises(UserError, match="--latency_runs"):
        export_lib.export_model(checkpoint, tmp_path, ["tflite"], latency_runs=-1)


def test_unwritable_out_is_a_user_error(checkpoint: Path, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="--out"):
        export_lib.export_model(checkpoint, blocker / "sub", ["saved_model"], verbose=False)


def test_checkpoints_that_are_not_keras_mtl_models_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        export_lib.export_model(tmp_path / "missing.keras", tmp_path / "out", verbose=False)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match="not a Keras .keras archive"):
        export_lib.export_model(junk, tmp_path / "out", verbose=False)
    inputs = keras.Input((8, 8, 3), name="image")
    other = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="out")(inputs))
    other.save(tmp_path / "other.keras")
    with pytest.raises(UserError, match="not a keras-mtl multi-task model"):
        export_lib.export_model(tmp_path / "other.keras", tmp_path / "out", verbose=False)


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    argv = ["--checkpoint", str(tmp_path / "nope.keras"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(export_lib.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --checkpoint")


def test_export_records_the_training_flow_for_predict(tiny_dataset: Path, tmp_path: Path):
    from keras_mtl.config import RUN_CONFIG_NAME
    from keras_mtl.data.layout import FLOW_DIR, FLOW_METHOD_FILE
    from keras_mtl.prediction import method_of, trained_flow

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_CONFIG_NAME).write_text(
        f"data:\n  data_path: {tiny_dataset}\n  flow_dir: {FLOW_DIR}\n"
    )
    out = tmp_path / "out"
    (out / "saved_model").mkdir(parents=True)
    entry = export_lib._write_flow_record(run_dir / "model_best.keras", out)
    assert entry["file"] == FLOW_METHOD_FILE and entry["method"] == "dis"
    # predict.py finds it beside a SavedModel folder and a .tflite file.
    for model_path in (out / "saved_model", out / "model_fp32.tflite"):
        params, where = trained_flow(model_path)
        assert method_of(params) == "dis" and where == str(out / FLOW_METHOD_FILE)
    # Nothing known, nothing written: an in-memory network, or a run without its config.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_lib._write_flow_record(tmp_path / "lone.keras", empty)["file"] is None
    assert not (empty / FLOW_METHOD_FILE).exists()
    (run_dir / RUN_CONFIG_NAME).write_text("data: [unclosed\n")  # unreadable: said, not raised
    entry = export_lib._write_flow_record(run_dir / "model_best.keras", empty)
    assert entry["file"] is None and RUN_CONFIG_NAME in entry["note"]


def test_in_memory_export_reports_no_flow_record(exported):
    out, report = exported
    assert report["flow"]["file"] is None and "in-memory" in report["flow"]["note"]
