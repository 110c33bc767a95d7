"""Reader and tf.data pipeline on tiny hand-written layouts with known values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.data import layout
from keras_mtl.data.labels import LABEL_ID_TO_TRAIN_ID
from keras_mtl.data.pipeline import (
    denormalize_inputs,
    disparity_to_depth,
    list_stems,
    load_frame,
    make_dataset,
    normalize_inputs,
)
from keras_mtl.errors import UserError, bad_input_report

HEIGHT, WIDTH = 8, 16
FX, BASELINE = 100.0, 0.5  # fx * baseline = 50: disparity d -> depth 50 / d


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def frame_arrays(index: int, height: int = HEIGHT, width: int = WIDTH) -> dict[str, np.ndarray]:
    """Deterministic, frame-specific stored values (what goes into the PNG files)."""
    rng = np.random.default_rng(index)
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "flow": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "semantic": rng.choice(np.array([0, 1, 2, 3, 4, 255], np.uint8), (height, width)),
        "label_ids": rng.choice(np.array([0, 7, 8, 11, 23, 24, 26, 33], np.uint8), (height, width)),
        "motion": rng.choice(np.array([0, 255], np.uint8), (height, width)),
        "disparity": rng.integers(0, 40000, (height, width)).astype(np.uint16),
    }


def write_frame(
    root: Path,
    split: str,
    stem: str,
    arrays: dict[str, np.ndarray],
    folders: dict[str, str] | None = None,
    flow_name: str | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Writes one frame in the Cityscapes layout; `folders` renames folders, `skip` omits files."""
    folders = {
        "rgb": layout.RGB_DIR,
        "flow": layout.FLOW_DIR,
        "gt": layout.GT_DIR,
        "disparity": layout.DISPARITY_DIR,
        "camera": layout.CAMERA_DIR,
        **(folders or {}),
    }
    city = stem.split("_")[0]
    files = {
        "rgb": (folders["rgb"], stem + layout.RGB_SUFFIX, arrays["rgb"]),
        "flow": (folders["flow"], flow_name or stem + layout.RGB_SUFFIX, arrays["flow"]),
        "semantic": (folders["gt"], stem + layout.FIVE_CLASS_SUFFIX, arrays["semantic"]),
        "label_ids": (folders["gt"], stem + layout.LABEL_IDS_SUFFIX, arrays["label_ids"]),
        "motion": (folders["gt"], stem + layout.MOTION_SUFFIX, arrays["motion"]),
        "disparity": (folders["disparity"], stem + layout.DISPARITY_SUFFIX, arrays["disparity"]),
    }
    for key, (folder, name, image) in files.items():
        if key not in skip:
            _write_png(root / folder / split / city / name, image)
    if "camera" not in skip:
        camera_path = root / folders["camera"] / split / city / (stem + layout.CAMERA_SUFFIX)
        camera_path.parent.mkdir(parents=True, exist_ok=True)
        camera = {
            "extrinsic": {"baseline": BASELINE, "pitch": 0.0, "roll": 0.0, "yaw": 0.0},
            "intrinsic": {"fx": FX, "fy": FX, "u0": WIDTH / 2, "v0": HEIGHT / 2},
        }
        camera_path.write_text(json.dumps(camera))


def write_dataset(root: Path, counts: dict[str, int], **kwargs) -> dict[str, dict]:
    """Writes `counts[split]` frames per split; returns {stem: arrays}."""
    written = {}
    for split, count in counts.items():
        for i in range(count):
            stem = f"{'aachen' if i % 2 else 'bonn'}_{i:06d}_000019"
            arrays = frame_arrays(sum(map(ord, split)) * 10 + i)
            write_frame(root, split, stem, arrays, **kwargs)
            written[(split, stem)] = arrays
    return written


def expected_depth(disparity: np.ndarray) -> np.ndarray:
    """Hand-written reference of depth = fx * b / ((p - 1) / 256), clipped, 0 where p = 0."""
    p = disparity.astype(np.float64)
    with np.errstate(divide="ignore"):
        depth = FX * BASELINE / ((p - 1.0) / 256.0)
    depth = np.where(p == 1, 255.0, depth)
    depth = np.clip(depth, 1.0, 255.0)
    return np.where(p == 0, 0.0, depth)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("layout")
    written = write_dataset(root, {"train": 5, "val": 3})
    return root, written


# ----------------------------------------------------------------------------- load_frame


def test_depth_formula_known_values() -> None:
    # fx * b = 50; p = 257 -> d = 1 -> 50 m; p = 2561 -> d = 10 -> 5 m; p = 129 -> d = 0.5 ->
    # 100 m; p = 25601 -> d = 100 -> 0.5 m clipped to 1; p = 2 -> 12800 m clipped to 255;
    # p = 1 -> zero disparity -> 255; p = 0 -> invalid -> 0.
    pixels = np.array([[257, 2561, 129, 25601, 2, 1, 0]], np.uint16)[..., None]
    depth = disparity_to_depth(tf.constant(pixels), tf.constant(50.0)).numpy()[0, :, 0]
    np.testing.assert_allclose(depth, [50.0, 5.0, 100.0, 1.0, 255.0, 255.0, 0.0], rtol=1e-6)


def test_motion_mapping() -> None:
    from keras_mtl.data.pipeline import _motion_ids

    stored = tf.constant([0, 255, 1, 128], tf.uint8)
    np.testing.assert_array_equal(_motion_ids(stored).numpy(), [0, 1, 255, 255])


def test_load_frame_values(dataset_root) -> None:
    root, written = dataset_root
    stem = "aachen_000001_000019"
    arrays = written[("train", stem)]
    frame = load_frame(root, "train", stem)
    assert frame["rgb"].dtype == np.uint8 and frame["rgb"].shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(frame["rgb"], arrays["rgb"])
    assert frame["flow"].dtype == np.float32
    np.testing.assert_array_equal(
        frame["flow"], arrays["flow"].astype(np.float32) - np.array([128.0, 128.0, 0.0])
    )
    assert frame["depth"].dtype == np.float32 and frame["depth"].shape == (HEIGHT, WIDTH)
    np.testing.assert_allclose(frame["depth"], expected_depth(arrays["disparity"]), rtol=1e-5)
    assert (frame["depth"] == 0).any() or (arrays["disparity"] > 0).all()
    np.testing.assert_array_equal(frame["semantic"], arrays["semantic"])
    np.testing.assert_array_equal(frame["motion"], (arrays["motion"] == 255).astype(np.uint8))


def test_load_frame_nineteen_classes(dataset_root) -> None:
    root, written = dataset_root
    stem = "bonn_000000_000019"
    frame = load_frame(root, "train", stem, semantic_classes=19)
    label_ids = written[("train", stem)]["label_ids"]
    # Hand-written mapping of the ids the writer uses: 7 road 0, 8 sidewalk 1, 11 building 2,
    # 23 sky 10, 24 person 11, 26 car 13, 33 bicycle 18, 0 unlabeled 255.
    by_hand = {0: 255, 7: 0, 8: 1, 11: 2, 23: 10, 24: 11, 26: 13, 33: 18}
    expected = np.vectorize(by_hand.get)(label_ids).astype(np.uint8)
    np.testing.assert_array_equal(frame["semantic"], expected)
    np.testing.assert_array_equal(LABEL_ID_TO_TRAIN_ID[label_ids], expected)


def test_list_stems_sorted(dataset_root) -> None:
    root, _ = dataset_root
    assert list_stems(root, "train") == sorted(
        [f"{'aachen' if i % 2 else 'bonn'}_{i:06d}_000019" for i in range(5)]
    )
    assert len(list_stems(root, "val")) == 3


def test_case_insensitive_folders(tmp_path) -> None:
    arrays = frame_arrays(7)
    folders = {"rgb": "leftimg8bit", "gt": "GTFINE", "flow": layout.FLOW_DIR.upper()}
    write_frame(tmp_path, "Train", "ulm_000001_000019", arrays, folders=folders)
    assert list_stems(tmp_path, "train") == ["ulm_000001_000019"]
    frame = load_frame(tmp_path, "train", "ulm_000001_000019")
    np.testing.assert_array_equal(frame["rgb"], arrays["rgb"])


def test_stem_matching_ignores_order_and_extra_files(tmp_path) -> None:
    # Frames written in shuffled order, flow under another name that starts with the stem,
    # unrelated files beside them, and a flow file of a frame that does not exist.
    order = [3, 0, 4, 1, 2]
    for i in order:
        stem = f"koeln_{100 - i:06d}_{i:06d}"
        write_frame(tmp_path, "train", stem, frame_arrays(i), flow_name=f"{stem}_flow.png")
    gt_city = tmp_path / layout.GT_DIR / "train" / "koeln"
    _write_png(gt_city / "koeln_000100_000000_gtFine_color.png", np.zeros((4, 4, 3), np.uint8))
    (gt_city / "koeln_000100_000000_gtFine_polygons.json").write_text("{}")
    (tmp_path / layout.RGB_DIR / "train" / "README.txt").write_text("not a frame")
    flow_city = tmp_path / layout.FLOW_DIR / "train" / "koeln"
    _write_png(flow_city / "koeln_000999_000999_flow.png", np.zeros((4, 4, 3), np.uint8))
    stems = list_stems(tmp_path, "train")
    assert stems == sorted(f"koeln_{100 - i:06d}_{i:06d}" for i in range(5))
    for i in order:
        frame = load_frame(tmp_path, "train", f"koeln_{100 - i:06d}_{i:06d}")
        arrays = frame_arrays(i)
        np.testing.assert_array_equal(frame["rgb"], arrays["rgb"])
        np.testing.assert_array_equal(frame["flow"][..., 2], arrays["flow"][..., 2])


# ----------------------------------------------------------------------------- make_dataset


def test_validation_pipeline_normalisation_at_native_size(dataset_root) -> None:
    root, written = dataset_root
    dataset = make_dataset(
        root, "val", img_resize=(HEIGHT, WIDTH), batch_size=2, training=False, cache=True
    )
    assert dataset.cardinality().numpy() == 2  # 3 frames, last batch kept
    batches = list(dataset)
    inputs, targets = batches[0]
    assert inputs["flow"].shape == (2, HEIGHT, WIDTH, 3) and inputs["flow"].dtype == tf.float32
    assert targets["depth"].shape == (2, HEIGHT, WIDTH, 1)
    assert targets["semantic"].dtype == tf.int32 and targets["semantic"].shape == (2, HEIGHT, WIDTH)
    assert targets["motion"].dtype == tf.int32
    stems = list_stems(root, "val")
    all_rgb = np.concatenate([b[0]["rgb"].numpy() for b in batches])
    for i, stem in enumerate(stems):  # not shuffled: in stem order
        arrays = written[("val", stem)]
        np.testing.assert_allclose(all_rgb[i], (arrays["rgb"] - 128.0) / 64.0, atol=1e-6)
    arrays = written[("val", stems[0])]
    np.testing.assert_allclose(inputs["flow"][0], (arrays["flow"] - 128.0) / 64.0, atol=1e-6)
    np.testing.assert_allclose(
        targets["depth"][0, ..., 0], expected_depth(arrays["disparity"]), rtol=1e-5
    )
    np.testing.assert_array_equal(targets["semantic"][0], arrays["semantic"])
    np.testing.assert_array_equal(targets["motion"][0], arrays["motion"] // 255)


def test_validation_resize_scales_flow_and_uses_nearest_targets(dataset_root) -> None:
    root, written = dataset_root
    dataset = make_dataset(
        root, "val", img_resize=(16, 64), batch_size=3, training=False, output_size=(4, 8)
    )
    inputs, targets = next(iter(dataset))
    assert inputs["rgb"].shape == (3, 16, 64, 3)
    assert targets["semantic"].shape == (3, 4, 8) and targets["depth"].shape == (3, 4, 8, 1)
    arrays = written[("val", list_stems(root, "val")[0])]
    # Nearest from 8x16 to 4x8 with half-pixel centres picks rows/cols 1, 3, 5, ...
    np.testing.assert_array_equal(targets["semantic"][0], arrays["semantic"][1::2, 1::2])
    # Flow u is scaled by 64 / 16 = 4 and v by 16 / 8 = 2 before normalisation.
    flow = arrays["flow"].astype(np.float32) - [128.0, 128.0, 0.0]
    u_mean = inputs["flow"][0, ..., 0].numpy().mean() * 64.0
    v_mean = inputs["flow"][0, ..., 1].numpy().mean() * 64.0
    np.testing.assert_allclose(u_mean, 4.0 * flow[..., 0].mean(), rtol=0.05, atol=0.5)
    np.testing.assert_allclose(v_mean, 2.0 * flow[..., 1].mean(), rtol=0.05, atol=0.5)


def test_training_pipeline_shapes_and_values(dataset_root) -> None:
    root, _ = dataset_root
    dataset = make_dataset(root, "train", img_resize=(8, 16), batch_size=2, training=True)
    assert dataset.cardinality().numpy() == 2  # 5 frames, remainder dropped
    inputs, targets = next(iter(dataset))
    assert inputs["flow"].shape == (2, 8, 16, 3) and inputs["rgb"].shape == (2, 8, 16, 3)
    assert targets["depth"].shape == (2, 8, 16, 1)
    assert targets["semantic"].shape == (2, 8, 16) and targets["motion"].shape == (2, 8, 16)
    assert set(np.unique(targets["semantic"])) <= {0, 1, 2, 3, 4, 255}
    assert set(np.unique(targets["motion"])) <= {0, 1, 255}
    rgb = inputs["rgb"].numpy() * 64.0 + 128.0
    assert rgb.min() >= -1e-3 and rgb.max() <= 255.0 + 1e-3


def _as_arrays(dataset) -> list[np.ndarray]:
    return [
        np.concatenate([x["rgb"].numpy().ravel(), y["depth"].numpy().ravel()]) for x, y in dataset
    ]


def test_training_stream_is_a_function_of_seed_and_sample_index(dataset_root) -> None:
    root, _ = dataset_root
    kwargs = dict(img_resize=(8, 16), batch_size=2, training=True, repeat=True)
    stream = _as_arrays(make_dataset(root, "train", seed=3, **kwargs).take(6))
    again = _as_arrays(make_dataset(root, "train", seed=3, **kwargs).take(6))
    other = _as_arrays(make_dataset(root, "train", seed=4, **kwargs).take(6))
    np.testing.assert_array_equal(np.stack(stream), np.stack(again))
    assert not np.array_equal(np.stack(stream), np.stack(other))
    # 5 frames: batch 3 holds samples 6 and 7, pass 1 from position 1 on (a resumed run).
    resumed = _as_arrays(make_dataset(root, "train", seed=3, first_batch=3, **kwargs).take(3))
    np.testing.assert_array_equal(np.stack(resumed), np.stack(stream[3:]))
    # Pass 2 (samples 10 to 13) is drawn anew: not the order and draws of pass 0.
    pass_one = _as_arrays(make_dataset(root, "train", seed=3, first_batch=5, **kwargs).take(2))
    assert not np.array_equal(np.stack(stream[:2]), np.stack(pass_one))
    # The finite dataset is pass 0, the same every time it is iterated.
    single = make_dataset(root, "train", seed=3, img_resize=(8, 16), batch_size=2, training=True)
    np.testing.assert_array_equal(np.stack(_as_arrays(single)), np.stack(stream[:2]))
    np.testing.assert_array_equal(np.stack(_as_arrays(single)), np.stack(stream[:2]))


def test_repeat_and_no_augmentation(dataset_root) -> None:
    root, _ = dataset_root
    dataset = make_dataset(
        root,
        "train",
        img_resize=(8, 16),
        batch_size=2,
        training=True,
        repeat=True,
        augment_data=False,
        shuffle=False,
    )
    assert dataset.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    batches = list(dataset.take(4))
    # Unshuffled and unaugmented: the 3rd batch restarts the 5-frame split at frame 4, 0.
    np.testing.assert_array_equal(batches[0][0]["rgb"][0], batches[2][0]["rgb"][1])


def test_normalize_inputs_numpy_and_tensor() -> None:
    flow, rgb = normalize_inputs(np.array([0.0, 128.0, 256.0]), tf.constant([64.0, 192.0]))
    np.testing.assert_allclose(flow, [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(rgb.numpy(), [-1.0, 1.0])
    stored_flow, stored_rgb = denormalize_inputs(flow, rgb)
    np.testing.assert_allclose(stored_flow, [0.0, 128.0, 256.0])
    np.testing.assert_allclose(stored_rgb.numpy(), [64.0, 192.0])


# ----------------------------------------------------------------------------- bad input


@pytest.fixture()
def good_copy(dataset_root, tmp_path) -> Path:
    root, _ = dataset_root
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy


def _path_of(root: Path, folder: str, stem: str, suffix: str, split: str = "train") -> Path:
    return root / folder / split / stem.split("_")[0] / (stem + suffix)


def test_missing_root_suggests_close_name(good_copy) -> None:
    with pytest.raises(UserError, match="--data_path .*did you mean .*data"):
        list_stems(good_copy.parent / "dta", "train")


def test_missing_folder_suggests_close_name(good_copy) -> None:
    (good_copy / layout.DISPARITY_DIR).rename(good_copy / "disparty")
    with pytest.raises(UserError, match="no folder 'disparity'.*did you mean 'disparty'"):
        list_stems(good_copy, "train")


def test_missing_split_is_named(good_copy) -> None:
    with pytest.raises(UserError, match="split 'vla': no folder 'vla' in .*did you mean 'val'"):
        list_stems(good_copy, "vla")


def test_missing_modality_names_the_stems(good_copy) -> None:
    _path_of(good_copy, layout.GT_DIR, "bonn_000002_000019", layout.MOTION_SUFFIX).unlink()
    _path_of(good_copy, layout.CAMERA_DIR, "aachen_000003_000019", layout.CAMERA_SUFFIX).unlink()
    with pytest.raises(UserError) as info:
        make_dataset(good_copy, "train", img_resize=(8, 16), batch_size=1, training=True)
    message = str(info.value)
    assert "no motion" in message and "bonn_000002_000019" in message
    assert "no camera" in message and "aachen_000003_000019" in message


def test_empty_split(good_copy) -> None:
    for folder in (
        layout.RGB_DIR,
        layout.GT_DIR,
        layout.FLOW_DIR,
        layout.DISPARITY_DIR,
        layout.CAMERA_DIR,
    ):
        (good_copy / folder / "test").mkdir()
    with pytest.raises(UserError, match="split 'test': no frames"):
        make_dataset(good_copy, "test", img_resize=(8, 16), batch_size=1, training=False)


def test_corrupt_png_is_named(good_copy) -> None:
    path = _path_of(good_copy, layout.RGB_DIR, "bonn_000000_000019", layout.RGB_SUFFIX)
    path.write_bytes(b"not a png at all" * 4)
    with pytest.raises(UserError, match=f"{path.name}: not a PNG"):
        make_dataset(good_copy, "train", img_resize=(8, 16), batch_size=1, training=True)


def test_truncated_png_is_named(good_copy) -> None:
    path = _path_of(good_copy, layout.FLOW_DIR, "aachen_000001_000019", layout.RGB_SUFFIX)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(UserError, match=f"{path.name}: truncated PNG"):
        load_frame(good_copy, "train", "aachen_000001_000019")


def test_corrupt_png_data_inside_is_named(good_copy) -> None:
    # Valid header and IEND, garbage compressed data: only decoding can find it.
    path = _path_of(good_copy, layout.GT_DIR, "bonn_000000_000019", layout.FIVE_CLASS_SUFFIX)
    data = bytearray(path.read_bytes())
    data[41:-12] = bytes(len(data) - 53)
    path.write_bytes(bytes(data))
    relative = path.relative_to(good_copy).as_posix()
    with pytest.raises(UserError) as info:
        load_frame(good_copy, "train", "bonn_000000_000019")
    assert str(info.value).startswith(f"--data_path {good_copy}: {relative}: corrupt PNG data (")


def test_eight_bit_disparity_is_rejected(good_copy) -> None:
    path = _path_of(good_copy, layout.DISPARITY_DIR, "bonn_000002_000019", layout.DISPARITY_SUFFIX)
    _write_png(path, np.full((HEIGHT, WIDTH), 7, np.uint8))
    with pytest.raises(UserError, match=f"{path.name}: disparity must be a 16-bit.*found a 8-bit"):
        make_dataset(good_copy, "train", img_resize=(8, 16), batch_size=1, training=True)


def test_label_size_mismatch_is_named(good_copy) -> None:
    path = _path_of(good_copy, layout.GT_DIR, "aachen_000001_000019", layout.MOTION_SUFFIX)
    _write_png(path, np.zeros((HEIGHT, WIDTH + 2), np.uint8))
    with pytest.raises(UserError, match=f"{path.name}: size 8x18 differs from the RGB"):
        make_dataset(good_copy, "train", img_resize=(8, 16), batch_size=1, training=False)


def test_bad_camera_json_is_named(good_copy) -> None:
    path = _path_of(good_copy, layout.CAMERA_DIR, "aachen_000001_000019", layout.CAMERA_SUFFIX)
    path.write_text(json.dumps({"intrinsic": {"fx": 100.0}}))
    with pytest.raises(UserError, match=f"{path.name}: camera JSON needs"):
        load_frame(good_copy, "train", "aachen_000001_000019")


def test_bad_arguments(dataset_root) -> None:
    root, _ = dataset_root
    with pytest.raises(UserError, match="--img_resize"):
        make_dataset(root, "train", img_resize=(8,), batch_size=1, training=True)
    with pytest.raises(UserError, match="--batch_size"):
        make_dataset(root, "train", img_resize=(8, 16), batch_size=0, training=True)
    with pytest.raises(UserError, match="--semantic_classes"):
        list_stems(root, "train", semantic_classes=7)
    with pytest.raises(UserError, match="no full batch"):
        make_dataset(root, "val", img_resize=(8, 16), batch_size=8, training=True)
    with pytest.raises(UserError, match="no frame 'bonn_000000_00001'.*did you mean"):
        load_frame(root, "train", "bonn_000000_00001")


# ----------------------------------------------------------------------------- synthetic data


def test_synthetic_dataset_reads_consistently(tiny_dataset) -> None:
    stems = list_stems(tiny_dataset, "train")
    assert len(stems) == 4 and len(list_stems(tiny_dataset, "val")) == 2
    stem = stems[0]
    frame = load_frame(tiny_dataset, "train", stem, semantic_classes=19)
    # Independent reference: OpenCV's decoder and the camera JSON read here.
    city = stem.split("_")[0]
    disparity = cv2.imread(
        str(_path_of(tiny_dataset, layout.DISPARITY_DIR, stem, layout.DISPARITY_SUFFIX)),
        cv2.IMREAD_UNCHANGED,
    )
    assert disparity.dtype == np.uint16
    camera = json.loads(
        (
            tiny_dataset / layout.CAMERA_DIR / "train" / city / (stem + layout.CAMERA_SUFFIX)
        ).read_text()
    )
    fx_baseline = camera["intrinsic"]["fx"] * camera["extrinsic"]["baseline"]
    p = disparity.astype(np.float64)
    with np.errstate(divide="ignore"):
        depth = np.clip(fx_baseline / ((p - 1) / 256), 1, 255)
    depth = np.where(p == 0, 0, np.where(p == 1, 255, depth))
    np.testing.assert_allclose(frame["depth"], depth, rtol=1e-5)
    label_ids = cv2.imread(
        str(_path_of(tiny_dataset, layout.GT_DIR, stem, layout.LABEL_IDS_SUFFIX)),
        cv2.IMREAD_UNCHANGED,
    )
    np.testing.assert_array_equal(frame["semantic"], LABEL_ID_TO_TRAIN_ID[label_ids])

    dataset = make_dataset(tiny_dataset, "train", img_resize=(32, 64), batch_size=2, training=True)
    seen_classes = set()
    for inputs, targets in dataset:
        assert inputs["flow"].shape == (2, 32, 64, 3) and targets["depth"].shape == (2, 32, 64, 1)
        depth_values = targets["depth"].numpy()
        assert ((depth_values == 0) | ((depth_values >= 1) & (depth_values <= 255))).all()
        seen_classes |= set(np.unique(targets["semantic"]).tolist())
    assert seen_classes <= {0, 1, 2, 3, 4, 255} and len(seen_classes - {255}) >= 3


def test_nineteen_class_train_ids_in_five_class_files_are_caught(good_copy) -> None:
    # Real Cityscapes' labelTrainIds hold 19 classes under the 5-class file name.
    path = _path_of(good_copy, layout.GT_DIR, "aachen_000001_000019", layout.FIVE_CLASS_SUFFIX)
    _write_png(path, np.full((HEIGHT, WIDTH), 13, np.uint8))
    with pytest.raises(UserError, match=f"{path.name}: 5-class labels must be 0..4 or 255"):
        load_frame(good_copy, "train", "aachen_000001_000019")
    dataset = make_dataset(good_copy, "train", img_resize=(8, 16), batch_size=5, training=False)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"{path.name}: 5-class labels"
    ) as info:
        list(dataset)
    # The line the tools print: the file relative to the data root, and what to do.
    relative = path.relative_to(good_copy).as_posix()
    report = bad_input_report(info.value)
    assert report.startswith(f"--data_path {good_copy}: {relative}: 5-class labels must be")
    assert report.endswith("write 5-class files with `python -m data_tools.labels`")
