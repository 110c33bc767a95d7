"""keras_mtl.checkpoints: the one loader (trainer or network .keras, contract, one-line errors)
and initialising a network from a file (`--pretrained`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_mtl import checkpoints
from keras_mtl.errors import UserError
from keras_mtl.models import build_multitask_model, build_single_task_model, load_pretrained

# Keras converts variables with np.array(copy=False) internally; numpy 2 warns, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
IMG_SIZE = (32, 64)
WIDTH = 0.25


def _inputs(size=IMG_SIZE, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=(1, *size, 3)).astype("float32") for name in ("flow", "rgb")}


def _outputs(model: keras.Model, inputs) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in model(inputs, training=False).items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A network saved alone (model_best.keras) and inside a trainer (checkpoint.keras)."""
    from keras_mtl.training import MultiTaskTrainer

    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("checkpoints")
    network = build_multitask_model(IMG_SIZE, width_mult=WIDTH)
    network.save(folder / "model_best.keras")
    # Uncertainty weighting holds variables: its class must be registered to load the file.
    MultiTaskTrainer(network, "uncertainty").save(folder / "checkpoint.keras")
    semantic = build_single_task_model("semantic", IMG_SIZE, width_mult=WIDTH)
    semantic.save(folder / "semantic.keras")
    return {"folder": folder, "network": network, "semantic": semantic}


def test_model_best_and_trainer_checkpoint_give_the_same_network(saved):
    inputs = _inputs()
    expected = _outputs(saved["network"], inputs)
    for name in ("model_best.keras", "checkpoint.keras"):
        network = checkpoints.load_model(saved["folder"] / name, multitask=True)
        assert isinstance(network, keras.Model) and not hasattr(network, "weighting")
        for task, value in _outputs(network, inputs).items():
            np.testing.assert_allclose(value, expected[task], rtol=1e-5, atol=1e-5)
    contract = checkpoints.model_contract(network)
    assert contract.inputs == ("flow", "rgb") and contract.multitask
    assert contract.img_size == IMG_SIZE and contract.semantic_classes == 5


def test_a_fresh_process_loads_a_trainer_checkpoint_with_this_module_alone(saved):
    # The classes are registered by keras_mtl.checkpoints itself, not by what callers import.
    script = textwrap.dedent(
        f"""
        from keras_mtl.checkpoints import load_model
        network = load_model({str(saved["folder"] / "checkpoint.keras")!r})
        print(sorted(network.output))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['depth', 'motion', 'semantic']"


def test_bad_files_are_one_user_error_naming_flag_and_file(saved, tmp_path: Path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip archive")
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"x")
    dense = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(dense)
    inputs = keras.Input((8, 8, 3), name="rgb")
    seven = tmp_path / "seven_classes.keras"
    keras.Model({"rgb": inputs}, {"semantic": keras.layers.Conv2D(7, 1)(inputs)}).save(seven)
    cases = [
        (tmp_path / "missing.keras", {}, "--checkpoint {} does not exist"),
        (junk, {}, "--checkpoint {} is not a Keras .keras archive"),
        (weights, {}, "--checkpoint {} is not a Keras .keras archive"),
        (tmp_path, {}, "--checkpoint {} is not a Keras .keras archive"),
        (dense, {}, "--checkpoint {}: not a keras-mtl model (a Sequential with named inputs []"),
        (seven, {}, "--checkpoint {}: not a keras-mtl model (a Functional with output semantic "),
        (saved["folder"] / "semantic.keras", {"multitask": True}, "not a keras-mtl multi-task"),
        (saved["folder"] / "model_best.keras", {"flag": "--pretrained"}, None),
    ]
    for path, options, message in cases:
        if message is None:
            checkpoints.load_model(path, **options)
            continue
        with pytest.raises(UserError) as error:
            checkpoints.load_model(path, **options)
        text = str(error.value)
        assert message.format(path) in text, text
        assert "\n" not in text


def test_a_network_is_rebuilt_at_another_input_size(saved):
    network = checkpoints.load_model(saved["folder"] / "model_best.keras", img_size=(64, 96))
    assert checkpoints.model_contract(network).img_size == (64, 96)
    same = checkpoints.load_model(saved["folder"] / "model_best.keras")
    assert checkpoints.at_input_size(same, IMG_SIZE) is same
    with pytest.raises(UserError, match=r"--img_resize 40 64: model takes 32x64 inputs"):
        checkpoints.at_input_size(same, (40, 64), source="model")


def test_initialise_from_a_single_stream_file_into_both_streams(saved):
    path = saved["folder"] / "semantic.keras"
    target = build_multitask_model(IMG_SIZE, semantic_classes=19, width_mult=WIDTH)
    report = checkpoints.initialise_from_checkpoint(target, path)
    assert report["source"] == str(path)
    copied, skipped = report["copied"], report["skipped"]
    # Both streams get the single-stream (RGB) stem, every decoder gets the semantic decoder.
    assert copied["flow_stem.block0"] == "rgb_stem.block0"
    assert copied["rgb_stem.block0"] == "rgb_stem.block0"
    assert copied["depth_decoder.aspp_d4.depthwise"] == "semantic_decoder.aspp_d4.depthwise"
    source = saved["semantic"].get_layer("rgb_stem.block2.expand").get_weights()
    for stream in ("flow_stem", "rgb_stem"):
        for a, b in zip(
            target.get_layer(f"{stream}.block2.expand").get_weights(), source, strict=True
        ):
            np.testing.assert_array_equal(a, b)
    assert "shape mismatch" in skipped["semantic_decoder.classifier"]  # 19 vs 5 classes
    assert "fuse.project" in skipped and set(copied).isdisjoint(skipped)


def test_pretrained_paths_go_through_the_checkpoint_module(tmp_path: Path):
    target = build_multitask_model(IMG_SIZE, width_mult=WIDTH)
    with pytest.raises(UserError, match=r"--pretrained .*missing.keras does not exist"):
        checkpoints.initialise_from_checkpoint(target, tmp_path / "missing.keras")
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match=r"--pretrained .*weights.h5 is not a Keras .keras"):
        checkpoints.initialise_from_checkpoint(target, weights)
    with pytest.raises(TypeError, match="keras_mtl.checkpoints.initialise_from_checkpoint"):
        load_pretrained(target, str(weights))


def test_a_folder_without_a_saved_model_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match=r"--checkpoint .* is a folder without saved_model.pb"):
        checkpoints.load_saved_model(tmp_path)
