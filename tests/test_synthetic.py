"""data_tools.synthetic: layout, encodings, geometry, labels, determinism, ego-motion, the flow
method, drives (--sequence) and their MP4."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_tools import read_png
from data_tools.flow import DISParams, compute_flow, encode_flow, read_flow_method
from data_tools.synthetic import (
    Camera,
    depth_to_disparity_png,
    disparity_png_to_depth,
    drive_frame_path,
    drive_scene,
    generate_dataset,
    generate_sample,
    generate_sequence,
    main,
    make_difficulty,
    render_drive_frame,
    render_view,
    true_flow,
)
from keras_mtl.data.labels import LABEL_BY_NAME, label_ids_to_five_classes
from keras_mtl.data.layout import (
    CAMERA_DIR,
    CAMERA_SUFFIX,
    DISPARITY_DIR,
    DISPARITY_SUFFIX,
    FIVE_CLASS_SUFFIX,
    FLOW_DIR,
    GT_DIR,
    LABEL_IDS_SUFFIX,
    MOTION_SUFFIX,
    RGB_DIR,
    RGB_SUFFIX,
    SEQUENCE_DIR,
    flow_dir_for,
)
from keras_mtl.errors import UserError

# The settings of the `tiny_dataset` fixture (tests/conftest.py).
TINY_DATASET = {"num_train": 4, "num_val": 2, "height": 64, "width": 128, "seed": 7}

STEM = re.compile(r"^[a-z]+_\d{6}_000019$")
HEIGHT, WIDTH = TINY_DATASET["height"], TINY_DATASET["width"]


def _stems(root: Path, folder: str, split: str, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in (root / folder / split).glob(f"*/*{suffix}")}


def _frames(root: Path, split: str):
    for image in sorted((root / RGB_DIR / split).glob(f"*/*{RGB_SUFFIX}")):
        city, stem = image.parent.name, image.name[: -len(RGB_SUFFIX)]
        yield city, stem


@pytest.mark.parametrize("split", ["train", "val"])
def test_layout_names_and_counts(tiny_dataset: Path, split: str) -> None:
    expected = TINY_DATASET[f"num_{split}"]
    stems = _stems(tiny_dataset, RGB_DIR, split, RGB_SUFFIX)
    assert len(stems) == expected and all(STEM.match(stem) for stem in stems)
    for folder, suffix in [
        (FLOW_DIR, RGB_SUFFIX),
        (GT_DIR, LABEL_IDS_SUFFIX),
        (GT_DIR, FIVE_CLASS_SUFFIX),
        (GT_DIR, MOTION_SUFFIX),
        (DISPARITY_DIR, DISPARITY_SUFFIX),
        (CAMERA_DIR, CAMERA_SUFFIX),
    ]:
        assert _stems(tiny_dataset, folder, split, suffix) == stems, (folder, suffix)
    # Previous frames are frame 18 of the same snippet, as in leftImg8bit_sequence.
    previous = _stems(tiny_dataset, SEQUENCE_DIR, split, RGB_SUFFIX)
    assert previous == {stem[:-6] + "000018" for stem in stems}
    for city, stem in _frames(tiny_dataset, split):
        assert stem.startswith(city + "_")
    manifest = json.loads((tiny_dataset / "synthetic_dataset.json").read_text())
    assert manifest["splits"][split] == expected and manifest["seed"] == TINY_DATASET["seed"]
    assert (manifest["height"], manifest["width"]) == (HEIGHT, WIDTH)


def test_modalities_sizes_and_bit_depths(tiny_dataset: Path) -> None:
    for split in ("train", "val"):
        for city, stem in _frames(tiny_dataset, split):
            rgb = read_png(tiny_dataset / RGB_DIR / split / city / f"{stem}{RGB_SUFFIX}", rgb=True)
            previous_name = f"{stem[:-6]}000018{RGB_SUFFIX}"
            previous = read_png(tiny_dataset / SEQUENCE_DIR / split / city / previous_name)
            flow = read_png(tiny_dataset / FLOW_DIR / split / city / f"{stem}{RGB_SUFFIX}")
            gt = tiny_dataset / GT_DIR / split / city
            label_ids = read_png(gt / f"{stem}{LABEL_IDS_SUFFIX}")
            five = read_png(gt / f"{stem}{FIVE_CLASS_SUFFIX}")
            motion = read_png(gt / f"{stem}{MOTION_SUFFIX}")
            disparity = read_png(
                tiny_dataset / DISPARITY_DIR / split / city / f"{stem}{DISPARITY_SUFFIX}"
            )
            for image, channels in [(rgb, 3), (previous, 3), (flow, 3)]:
                assert image.shape == (HEIGHT, WIDTH, channels) and image.dtype == np.uint8
            for image in (label_ids, five, motion):
                assert image.shape == (HEIGHT, WIDTH) and image.dtype == np.uint8
            assert disparity.shape == (HEIGHT, WIDTH) and disparity.dtype == np.uint16
            assert set(np.unique(motion)) <= {0, 255}
            assert not np.array_equal(
                rgb, read_png(tiny_dataset / SEQUENCE_DIR / split / city / previous_name, rgb=True)
            )


def test_labels_sky_and_bonnet(tiny_dataset: Path) -> None:
    sky, ego = LABEL_BY_NAME["sky"].id, LABEL_BY_NAME["ego vehicle"].id
    for split in ("train", "val"):
        five_seen, motion_seen = set(), set()
        for city, stem in _frames(tiny_dataset, split):
            gt = tiny_dataset / GT_DIR / split / city
            label_ids = read_png(gt / f"{stem}{LABEL_IDS_SUFFIX}")
            five = read_png(gt / f"{stem}{FIVE_CLASS_SUFFIX}")
            motion = read_png(gt / f"{stem}{MOTION_SUFFIX}")
            disparity = read_png(
                tiny_dataset / DISPARITY_DIR / split / city / f"{stem}{DISPARITY_SUFFIX}"
            )
            np.testing.assert_array_equal(five, label_ids_to_five_classes(label_ids))
            five_seen |= set(np.unique(five).tolist())
            motion_seen |= set(np.unique(motion).tolist())
            # Sky and the bonnet have no valid disparity; everything else has.
            invalid = (label_ids == sky) | (label_ids == ego)
            assert np.all(disparity[invalid] == 0) and np.all(disparity[~invalid] > 1)
            # Only road users move.
            movers = np.isin(five, [2, 3])
            assert not np.any(motion[~movers])
        # Every class, ignore, and both motion classes occur in each split.
        assert five_seen == {0, 1, 2, 3, 4, 255}, split
        assert motion_seen == {0, 255}, split


def test_frames_are_stored_in_rgb_order(tiny_dataset: Path) -> None:
    # OpenCV returns a PNG's channels as BGR; the sky must come out blue (B > R) that way.
    sky = LABEL_BY_NAME["sky"].id
    blue, red = [], []
    for city, stem in _frames(tiny_dataset, "train"):
        raw = cv2.imread(str(tiny_dataset / RGB_DIR / "train" / city / f"{stem}{RGB_SUFFIX}"))
        label_ids = read_png(tiny_dataset / GT_DIR / "train" / city / f"{stem}{LABEL_IDS_SUFFIX}")
        blue.append(raw[..., 0][label_ids == sky].mean())
        red.append(raw[..., 2][label_ids == sky].mean())
    assert np.mean(blue) > np.mean(red) + 20


def test_disparity_matches_geometry_and_camera(tiny_dataset: Path) -> None:
    split = "train"
    road = LABEL_BY_NAME["road"].id
    for index, (city, stem) in enumerate(sorted(_frames(tiny_dataset, split), key=lambda f: f[1])):
        camera = json.loads(
            (tiny_dataset / CAMERA_DIR / split / city / f"{stem}{CAMERA_SUFFIX}").read_text()
        )
        assert set(camera["extrinsic"]) == {"baseline", "pitch", "roll", "yaw", "x", "y", "z"}
        assert set(camera["intrinsic"]) == {"fx", "fy", "u0", "v0"}
        disparity = read_png(
            tiny_dataset / DISPARITY_DIR / split / city / f"{stem}{DISPARITY_SUFFIX}"
        )
        label_ids = read_png(tiny_dataset / GT_DIR / split / city / f"{stem}{LABEL_IDS_SUFFIX}")
        fx, fy = camera["intrinsic"]["fx"], camera["intrinsic"]["fy"]
        v0, mount, baseline = (
            camera["intrinsic"]["v0"],
            camera["extrinsic"]["z"],
            camera["extrinsic"]["baseline"],
        )
        # Hand geometry: a road pixel in row v sees the ground at depth mount * fy / (v - v0).
        rows, cols = np.nonzero(label_ids == road)
        expected_depth = mount * fy / (rows - v0)
        depth = fx * baseline / ((disparity[rows, cols].astype(np.float64) - 1.0) / 256.0)
        # Quantisation of p to 1/256 px of disparity: relative error <= depth * 0.5 / (256 d).
        tolerance = expected_depth * (0.5 / (256.0 * fx * baseline / expected_depth)) + 1e-6
        assert np.all(np.abs(depth - expected_depth) <= tolerance * 1.01)
        # The written disparity is exactly the encoding of the rendered depth.
        sample = generate_sample(
            TINY_DATASET["seed"], split, int(stem.split("_")[1]), HEIGHT, WIDTH
        )
        assert sample.stem == stem and index >= 0
        np.testing.assert_array_equal(
            disparity, depth_to_disparity_png(sample.depth, sample.camera)
        )
        decoded = disparity_png_to_depth(disparity, camera)
        valid = sample.depth > 0
        assert np.max(np.abs(decoded[valid] - sample.depth[valid]) / sample.depth[valid]) < 0.02


def test_disparity_encoding_by_hand() -> None:
    camera = Camera.for_image(32, 64, mount_height=1.5)
    depth = np.array([[10.0, 0.0], [np.inf, 2.0]])
    encoded = depth_to_disparity_png(depth, camera)
    d10 = camera.fx * camera.baseline / 10.0
    d2 = camera.fx * camera.baseline / 2.0
    np.testing.assert_array_equal(encoded, [[round(d10 * 256) + 1, 0], [0, round(d2 * 256) + 1]])
    assert encoded.dtype == np.uint16


def test_same_seed_same_bytes_any_workers_and_other_seed_differs(tmp_path: Path) -> None:
    settings = dict(num_train=2, num_val=1, height=48, width=96, progress=False)
    generate_dataset(tmp_path / "a", seed=3, workers=1, **settings)
    generate_dataset(tmp_path / "b", seed=3, workers=2, **settings)
    generate_dataset(tmp_path / "c", seed=4, workers=1, flow=False, **settings)
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    files_b = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    # 8 files per frame, the manifest and the flow folder's flow_method.json.
    assert files_a == files_b and len(files_a) == 3 * 8 + 2
    for relative in files_a:
        if relative.name != "synthetic_dataset.json":
            assert (tmp_path / "a" / relative).read_bytes() == (
                tmp_path / "b" / relative
            ).read_bytes()
    for relative in files_a:
        if relative.parts[0] == RGB_DIR:
            assert (tmp_path / "a" / relative).read_bytes() != (
                tmp_path / "c" / relative
            ).read_bytes()


@pytest.fixture(scope="module")
def static_world_sample():
    """A 128x256 frame whose road users all stand still."""
    return generate_sample(
        11, "train", 0, 128, 256, make_difficulty(moving_fraction=0.0, object_count=10)
    )


def test_static_objects_move_in_the_image_but_are_labelled_static(static_world_sample) -> None:
    sample = static_world_sample
    assert not sample.motion.any()
    road_users = np.isin(label_ids_to_five_classes(sample.label_ids), [2, 3])
    assert road_users.sum() > 100
    flow = compute_flow(sample.current_rgb, sample.previous_rgb)
    speed = np.linalg.norm(flow[..., :2], axis=-1)
    assert np.median(speed[road_users]) > 0.3
    # Static points under pure forward motion e: u = (x - u0) * e / (Z + e), v likewise.
    camera, ego = sample.camera, sample.scene.ego_speed
    rows, cols = np.nonzero(sample.depth > 0)
    depth = sample.depth[rows, cols].astype(np.float64)
    expected_u = (cols - camera.u0) * ego / (depth + ego)
    expected_v = (rows - camera.v0) * ego / (depth + ego)
    exact = true_flow(sample.scene, render_view(sample.scene, 0.0))
    np.testing.assert_allclose(exact[rows, cols, 0], expected_u, atol=1e-3)
    np.testing.assert_allclose(exact[rows, cols, 1], expected_v, atol=1e-3)
    # Farneback agrees with the geometry on most of the road users.
    error = np.linalg.norm(flow[..., :2] - exact, axis=-1)
    assert np.median(error[road_users]) < 1.0


def test_moving_objects_flow_differs_from_ego_motion() -> None:
    sample = generate_sample(
        5, "train", 1, 64, 128, make_difficulty(moving_fraction=1.0, object_count=10)
    )
    moving = sample.motion.astype(bool)
    assert moving.sum() > 30
    view = render_view(sample.scene, 0.0)
    with_objects = true_flow(sample.scene, view)
    view.velocity[...] = 0.0
    ego_only = true_flow(sample.scene, view)
    difference = np.linalg.norm(with_objects - ego_only, axis=-1)
    assert np.median(difference[moving]) > 0.3
    assert np.all(difference[~moving] == 0)


def test_bad_arguments_raise_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--moving_fraction"):
        make_difficulty(moving_fraction=1.5)
    with pytest.raises(UserError, match="unknown difficulty"):
        make_difficulty(colour=1)
    with pytest.raises(UserError, match="--num_train"):
        generate_dataset(tmp_path, -1, 1, 64, 128, progress=False)
    with pytest.raises(UserError, match="--height"):
        generate_dataset(tmp_path, 1, 1, 16, 128, progress=False)
    with pytest.raises(UserError, match="nothing to generate"):
        generate_dataset(tmp_path, 0, 0, 64, 128, progress=False)
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(UserError, match="not empty"):
        generate_dataset(tmp_path, 1, 0, 64, 128, progress=False)


def test_an_interrupted_generation_can_be_rerun_into_the_same_folder(tmp_path: Path) -> None:
    from data_tools.synthetic import IN_PROGRESS, MANIFEST

    out = tmp_path / "synthetic"
    stale = out / "leftImg8bit" / "train" / "city" / "city_000000_000019_leftImg8bit.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a frame")
    (out / IN_PROGRESS).write_text("{}")  # killed before the manifest was written
    summary = generate_dataset(out, 1, 0, 64, 128, workers=1, flow=False, progress=False)
    assert summary["splits"] == {"train": 1}
    assert (out / MANIFEST).is_file() and not (out / IN_PROGRESS).exists()
    assert not stale.exists()


def test_cli_bad_flag_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.synthetic",
            "--out",
            str(tmp_path),
            "--moving_fraction",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --moving_fraction") and "Traceback" not in result.stderr


def test_flow_method_picks_the_flow_and_its_folder(tmp_path: Path) -> None:
    settings = dict(num_train=1, num_val=0, height=48, width=96, workers=1, progress=False)
    summary = generate_dataset(tmp_path, flow_method="dis", **settings)
    assert summary["flow_method"] == "dis" and summary["flow_dir"] == flow_dir_for("dis")
    assert read_flow_method(tmp_path, flow_dir_for("dis"))["method"] == "dis"
    (city, stem), *_ = _frames(tmp_path, "train")
    current = read_png(tmp_path / RGB_DIR / "train" / city / f"{stem}{RGB_SUFFIX}", rgb=True)
    previous_name = f"{stem[:-6]}000018{RGB_SUFFIX}"
    previous = read_png(tmp_path / SEQUENCE_DIR / "train" / city / previous_name, rgb=True)
    stored = read_png(tmp_path / flow_dir_for("dis") / "train" / city / f"{stem}{RGB_SUFFIX}")
    expected = encode_flow(compute_flow(current, previous, DISParams()))
    np.testing.assert_array_equal(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB), expected)
    # Regenerating with the other method leaves no flow folder of the first behind.
    generate_dataset(tmp_path, flow_method="farneback", **settings)
    assert not (tmp_path / flow_dir_for("dis")).exists()
    assert read_flow_method(tmp_path, flow_dir_for("farneback"))["method"] == "farneback"
    with pytest.raises(UserError, match="--flow_method must be one of farneback, dis"):
        generate_dataset(tmp_path, flow_method="tvl1", **settings)


# --- drives: --sequence N (and --mp4) ---------------------------------------------------------

DRIVE = {"num_frames": 4, "height": 64, "width": 128, "seed": 2}


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame drive at 64x128 with its MP4 (`DRIVE`), written once."""
    root = tmp_path_factory.mktemp("drive")
    generate_sequence(root, mp4=root / "video" / "drive.mp4", workers=1, progress=False, **DRIVE)
    return root


def test_drive_files_are_consecutive_sequence_frames(drive: Path) -> None:
    folder = drive / SEQUENCE_DIR / "demo" / "ellwood"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"ellwood_000000_{k:06d}{RGB_SUFFIX}" for k in range(4)]
    assert [drive_frame_path(drive, k) for k in range(4)] == [folder / name for name in names]
    manifest = json.loads((drive / "synthetic_sequence.json").read_text())
    assert manifest["frames"] == 4 and manifest["seed"] == DRIVE["seed"]
    assert manifest["files"] == [f"{SEQUENCE_DIR}/demo/ellwood/{name}" for name in names]
    assert sorted(p.name for p in drive.iterdir()) == [
        SEQUENCE_DIR,
        "synthetic_sequence.json",
        "video",
    ]  # finished: no in-progress marker, no temporary files
    scene = drive_scene(DRIVE["seed"], 4, 64, 128)
    for k in range(4):
        frame = read_png(drive_frame_path(drive, k), rgb=True)
        assert frame.shape == (64, 128, 3) and frame.dtype == np.uint8
        # The stored frame is the drive's frame k, noise included.
        np.testing.assert_array_equal(frame, render_drive_frame(scene, DRIVE["seed"], k))


def test_drive_frames_follow_forward_motion(drive: Path) -> None:
    scene = drive_scene(DRIVE["seed"], 4, 64, 128)
    camera = scene.camera
    for k in range(1, 4):
        view = render_view(scene, float(k))
        exact = true_flow(scene, view)
        # The static world expands from the centre as the camera drives forward.
        rows, cols = np.nonzero((view.depth > 0) & ~view.moving)
        depth, ego = view.depth[rows, cols].astype(np.float64), scene.ego_speed
        np.testing.assert_allclose(
            exact[rows, cols, 0], (cols - camera.u0) * ego / (depth + ego), atol=1e-3
        )
        np.testing.assert_allclose(
            exact[rows, cols, 1], (rows - camera.v0) * ego / (depth + ego), atol=1e-3
        )
        # The written frames show that motion: the flow between them matches it.
        current = read_png(drive_frame_path(drive, k), rgb=True)
        previous = read_png(drive_frame_path(drive, k - 1), rgb=True)
        flow = compute_flow(current, previous, DISParams())
        static = (view.depth > 0) & ~view.moving
        error = np.linalg.norm(flow[..., :2] - exact, axis=-1)
        assert np.median(error[static]) < 1.0, k
        left, right = static.copy(), static.copy()
        left[:, 40:], right[:, :88] = False, False
        assert np.median(flow[..., 0][left]) < 0 < np.median(flow[..., 0][right]), k
        bottom = static.copy()
        bottom[:44] = False  # the road below the horizon comes down towards the bonnet
        assert np.median(flow[..., 1][bottom]) > 0.25, k


def test_drive_mp4_has_every_frame(drive: Path) -> None:
    capture = cv2.VideoCapture(str(drive / "video" / "drive.mp4"))
    assert capture.isOpened()
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    assert len(decoded) == DRIVE["num_frames"]
    for k, frame in enumerate(decoded):
        png = read_png(drive_frame_path(drive, k))  # OpenCV's BGR, as the decoder returns
        assert frame.shape == png.shape
        assert np.mean(np.abs(frame.astype(np.float32) - png)) < 12.0  # lossy, same picture


def test_drive_is_deterministic_and_replaces_itself(drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    generate_sequence(out, workers=2, progress=False, **{**DRIVE, "num_frames": 5})
    generate_sequence(out, workers=2, progress=False, **DRIVE)  # a shorter drive replaces it
    assert not drive_frame_path(out, 4).exists()
    for k in range(4):
        assert drive_frame_path(out, k).read_bytes() == drive_frame_path(drive, k).read_bytes()
    other = tmp_path / "other"
    generate_sequence(other, workers=1, progress=False, **{**DRIVE, "seed": 3})
    assert drive_frame_path(other, 0).read_bytes() != drive_frame_path(drive, 0).read_bytes()


def test_drive_bad_values_name_their_flag(tmp_path: Path) -> None:
    small = dict(height=64, width=128, workers=1, progress=False)
    with pytest.raises(UserError, match="--sequence must be from 2 to 1000"):
        generate_sequence(tmp_path / "a", 1, **small)
    with pytest.raises(UserError, match="--sequence must be from 2 to 1000"):
        generate_sequence(tmp_path / "a", 1001, **small)
    with pytest.raises(UserError, match="--mp4 must name a .mp4 file"):
        generate_sequence(tmp_path / "a", 2, mp4=tmp_path / "drive.avi", **small)
    with pytest.raises(UserError, match="--mp4 needs an even --height and --width"):
        generate_sequence(tmp_path / "a", 2, 65, 128, mp4=tmp_path / "d.mp4", workers=1)
    with pytest.raises(UserError, match="--fps"):
        generate_sequence(tmp_path / "a", 2, mp4=tmp_path / "d.mp4", fps=0.0, **small)
    with pytest.raises(UserError, match="--ego_speed"):
        generate_sequence(tmp_path / "a", 2, ego_speed=9.0, **small)
    generate_dataset(tmp_path / "dataset", 1, 0, 48, 96, workers=1, flow=False, progress=False)
    with pytest.raises(UserError, match="holds no synthetic_sequence.json"):
        generate_sequence(tmp_path / "dataset", 2, **small)
    out = str(tmp_path / "b")
    with pytest.raises(UserError, match="--num_train, --flow_method: dataset flags"):
        main(["--out", out, "--sequence", "3", "--num_train", "5", "--flow_method", "dis"])
    with pytest.raises(UserError, match="--mp4 and --fps need --sequence"):
        main(["--out", out, "--mp4", str(tmp_path / "d.mp4")])
    with pytest.raises(UserError, match="--fps sets the --mp4 video's frame rate"):
        main(["--out", out, "--sequence", "3", "--fps", "10"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_sequence_writes_a_drive_and_bad_count_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "data_tools.synthetic", "--out", str(tmp_path / "d")]
    size = ["--height", "48", "--width", "96", "--workers", "1"]
    result = subprocess.run(
        [*command, "--sequence", "3", *size, "--mp4", str(tmp_path / "d.mp4")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 3 frames of one drive" in result.stdout
    assert cv2.VideoCapture(str(tmp_path / "d.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    result = subprocess.run(
        [*command, "--sequence", "0", *size],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --sequence must be from 2 to 1000 frames, got 0")
