"""data_tools.flow: Farneback direction and accuracy, confidence, encoding, the command line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from data_tools import read_png, write_png_atomic
from data_tools.flow import compute_flow, decode_flow, encode_flow, main, run_flow
from keras_mtl.data.layout import FLOW_DIR, PREVIOUS_DIR, RGB_DIR, SEQUENCE_DIR
from keras_mtl.errors import UserError


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture with features at a few pixels' scale."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    blurred = (blurred - blurred.mean()) / blurred.std() * 40 + 128
    return np.clip(blurred, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shift", [(3, -2), (-5, 4), (0, 0)])
def test_translation_gives_known_flow_and_high_confidence(shift: tuple[int, int]) -> None:
    dx, dy = shift  # the content moves right by dx and down by dy from previous to current
    big = _texture(160, 200)
    previous = big[30:126, 30:158]
    current = big[30 - dy : 126 - dy, 30 - dx : 158 - dx]
    # Hand check of the construction: current(y, x) == previous(y - dy, x - dx).
    np.testing.assert_array_equal(current[10, 10], previous[10 - dy, 10 - dx])

    flow = compute_flow(current, previous)
    assert flow.shape == (96, 128, 3) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16]
    assert np.abs(np.median(interior[..., 0]) - dx) < 0.5
    assert np.abs(np.median(interior[..., 1]) - dy) < 0.5
    assert np.mean(np.abs(interior[..., 0] - dx)) < 0.5
    assert np.mean(np.abs(interior[..., 1] - dy)) < 0.5
    assert np.median(interior[..., 2]) > 200
    assert flow[..., 2].min() >= 0 and flow[..., 2].max() <= 255


def test_confidence_is_low_where_frames_disagree() -> None:
    previous = _texture(96, 128, seed=1)
    current = previous.copy()
    # Replace a block with unrelated texture: no consistent correspondence there.
    current[32:64, 48:80] = _texture(96, 128, seed=2)[32:64, 48:80]
    confidence = compute_flow(current, previous)[..., 2]
    assert np.median(confidence[40:56, 56:72]) < np.median(confidence[8:24, 8:40]) - 50


def test_confidence_is_low_where_content_entered_the_image() -> None:
    big = _texture(96, 200)
    previous, current = big[:, 40:168], big[:, 34:162]  # content moves right by 6 px
    flow = compute_flow(current, previous)
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
