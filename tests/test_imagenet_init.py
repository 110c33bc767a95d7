"""`--pretrained imagenet` / a `keras.applications.MobileNetV2` weights file: the mapping into
both stems and the encoder, the conversions, the report, the offline errors (no internet here:
Keras' download is simulated), and a training run through train.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_mtl import checkpoints
from keras_mtl.data.pipeline import normalize_inputs
from keras_mtl.errors import UserError
from keras_mtl.models import build_multitask_model, build_single_task_model
from keras_mtl.models.imagenet import IMAGENET_BASE_URL, imagenet_file_name

# Keras converts variables with np.array(copy=False) internally; numpy 2 warns, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
IMG_SIZE = (64, 128)
WIDTHS = (0.35, 0.5)
KERAS_EPSILON, OUR_EPSILON = 1e-3, 1e-5
INPUT_SCALE = np.float32(64 / 127.5)  # (x - 128) / 64 here, x / 127.5 - 1 in Keras


def _randomised_mobilenetv2(width: float, seed: int) -> keras.Model:
    """Keras' MobileNetV2 without top, every weight random (BatchNorm statistics included, so
    that a copy is told apart from a fresh layer), activations kept below ReLU6's clip."""
    rng = np.random.default_rng(seed)
    model = keras.applications.MobileNetV2(
        weights=None, alpha=width, include_top=False, input_shape=(*IMG_SIZE, 3)
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, size),
                    rng.normal(0.0, 0.1, size),
                    rng.normal(0.0, 0.1, size),
                    rng.uniform(0.5, 1.5, size),
                ]
            )
        elif layer.weights:
            layer.set_weights([w * rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    return model


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple[keras.Model, Path]]:
    """Per width: a random Keras MobileNetV2 and its `save_weights` file."""
    folder = tmp_path_factory.mktemp("mobilenetv2")
    result = {}
    for index, width in enumerate(WIDTHS):
        model = _randomised_mobilenetv2(width, seed=index)
        path = folder / f"mobilenet_v2_{width}.weights.h5"
        model.save_weights(path)
        result[width] = (model, path)
    return result


def _keras_layers(source: keras.Model) -> list[keras.layers.Layer]:
    """Keras' weighted layers in network order, without the 1280-channel head we do not have."""
    return [
        layer for layer in source.layers if layer.weights and not layer.name.startswith("Conv_1")
    ]


def _our_layers(model: keras.Model, stem: str) -> list[keras.layers.Layer]:
    """One stem then the encoder, in network order, without the ericsun-only expansion."""
    return [
        layer
        for layer in model.layers
        if layer.weights
        and layer.name.split(".")[0] in (stem, "encoder")
        and not layer.name.startswith(f"{stem}.block1.expand")
    ]


# Both widths and both backbones, in two builds instead of four (the suite's time budget).
@pytest.mark.parametrize(
    ("width", "backbone"), [(0.35, "mobilenetv2_ericsun"), (0.5, "mobilenetv2")]
)
def test_weights_file_goes_into_both_streams_and_the_encoder(sources, width, backbone):
    source, path = sources[width]
    model = build_multitask_model(IMG_SIZE, backbone=backbone, width_mult=width)
    inputs = {
        name: np.random.default_rng(3).normal(size=(1, *IMG_SIZE, 3)).astype("float32")
        for name in ("flow", "rgb")
    }
    before = model(inputs, training=False)["semantic"].numpy()
    report = checkpoints.initialise_from_checkpoint(model, path)

    # The pairing is derived here from the layer order of both networks, not from the mapping
    # table: a wrong table cannot agree with it.
    expected = _keras_layers(source)
    for stem in ("flow_stem", "rgb_stem"):
        ours = _our_layers(model, stem)
        assert len(ours) == len(expected) == 102  # 51 convolutions + 51 BatchNorms
        for target, origin in zip(ours, expected, strict=True):
            assert report["copied"][target.name] == origin.name
            got, want = target.get_weights(), origin.get_weights()
            if isinstance(origin, keras.layers.BatchNormalization):
                np.testing.assert_array_equal(got[0], want[0])  # gamma
                np.testing.assert_array_equal(got[1], want[1])  # beta
                if origin.name != "bn_Conv1":
                    np.testing.assert_array_equal(got[2], want[2])  # moving mean
                variance = want[3] + np.float32(KERAS_EPSILON - OUR_EPSILON)
                np.testing.assert_array_equal(got[3], variance)
            elif origin.name == "Conv1":
                np.testing.assert_array_equal(got[0], want[0] * INPUT_SCALE)
            else:
                np.testing.assert_array_equal(got[0], want[0])
    # bn_Conv1's moving mean takes the 128 vs 127.5 input offset.
    offset = np.float32(0.5 / 127.5) * source.get_layer("Conv1").kernel.numpy().sum((0, 1, 2))
    np.testing.assert_allclose(
        model.get_layer("rgb_stem.block0_bn").moving_mean.numpy(),
        source.get_layer("bn_Conv1").moving_mean.numpy() - offset,
        rtol=1e-6,
    )
    # Both streams hold the same tensors.
    flow_stem = [layer for layer in model.layers if layer.name.startswith("flow_stem.")]
    for flow_layer in flow_stem:
        rgb_layer = model.get_layer(flow_layer.name.replace("flow_stem.", "rgb_stem.", 1))
        for a, b in zip(flow_layer.get_weights(), rgb_layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert sum(bool(layer.weights) for layer in flow_stem) >= 18

    # The report: every layer of the network is accounted for once, with a reason if skipped.
    accounted = [*report["copied"], *report["initialised"], *report["skipped"]]
    assert sorted(accounted) == sorted(layer.name for layer in model.layers if layer.weights)
    assert "no counterpart" in report["skipped"]["fuse.project"]
    assert "no counterpart" in report["skipped"]["semantic_decoder.classifier"]
    assert set(report["unused"]) == {"Conv_1", "Conv_1_bn"}
    assert report["source"] == str(path) and report["file"] == str(path)
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    ericsun = {
        f"{s}.block1.{p}" for s in ("flow_stem", "rgb_stem") for p in ("expand", "expand_bn")
    }
    assert set(report["initialised"]) == (ericsun if backbone == "mobilenetv2_ericsun" else set())

    after = model(inputs, training=False)["semantic"].numpy()
    assert np.all(np.isfinite(after)) and not np.allclose(after, before)


def test_the_network_computes_what_keras_computes(sources):
    """Same pixels, inference: the torchvision encoder equals Keras' network up to stride 16
    (where this network stops striding), and the ericsun stem (identity expansion) equals the
    torchvision stem."""
    source, path = sources[0.35]
    pixels = np.random.default_rng(5).uniform(0, 255, (1, *IMG_SIZE, 3)).astype("float32")
    flow, rgb = normalize_inputs(pixels, pixels)
    keras_features = keras.Model(source.input, source.get_layer("block_12_add").output)
    want = keras_features(pixels / 127.5 - 1.0, training=False).numpy()
    assert np.abs(want).max() > 0.1  # a real signal, not clipped away

    single = build_single_task_model("semantic", IMG_SIZE, width_mult=0.35)
    checkpoints.initialise_from_checkpoint(single, path)
    ours = keras.Model(single.input, single.get_layer("encoder.block13.add").output)
    np.testing.assert_allclose(ours({"rgb": rgb}, training=False).numpy(), want, atol=1e-4)

    stems = {}
    for backbone in ("mobilenetv2", "mobilenetv2_ericsun"):
        model = build_multitask_model(IMG_SIZE, backbone=backbone, width_mult=0.35)
        checkpoints.initialise_from_checkpoint(model, path)
        outputs = [model.get_layer(f"{s}.block3.add").output for s in ("flow_stem", "rgb_stem")]
        stems[backbone] = keras.Model(model.input, outputs)(
            {"flow": flow, "rgb": rgb}, training=False
        )
    for a, b in zip(stems["mobilenetv2"], stems["mobilenetv2_ericsun"], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_imagenet_downloads_through_keras_and_explains_a_failed_download(
    sources, tmp_path, monkeypatch
):
    model = build_single_task_model("depth", IMG_SIZE, width_mult=0.35)
    name = imagenet_file_name(0.35)
    assert name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    keras_home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))

    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(UserError) as error:
        checkpoints.initialise_from_checkpoint(model, "imagenet")
    text = str(error.value)
    assert text.startswith(f"--pretrained imagenet: could not download {name}")
    assert IMAGENET_BASE_URL + name in text and "URL fetch failure" in text
    assert str(keras_home / "models") in text and "~/.keras/models/" in text
    assert "\n" not in text

    # With the file in Keras' cache the same flag works: get_file returns it.
    calls = []

    def cached(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs))
        return str(sources[0.35][1])

    monkeypatch.setattr(keras.utils, "get_file", cached)
    report = checkpoints.initialise_from_checkpoint(model, "imagenet")
    assert calls == [(name, IMAGENET_BASE_URL + name, {"cache_subdir": "models"})]
    assert report["source"] == "imagenet" and report["file"] == str(sources[0.35][1])
    assert report["copied"]["encoder.block17.project"] == "block_16_project"


def test_bad_widths_and_files_are_user_errors(sources, tmp_path):
    import h5py

    narrow = build_single_task_model("depth", IMG_SIZE, width_mult=0.25)
    with pytest.raises(UserError, match=r"no ImageNet .* --width_mult 0.25; use one of 0.35, 0.5"):
        checkpoints.initialise_from_checkpoint(narrow, "imagenet")
    model = build_single_task_model("depth", IMG_SIZE, width_mult=0.35)
    wider = sources[0.5][1]
    with pytest.raises(
        UserError,
        match=r"--pretrained .*0.5.weights.h5: not the weights of .*"
        r"MobileNetV2\(alpha=0.35, include_top=False\).*--width_mult 0.35",
    ):
        checkpoints.initialise_from_checkpoint(model, wider)
    other = tmp_path / "other.weights.h5"
    with h5py.File(other, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(UserError, match=r"other.weights.h5: not the weights of"):
        checkpoints.initialise_from_checkpoint(model, other)
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(wider.read_bytes())
    with pytest.raises(UserError, match=r"weights.bin: an HDF5 weights file must be named"):
        checkpoints.initialise_from_checkpoint(model, renamed)
    with pytest.raises(UserError, match=r"--pretrained .*nothing.h5 does not exist: pass imagenet"):
        checkpoints.initialise_from_checkpoint(model, tmp_path / "nothing.h5")


def test_train_py_flag_initialises_the_run_model_and_writes_the_report(
    sources, tmp_path, monkeypatch
):
    """train.py's command line down to the run's model (`run.build_model`, what `run_training`
    builds): the report goes to the run folder beside config.yaml, which keeps the flag. (A
    whole `train.py --pretrained FILE` run on tiny data takes ~30 s here; it was run by hand.)"""
    sys.path.insert(0, str(ROOT))
    import train
    from keras_mtl.training import run

    path = sources[0.35][1]
    save_path = tmp_path / "run"
    save_path.mkdir()
    argv = ["--save_path", str(save_path), "--pretrained", str(path), "--width_mult", "0.35"]
    argv += ["--img_resize", "64", "128", "--backbone", "mobilenetv2", "--depth_init", "10"]
    config = train.config_from_args(argv)
    model = run.build_model(config)
    np.testing.assert_array_equal(
        model.get_layer("encoder.block9.depthwise").get_weights()[0],
        sources[0.35][0].get_layer("block_8_depthwise").get_weights()[0],
    )
    report = json.loads((save_path / run.PRETRAINED_REPORT_NAME).read_text())
    assert report["source"] == str(path)
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["copied"]["flow_stem.block0"] == report["copied"]["rgb_stem.block0"] == "Conv1"
    config.save(save_path / "config.yaml")  # as the run does every epoch
    assert f"pretrained: {path}" in (save_path / "config.yaml").read_text()
    # A resumed run takes every weight from its checkpoint: nothing is fetched or reported.
    (save_path / run.PRETRAINED_REPORT_NAME).unlink()
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("downloaded"))
    resumed = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, pretrained="imagenet"),
        train=dataclasses.replace(config.train, resume=True),
    )
    run.build_model(resumed)
    assert not (save_path / run.PRETRAINED_REPORT_NAME).exists()
