"""predict.py / keras_mtl.prediction: footage from a video or a folder, flow as the model was
trained on, the three model formats behind one runner, overlay video and PNGs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import keras
import numpy as np
import pytest
import yaml

from data_tools.flow import DEFAULT_PARAMS, DISParams, FarnebackParams, flow_record
from data_tools.synthetic import generate_sequence
from keras_mtl import export as export_lib
from keras_mtl import prediction
from keras_mtl.data.layout import FLOW_DIRS, FLOW_METHOD_FILE
from keras_mtl.errors import UserError, run_cli
from keras_mtl.models import build_multitask_model

pytestmark = [
    # Keras converts variables with np.array(copy=False) internally; numpy 2 warns, harmlessly.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    # One worker builds the shared models (run pytest-xdist with --dist loadgroup).
    pytest.mark.xdist_group("predict"),
]

SIZE = (64, 128)  # frames and network input
NUM_FRAMES = 5
FORMATS = ("keras", "saved_model", "tflite")


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A synthetic drive of NUM_FRAMES frames at SIZE: `.frames` (a folder) and `.video` (MP4)."""
    root = tmp_path_factory.mktemp("drive")
    summary = generate_sequence(
        root / "drive", NUM_FRAMES, *SIZE, seed=0, mp4=root / "in.mp4", workers=1, progress=False
    )
    frames = (root / "drive" / summary["files"][0]).parent
    return SimpleNamespace(frames=frames, video=root / "in.mp4")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny network as a .keras checkpoint, an exported SavedModel and a fp32 .tflite."""
    network = build_multitask_model(SIZE, width_mult=0.25)
    # Shrink the depth head so that depth is in a realistic range (as tests/test_export.py).
    classifier = network.get_layer("depth_decoder.classifier")
    classifier.kernel.assign(classifier.kernel * 0.01)
    root = tmp_path_factory.mktemp("models")
    (root / "run").mkdir()
    network.save(root / "run" / "model_best.keras")
    exported = root / "exported"
    exported.mkdir()
    saved_model = export_lib.export_saved_model(
        export_lib.build_serving_model(network), exported / "saved_model"
    )
    tflite = export_lib.convert_tflite(saved_model, exported / "model_fp32.tflite")
    return {
        "keras": root / "run" / "model_best.keras",
        "saved_model": saved_model,
        "tflite": tflite,
    }


@pytest.fixture(scope="module")
def runners(models: dict[str, Path]) -> dict[str, prediction.ModelRunner]:
    return {kind: prediction.load_runner(path) for kind, path in models.items()}


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(prediction.main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------ the formats


@pytest.mark.slow
@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_writes_a_video_and_pngs(
    kind: str, runners: dict, drive: SimpleNamespace, tmp_path: Path
):
    source = prediction.open_frames(video=drive.video)
    summary = prediction.predict_footage(
        source,
        runners[kind],
        DISParams(),
        out=tmp_path / "out.mp4",
        out_dir=tmp_path / "png",
        batch_size=3,  # two calls, the second padded
        progress=False,
    )
    written = NUM_FRAMES - 1  # the first frame has no previous frame
    assert (summary.frames_read, summary.frames_written) == (NUM_FRAMES, written)
    names = [f"frame_{index:06d}.png" for index in range(1, NUM_FRAMES)]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == names
    height, width = summary.picture_size
    assert width == 256  # 128-wide frames are drawn twice as large (prediction_overlay)
    for name in names:
        assert cv2.imread(str(tmp_path / "png" / name)).shape == (height, width, 3)
    video = read_video(tmp_path / "out.mp4")
    assert len(video) == written
    assert video[0].shape == (height + height % 2, width + width % 2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "png"]  # no temporary file
    assert summary.frames_per_second > 0 and summary.timings["network"] > 0


@pytest.mark.slow
def test_the_three_formats_agree_on_the_same_frames(runners: dict, drive: SimpleNamespace):
    # Three pairs: the batch size of the format tests, so the compiled Keras call is reused.
    frames = list(prediction.open_frames(images=drive.frames))[:4]
    pairs = [
        prediction.frame_inputs(current.rgb, previous.rgb, DISParams(), SIZE)
        for previous, current in zip(frames, frames[1:], strict=False)
    ]
    flow = np.stack([pair[0] for pair in pairs])
    rgb = np.stack([pair[1] for pair in pairs])
    outputs = {kind: runner.predict(flow, rgb) for kind, runner in runners.items()}
    reference = outputs["keras"]
    assert reference["semantic"].shape == (len(pairs), *SIZE)
    assert reference["depth"].dtype == np.float32 and reference["motion"].dtype == np.int32
    for kind in ("saved_model", "tflite"):
        for task in ("semantic", "motion"):
            agreement = np.mean(outputs[kind][task] == reference[task])
            assert agreement >= 0.99, (kind, task, agreement)
        depth_diff = np.max(np.abs(outputs[kind]["depth"] - reference["depth"]))
        assert depth_diff <= 1e-3 + 1e-4 * np.max(reference["depth"]), (kind, depth_diff)
    # Every runner knows its input size; only the Keras logits tell the class count.
    assert {runner.input_size for runner in runners.values()} == {SIZE}
    assert runners["keras"].semantic_classes == 5


@pytest.mark.slow
def test_images_with_zero_flow_first_frame(runners: dict, drive: SimpleNamespace, tmp_path: Path):
    summary = prediction.predict_footage(
        prediction.open_frames(images=drive.frames),
        runners["tflite"],
        DISParams(),
        out_dir=tmp_path / "png",
        first_frame="zero_flow",
        progress=False,
    )
    assert summary.frames_written == NUM_FRAMES
    stems = sorted(p.stem for p in drive.frames.glob("*.png"))
    assert sorted(p.stem for p in (tmp_path / "png").iterdir()) == stems


@pytest.mark.slow
def test_cli_end_to_end_on_a_tflite_model(
    models: dict, drive: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
):
    out = tmp_path / "out.mp4"
    argv = ["--model", str(models["tflite"]), "--images", str(drive.frames), "--out", str(out)]
    code, stdout, _ = run_main(argv, capsys)
    assert code == 0
    assert "predictions start at the second frame" in stdout
    assert "frames/s" in stdout and f"wrote {out}" in stdout
    # Nothing is recorded beside the export: the default method, and the output says so.
    assert "flow: dis, the default method, as nothing is recorded" in stdout
    assert len(read_video(out)) == NUM_FRAMES - 1
    # An existing output is refused, then replaced with --overwrite.
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert_one_error_line(err, "--out", "exists", "--overwrite")
    code, _, _ = run_main([*argv, "--overwrite", "--first_frame", "zero_flow"], capsys)
    assert code == 0 and len(read_video(out)) == NUM_FRAMES


@pytest.mark.slow
def test_a_failure_mid_run_leaves_no_partial_video(
    runners: dict, drive: SimpleNamespace, tmp_path: Path
):
    class FailingRunner(prediction.ModelRunner):
        """The TFLite model, failing on its second batch."""

        def __init__(self, inner: prediction.ModelRunner) -> None:
            self.inner, self.calls = inner, 0
            self.input_size, self.tasks = inner.input_size, inner.tasks

        def _run(self, flow: np.ndarray, rgb: np.ndarray):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return self.inner._run(flow, rgb)

    with pytest.raises(RuntimeError, match="boom"):
        prediction.predict_footage(
            prediction.open_frames(video=drive.video),
            FailingRunner(runners["tflite"]),
            DISParams(),
            out=tmp_path / "out.mp4",
            out_dir=tmp_path / "png",
            batch_size=1,
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png"]  # no video, no temporary file
    written = list((tmp_path / "png").iterdir())
    assert [p.name for p in written] == ["frame_000001.png"]  # complete PNGs only
    assert cv2.imread(str(written[0])) is not None


# ------------------------------------------------------------------------------ inputs


def test_resize_inputs_matches_the_validation_pipeline():
    import tensorflow as tf

    from keras_mtl.data import augment

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    stored = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    flow, resized = prediction.resize_inputs(rgb, stored, SIZE)
    offset = np.asarray([128.0, 128.0, 0.0], np.float32)
    example = {"rgb": tf.constant(rgb, tf.float32), "flow": tf.constant(stored - offset)}
    expected = augment.resize(example, SIZE)
    np.testing.assert_allclose(resized, expected["rgb"].numpy(), atol=1e-3)
    np.testing.assert_allclose(flow, expected["flow"].numpy() + offset, atol=1e-3)


def test_frame_inputs_are_the_training_pipelines_inputs(tiny_dataset: Path):
    # The dataset's flow was computed by data_tools.flow with the default method; recomputing
    # it from the two frames and resizing both must give what the validation pipeline feeds.
    from data_tools import read_png

    size = (32, 64)  # the pipeline resizes the 64x128 frames, flow vectors halved
    expected, _ = export_lib.load_frames(str(tiny_dataset), "val", size, 2, 5)
    currents = sorted((tiny_dataset / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    for current_path, pipeline in zip(currents, expected, strict=True):
        city, seq, frame = current_path.name.split("_")[:3]
        previous_name = f"{city}_{seq}_{int(frame) - 1:06d}_leftImg8bit.png"
        previous_path = tiny_dataset / "leftImg8bit_sequence" / "val" / city / previous_name
        flow, rgb = prediction.frame_inputs(
            read_png(current_path, rgb=True),
            read_png(previous_path, rgb=True),
            DEFAULT_PARAMS,
            size,
        )
        np.testing.assert_allclose(rgb, pipeline["rgb"][0], atol=1e-3)
        np.testing.assert_allclose(flow, pipeline["flow"][0], atol=1e-3)


def test_frame_inputs_without_previous_frame_is_zero_flow_and_confidence():
    frame = np.full((32, 48, 3), 77, np.uint8)
    flow, rgb = prediction.frame_inputs(frame, None, DISParams(), SIZE)
    assert flow.shape == rgb.shape == (*SIZE, 3)
    np.testing.assert_array_equal(flow[0, 0], [128.0, 128.0, 0.0])
    np.testing.assert_allclose(rgb, 77.0)


def test_frame_inputs_scales_the_flow_with_the_frame():
    # A texture shifted 2 px right: flow u ~ +2 px at 64x128, +4 px at the doubled size.
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (64, 140), dtype=np.uint8), (0, 0), 2.0)
    previous = np.repeat(texture[:, 4:132, None], 3, axis=2)
    current = np.repeat(texture[:, 2:130, None], 3, axis=2)
    flow, _ = prediction.frame_inputs(current, previous, DISParams(), (128, 256))
    u = flow[32:96, 32:224, 0] - 128.0
    assert abs(float(np.median(u)) - 4.0) < 0.5


def test_images_are_sorted_by_name_with_numbers_by_value():
    names = ["f10.png", "f9.png", "f1.png", "F2.png"]
    assert sorted(names, key=prediction.natural_sort_key) == [
        "f1.png",
        "F2.png",
        "f9.png",
        "f10.png",
    ]


# ------------------------------------------------------------------------------ which flow


def write_run(run: Path, data_path: Path, flow_dir: str) -> Path:
    """A run folder: a (dummy) checkpoint and the config.yaml that train.py writes beside it."""
    run.mkdir(parents=True)
    config = {"data": {"data_path": str(data_path), "flow_dir": flow_dir}, "train": {}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "model_best.keras").write_bytes(b"")
    return run / "model_best.keras"


def write_flow_folder(data_path: Path, flow_dir: str, record: dict | None) -> None:
    folder = data_path / flow_dir / "train" / "city"
    folder.mkdir(parents=True)
    (folder / "city_000000_000019_leftImg8bit.png").write_bytes(b"")
    if record is not None:
        (data_path / flow_dir / FLOW_METHOD_FILE).write_text(json.dumps(record))


def test_a_checkpoint_uses_its_runs_recorded_flow(tmp_path: Path):
    recorded = FarnebackParams(winsize=15)
    write_flow_folder(tmp_path / "data", "myflow", flow_record(recorded))
    checkpoint = write_run(tmp_path / "run", tmp_path / "data", "myflow")
    choice = prediction.choose_flow(checkpoint)
    assert choice.params == recorded and choice.trained_method == "farneback"
    assert choice.warning is None and "flow_method.json" in choice.source
    # The same method given: the recorded parameters still; another method: a warning.
    assert prediction.choose_flow(checkpoint, "farneback").params == recorded
    other = prediction.choose_flow(checkpoint, "dis")
    assert other.params == DISParams()
    assert "--flow_method dis differs from the farneback flow" in other.warning


def test_flow_folders_without_a_record_or_without_the_dataset(tmp_path: Path):
    # Flow files but no record: the Farneback-only tool wrote them.
    write_flow_folder(tmp_path / "old", "flows", None)
    checkpoint = write_run(tmp_path / "a", tmp_path / "old", "flows")
    assert prediction.choose_flow(checkpoint).params == FarnebackParams()
    # The dataset is not on this machine: the folder's name says the method.
    checkpoint = write_run(tmp_path / "b", tmp_path / "gone", FLOW_DIRS["farneback"])
    choice = prediction.choose_flow(checkpoint)
    assert choice.params == FarnebackParams() and "not here" in choice.source
    # No config.yaml: the default method.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.keras").write_bytes(b"")
    choice = prediction.choose_flow(tmp_path / "c" / "model.keras")
    assert choice.params == DEFAULT_PARAMS and choice.trained_method is None
    assert "nothing is recorded" in choice.source


def test_an_export_uses_a_flow_record_beside_it(tmp_path: Path):
    model = tmp_path / "model_fp32.tflite"
    model.write_bytes(b"")
    assert prediction.choose_flow(model).params == DEFAULT_PARAMS
    (tmp_path / FLOW_METHOD_FILE).write_text(json.dumps(flow_record(FarnebackParams())))
    choice = prediction.choose_flow(model, "dis")
    assert choice.params == DISParams() and "differs" in choice.warning


# ------------------------------------------------------------------------------ bad input


def test_bad_footage_is_one_line_naming_the_flag_or_file(
    drive: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
):
    model = ["--model", str(tmp_path / "never_loaded.tflite"), "--out", str(tmp_path / "o.mp4")]
    missing = tmp_path / "missing.mp4"
    code, _, err = run_main([*model, "--video", str(missing)], capsys)
    assert code == 2
    assert_one_error_line(err, "--video", "no such file")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    code, _, err = run_main([*model, "--video", str(junk)], capsys)
    assert code == 2
    assert_one_error_line(err, "--video", str(junk))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, _, err = run_main([*model, "--images", str(empty)], capsys)
    assert code == 2
    assert_one_error_line(err, "--images", "no images")
    mixed = tmp_path / "mixed"
    shutil.copytree(drive.frames, mixed)
    odd = sorted(mixed.glob("*.png"))[2]
    cv2.imwrite(str(odd), np.zeros((32, 64, 3), np.uint8))
    code, _, err = run_main([*model, "--images", str(mixed)], capsys)
    assert code == 2
    assert_one_error_line(err, "--images", odd.name, "one size")
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(sorted(drive.frames.glob("*.png"))[0], single)
    code, _, err = run_main([*model, "--images", str(single)], capsys)
    assert code == 2
    assert_one_error_line(err, "--images", "two consecutive frames")
    assert not (tmp_path / "o.mp4").exists()


def test_bad_outputs_are_refused_before_any_work(
    drive: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
):
    base = ["--model", str(tmp_path / "never_loaded.tflite"), "--video", str(drive.video)]
    code, _, err = run_main(base, capsys)
    assert code == 2
    assert_one_error_line(err, "--out", "--out_dir")
    code, _, err = run_main([*base, "--out", str(tmp_path / "out.avi")], capsys)
    assert code == 2
    assert_one_error_line(err, "--out", ".mp4")
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"keep me")
    code, _, err = run_main([*base, "--out", str(existing)], capsys)
    assert code == 2
    assert_one_error_line(err, "--out", "exists", "--overwrite")
    assert existing.read_bytes() == b"keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.png").write_bytes(b"keep me")
    code, _, err = run_main([*base, "--out_dir", str(full)], capsys)
    assert code == 2
    assert_one_error_line(err, "--out_dir", "not empty", "--overwrite")
    assert [p.name for p in full.iterdir()] == ["mine.png"]
    code, _, err = run_main(
        [*base, "--out_dir", str(tmp_path / "x"), "--depth_range", "5", "2"], capsys
    )
    assert code == 2
    assert_one_error_line(err, "--depth_range")
    code, _, err = run_main([*base, "--out_dir", str(tmp_path / "x"), "--fps", "0"], capsys)
    assert code == 2
    assert_one_error_line(err, "--fps")
    code, _, err = run_main([*base, "--out", str(tmp_path / "o.mp4")], capsys)
    assert code == 2
    assert_one_error_line(err, "--model", "never_loaded.tflite", "no such file")


def save_tiny_model(path: Path, flow_channels: int, with_flow: bool = True) -> Path:
    rgb = keras.Input((16, 32, 3), name="rgb")
    inputs = {"rgb": rgb}
    features = rgb
    if with_flow:
        inputs["flow"] = keras.Input((16, 32, flow_channels), name="flow")
        features = keras.layers.Concatenate()([rgb, inputs["flow"]])
    depth = keras.layers.Conv2D(1, 1, name="depth")(features)
    keras.Model(inputs, {"depth": depth}).save(path)
    return path


def test_models_without_the_right_inputs_are_refused(
    drive: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
):
    footage = ["--video", str(drive.video), "--out", str(tmp_path / "o.mp4")]
    two_channel_flow = save_tiny_model(tmp_path / "two.keras", flow_channels=2)
    code, _, err = run_main(["--checkpoint", str(two_channel_flow), *footage], capsys)
    assert code == 2
    # The checkpoint loader's contract check names the flag, the file and the expected shape.
    assert_one_error_line(err, "--checkpoint", "not a keras-mtl model", "[B, H, W, 3]")
    no_flow = save_tiny_model(tmp_path / "rgb_only.keras", flow_channels=3, with_flow=False)
    code, _, err = run_main(["--checkpoint", str(no_flow), *footage], capsys)
    assert code == 2
    assert_one_error_line(err, "--checkpoint", "no flow input")
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_bytes(b"")
    code, _, err = run_main(["--model", str(not_a_model), *footage], capsys)
    assert code == 2
    assert_one_error_line(err, "--model", ".tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    code, _, err = run_main(["--model", str(junk), *footage], capsys)
    assert code == 2
    assert_one_error_line(err, "--model", "not a readable TFLite file")
    assert not (tmp_path / "o.mp4").exists()


def test_model_signature_needs_a_fixed_size():
    dynamic = {"flow": (None, None, None, 3), "rgb": (None, None, None, 3)}
    with pytest.raises(UserError, match="no fixed size"):
        prediction.check_model_signature(dynamic, ["depth"], "--model m")
    sizes = {"flow": (None, 64, 128, 3), "rgb": (None, 64, 128, 3)}
    with pytest.raises(UserError, match="none of the outputs"):
        prediction.check_model_signature(sizes, ["logits"], "--model m")
    assert prediction.check_model_signature(sizes, ["semantic"], "--model m") == (64, 128)
