"""data_tools.flow: direction and accuracy of each method, confidence, encoding, the method
record, the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_tools import read_png, write_png_atomic
from data_tools.flow import (
    DEFAULT_METHOD,
    FLOW_METHODS,
    DISParams,
    FarnebackParams,
    compute_flow,
    decode_flow,
    default_params,
    encode_flow,
    find_flow_dirs,
    main,
    method_of,
    one_way_flow,
    params_from_record,
    read_flow_method,
    run_flow,
)
from keras_mtl.data.layout import (
    FLOW_DIR,
    FLOW_METHOD_FILE,
    PREVIOUS_DIR,
    RGB_DIR,
    SEQUENCE_DIR,
    flow_dir_for,
)
from keras_mtl.errors import UserError


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture with features at a few pixels' scale."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    blurred = (blurred - blurred.mean()) / blurred.std() * 40 + 128
    return np.clip(blurred, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", FLOW_METHODS)
@pytest.mark.parametrize("shift", [(3, -2), (-5, 4), (0, 0)])
def test_translation_gives_known_flow_and_high_confidence(
    shift: tuple[int, int], method: str
) -> None:
    dx, dy = shift  # the content moves right by dx and down by dy from previous to current
    big = _texture(160, 200)
    previous = big[30:126, 30:158]
    current = big[30 - dy : 126 - dy, 30 - dx : 158 - dx]
    # Hand check of the construction: current(y, x) == previous(y - dy, x - dx).
    np.testing.assert_array_equal(current[10, 10], previous[10 - dy, 10 - dx])

    flow = compute_flow(current, previous, default_params(method))
    assert flow.shape == (96, 128, 3) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16]
    assert np.abs(np.median(interior[..., 0]) - dx) < 0.5
    assert np.abs(np.median(interior[..., 1]) - dy) < 0.5
    assert np.mean(np.abs(interior[..., 0] - dx)) < 0.5
    assert np.mean(np.abs(interior[..., 1] - dy)) < 0.5
    assert np.median(interior[..., 2]) > 200
    assert flow[..., 2].min() >= 0 and flow[..., 2].max() <= 255


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_confidence_is_low_where_frames_disagree(method: str) -> None:
    previous = _texture(96, 128, seed=1)
    current = previous.copy()
    # Replace a block with unrelated texture: no consistent correspondence there.
    current[32:64, 48:80] = _texture(96, 128, seed=2)[32:64, 48:80]
    confidence = compute_flow(current, previous, default_params(method))[..., 2]
    assert np.median(confidence[40:56, 56:72]) < np.median(confidence[8:24, 8:40]) - 50


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_confidence_is_low_where_content_entered_the_image(method: str) -> None:
    big = _texture(96, 200)
    previous, current = big[:, 40:168], big[:, 34:162]  # content moves right by 6 px
    flow = compute_flow(current, previous, default_params(method))
    assert np.abs(np.median(flow[20:-20, 40:-40, 0]) - 6) < 0.5
    # current x < 6 came from x - 6 < 0: no correspondence in the previous frame.
    assert np.median(flow[20:-20, :4, 2]) < 100
    assert np.median(flow[20:-20, 40:-40, 2]) > 200


def test_encode_decode_round_trip() -> None:
    rng = np.random.default_rng(0)
    flow = np.dstack([rng.uniform(-120, 120, (8, 9, 2)), rng.uniform(0, 255, (8, 9, 1))]).astype(
        np.float32
    )
    encoded = encode_flow(flow)
    assert encoded.dtype == np.uint8 and encoded.shape == (8, 9, 3)
    np.testing.assert_array_equal(encoded[..., 0], np.rint(flow[..., 0] + 128).astype(np.uint8))
    decoded = decode_flow(encoded)
    assert np.max(np.abs(decoded - flow)) <= 0.5 + 1e-5
    integral = np.rint(flow)
    np.testing.assert_array_equal(decode_flow(encode_flow(integral)), integral)
    # Out-of-range motion is clipped, not wrapped.
    clipped = encode_flow(np.array([[[-300.0, 300.0, 400.0]]]))
    np.testing.assert_array_equal(clipped, [[[0, 255, 255]]])


def test_tiny_dataset_flow_files_match_compute_flow(tiny_dataset: Path) -> None:
    for flow_file in sorted((tiny_dataset / FLOW_DIR).glob("*/*/*.png")):
        split, city, name = flow_file.parts[-3:]
        current = read_png(tiny_dataset / RGB_DIR / split / city / name, rgb=True)
        previous_name = name.replace("_000019_", "_000018_")
        previous = read_png(tiny_dataset / SEQUENCE_DIR / split / city / previous_name, rgb=True)
        expected = encode_flow(compute_flow(current, previous))
        # OpenCV returns a PNG's channels as BGR: the file's first (R) channel must hold u'.
        raw = cv2.imread(str(flow_file), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(raw[..., ::-1], expected)


def _one_frame_dataset(tiny_dataset: Path, root: Path, previous: str | None) -> tuple[str, str]:
    """Copies one tiny-dataset frame under `root`, with its previous frame in `previous`."""
    source = sorted((tiny_dataset / RGB_DIR / "train").glob("*/*.png"))[0]
    city, name = source.parent.name, source.name
    write_png_atomic(root / RGB_DIR / "train" / city / name, read_png(source, rgb=True), rgb=True)
    previous_name = name.replace("_000019_", "_000018_")
    previous_image = read_png(
        tiny_dataset / SEQUENCE_DIR / "train" / city / previous_name, rgb=True
    )
    if previous == SEQUENCE_DIR:
        write_png_atomic(
            root / SEQUENCE_DIR / "train" / city / previous_name, previous_image, rgb=True
        )
    elif previous == PREVIOUS_DIR:
        write_png_atomic(root / PREVIOUS_DIR / "train" / city / name, previous_image, rgb=True)
    return city, name


def test_cli_uses_leftimg8bit_previous_and_skips_existing(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    city, name = _one_frame_dataset(tiny_dataset, tmp_path, PREVIOUS_DIR)
    assert main(["--data_path", str(tmp_path), "--splits", "train", "--workers", "1"]) == 0
    output = tmp_path / FLOW_DIR / "train" / city / name
    expected = read_png(tiny_dataset / FLOW_DIR / "train" / city / name, rgb=True)
    np.testing.assert_array_equal(read_png(output, rgb=True), expected)
    assert run_flow(tmp_path, ["train"], workers=1, progress=False) == {"written": 0, "skipped": 1}
    counts = run_flow(tmp_path, ["train"], workers=1, overwrite=True, progress=False)
    assert counts == {"written": 1, "skipped": 0}
    assert not list(output.parent.glob(".*.tmp"))  # no temporary files left behind


def test_missing_previous_frame_names_stem_and_places(tiny_dataset: Path, tmp_path: Path) -> None:
    _, name = _one_frame_dataset(tiny_dataset, tmp_path, previous=None)
    stem = name[: -len("_leftImg8bit.png")]
    with pytest.raises(UserError) as error:
        run_flow(tmp_path, ["train"], workers=1, progress=False)
    message = str(error.value)
    assert stem in message and SEQUENCE_DIR in message and PREVIOUS_DIR in message


def test_bad_data_path_and_split(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--data_path"):
        run_flow(tmp_path / "missing", workers=1, progress=False)
    with pytest.raises(UserError, match=RGB_DIR):
        run_flow(tmp_path, workers=1, progress=False)
    (tmp_path / RGB_DIR / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="--splits"):
        run_flow(tmp_path, ["val"], workers=1, progress=False)
    with pytest.raises(UserError, match="no \\*_leftImg8bit.png frames"):
        run_flow(tmp_path, ["train"], workers=1, progress=False)


def test_cli_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "data_tools.flow", "--data_path", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --data_path")
    assert "Traceback" not in result.stderr


# --- accuracy against known flow; bounds from benchmarks/flow.py (docs/data.md) with margin ---


def _benchmarks_flow():
    repo_root = str(Path(__file__).resolve().parents[1])
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    from benchmarks import flow as benchmarks_flow

    return benchmarks_flow


def test_error_bounds_on_a_real_stereo_pair() -> None:
    # Middlebury motorcycle (scikit-image's copy), disparity = horizontal flow of 7-60 px.
    # Measured (OpenCV 5.0): Farneback EPE 25.2 px, DIS 2.63 px with 16.8% of pixels over 3 px.
    bench = _benchmarks_flow()
    pair = bench.stereo_motorcycle_pair()
    assert pair.current.shape == (500, 741, 3) and 0.9 < pair.valid.mean() < 0.95
    farneback = bench.score(compute_flow(pair.current, pair.previous, FarnebackParams()), pair)
    dis = bench.score(compute_flow(pair.current, pair.previous, DISParams()), pair)
    assert farneback["epe"] < 30.0
    assert dis["epe"] < 3.2 and dis["over_3px"] < 0.21
    assert dis["epe"] < farneback["epe"] / 5  # the reason to prefer DIS on real motion
    # The confidence ranks errors: confident pixels are the more accurate ones.
    assert dis["epe_confident"] < 0.8 * dis["epe"] and dis["confident_share"] > 0.8
    assert farneback["epe_confident"] < 0.8 * farneback["epe"]


def test_error_bounds_on_synthetic_pairs_with_true_flow() -> None:
    # Three 128x256 validation pairs of seed 0 scored against the renderer's exact flow.
    # Measured: Farneback EPE 2.18 px, DIS 1.42 px.
    bench = _benchmarks_flow()
    pairs = list(bench.synthetic_pairs(128, 256, 3))
    farneback = bench.benchmark(pairs, FarnebackParams())
    dis = bench.benchmark(pairs, DISParams())
    assert farneback["epe"] < 2.6 and dis["epe"] < 1.8
    assert dis["epe"] < farneback["epe"]
    for result in (farneback, dis):
        assert result["epe_confident"] < result["epe"] and result["over_3px"] < 0.3


def test_benchmark_script_writes_its_table_as_json(tmp_path: Path, capsys) -> None:
    bench = _benchmarks_flow()
    out = tmp_path / "flow.json"
    flags = ["--skip_real", "--sizes", "48x96", "--frames", "2", "--methods", "farneback", "dis"]
    assert bench.main([*flags, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(row["pairs"], row["method"]) for row in result["results"]] == [
        ("synthetic 48x96", "farneback"),
        ("synthetic 48x96", "dis"),
    ]
    for row in result["results"]:
        assert row["frames"] == 2 and 0 < row["epe"] < 5 and row["fps_cpu"] > 0
    assert "synthetic 48x96      dis" in capsys.readouterr().out
    with pytest.raises(UserError, match="--methods: unknown"):
        bench.main(["--skip_real", "--methods", "tvl1"])
    with pytest.raises(UserError, match="--sizes"):
        bench.main(["--skip_real", "--sizes", "48by96"])


def test_dis_params_are_opencvs_presets() -> None:
    previous = _texture(64, 96, seed=3)
    current = _texture(64, 96, seed=3)[:, list(range(2, 96)) + [95, 95]]  # content moved left
    gray_current = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
    gray_previous = cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY)
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    for name, preset in presets.items():
        expected = cv2.DISOpticalFlow_create(preset).calc(gray_current, gray_previous, None)
        ours = one_way_flow(gray_current, gray_previous, DISParams.from_preset(name))
        np.testing.assert_array_equal(ours, expected)
    assert DISParams() == DISParams.from_preset("medium")
    with pytest.raises(UserError, match="unknown DIS preset"):
        DISParams.from_preset("slow")


def test_method_names_folders_and_defaults() -> None:
    assert FLOW_METHODS == ("farneback", "dis")
    assert default_params("farneback") == FarnebackParams()
    assert method_of(DISParams()) == "dis" and method_of(FarnebackParams()) == "farneback"
    # The seed's folder stays the Farneback one; DIS gets its own.
    assert flow_dir_for("farneback") == "leftImg8bit_flow_farneback_confidence"
    assert flow_dir_for("dis") == "leftImg8bit_flow_dis_confidence"
    # The tools' default method writes where training reads by default.
    assert flow_dir_for(DEFAULT_METHOD) == FLOW_DIR
    with pytest.raises(UserError, match="--method"):
        default_params("deepflow")
    with pytest.raises(UserError, match="unknown flow method"):
        flow_dir_for("deepflow")


def test_cli_method_dis_writes_its_folder_and_record(tiny_dataset: Path, tmp_path: Path) -> None:
    city, name = _one_frame_dataset(tiny_dataset, tmp_path, SEQUENCE_DIR)
    assert main(["--data_path", str(tmp_path), "--method", "dis", "--workers", "1"]) == 0
    output = tmp_path / flow_dir_for("dis") / "train" / city / name
    current = read_png(tmp_path / RGB_DIR / "train" / city / name, rgb=True)
    previous_name = name.replace("_000019_", "_000018_")
    previous = read_png(tmp_path / SEQUENCE_DIR / "train" / city / previous_name, rgb=True)
    expected = encode_flow(compute_flow(current, previous, DISParams()))
    np.testing.assert_array_equal(read_png(output, rgb=True), expected)

    record = read_flow_method(tmp_path, flow_dir_for("dis"))
    assert record["method"] == "dis" and record["finished"] is True
    assert record["opencv_version"] == cv2.__version__
    assert params_from_record(record) == DISParams()
    on_disk = json.loads((tmp_path / flow_dir_for("dis") / FLOW_METHOD_FILE).read_text())
    assert on_disk == record
    assert find_flow_dirs(tmp_path) == {flow_dir_for("dis"): record}
    # --flow_dir names another folder; its record says what is in it.
    flags = ["--method", "farneback", "--flow_dir", "flow_fb", "--workers", "1"]
    assert main(["--data_path", str(tmp_path), *flags]) == 0
    assert params_from_record(read_flow_method(tmp_path, "flow_fb")) == FarnebackParams()
    assert set(find_flow_dirs(tmp_path)) == {flow_dir_for("dis"), "flow_fb"}


def test_a_flow_folder_never_mixes_methods(tiny_dataset: Path, tmp_path: Path) -> None:
    city, name = _one_frame_dataset(tiny_dataset, tmp_path, SEQUENCE_DIR)
    folder = tmp_path / "flow"
    fb, dis = FarnebackParams(), DISParams()
    run_flow(tmp_path, ["train"], workers=1, params=fb, flow_dir="flow", progress=False)
    with pytest.raises(UserError, match="holds farneback flow.*--overwrite"):
        run_flow(tmp_path, ["train"], workers=1, params=dis, flow_dir="flow", progress=False)
    assert read_flow_method(tmp_path, "flow")["method"] == "farneback"  # untouched
    counts = run_flow(
        tmp_path, ["train"], workers=1, params=dis, flow_dir="flow", overwrite=True, progress=False
    )
    assert counts == {"written": 1, "skipped": 0}
    assert read_flow_method(tmp_path, "flow") == json.loads((folder / FLOW_METHOD_FILE).read_text())
    assert "replacing" not in read_flow_method(tmp_path, "flow")

    # Files without a record were written by the Farneback-only tool.
    (folder / FLOW_METHOD_FILE).unlink()
    assert read_flow_method(tmp_path, "flow") is None
    with pytest.raises(UserError, match="holds farneback flow"):
        run_flow(tmp_path, ["train"], workers=1, params=dis, flow_dir="flow", progress=False)
    assert run_flow(tmp_path, ["train"], workers=1, params=fb, flow_dir="flow", progress=False) == {
        "written": 0,
        "skipped": 1,
    }
    assert read_flow_method(tmp_path, "flow")["method"] == "farneback"

    # Replacing the method of only some of the folder's splits is refused.
    (folder / "val" / city).mkdir(parents=True)
    write_png_atomic(folder / "val" / city / name, np.zeros((4, 4, 3), np.uint8), rgb=True)
    with pytest.raises(UserError, match=r"also holds \['val'\]"):
        run_flow(
            tmp_path, ["train"], workers=1, params=dis, flow_dir="flow", overwrite=True,
            progress=False,
        )  # fmt: skip

    # An interrupted replacement: a resume without --overwrite could keep old files.
    interrupted = {**read_flow_method(tmp_path, "flow"), "finished": False}
    interrupted["replacing"] = {"method": "dis", "params": {}}
    (folder / FLOW_METHOD_FILE).write_text(json.dumps(interrupted))
    with pytest.raises(UserError, match="interrupted --overwrite run"):
        run_flow(tmp_path, ["train"], workers=1, params=fb, flow_dir="flow", progress=False)


def test_bad_flow_record_and_flow_dir(tiny_dataset: Path, tmp_path: Path) -> None:
    _one_frame_dataset(tiny_dataset, tmp_path, SEQUENCE_DIR)
    with pytest.raises(UserError, match="--flow_dir 'nowhere'"):
        read_flow_method(tmp_path, "nowhere")
    with pytest.raises(UserError, match="--flow_dir must be a folder name"):
        run_flow(tmp_path, workers=1, flow_dir="a/b", progress=False)
    folder = tmp_path / FLOW_DIR
    folder.mkdir()
    (folder / FLOW_METHOD_FILE).write_text("{not json")
    with pytest.raises(UserError, match=f"{FLOW_METHOD_FILE}: not a readable flow record"):
        read_flow_method(tmp_path)
    (folder / FLOW_METHOD_FILE).write_text(json.dumps({"method": "dis", "params": {"x": 1}}))
    with pytest.raises(UserError, match="dis parameters"):
        read_flow_method(tmp_path)


def test_cli_bad_method_is_one_line(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "data_tools.flow", "--data_path", str(tmp_path), "--method", "tvl1"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --method must be one of farneback, dis")
    assert "Traceback" not in result.stderr
