"""Model builders: inputs/outputs, fusion arithmetic, save/load, rebuild, pretrained loading."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.models import (
    DEPTH_SCALE,
    LAST_SHARED_LAYER,
    SHARED_FEATURES_LAYER,
    MultiTaskNet,
    build_multitask_model,
    build_single_task_model,
    load_pretrained,
    rebuild,
    shared_trunk_of,
)

# Keras converts variables with np.array(copy=False) internally; numpy 2 warns, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

IMG_SIZE = (64, 128)
WIDTH = 0.25


def _randomize_batch_norms(model: keras.Model, seed: int) -> None:
    """Non-trivial BN statistics, so that copied/saved/normalised values are really tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.2, shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.2, shape).astype("float32"))


def _inputs(seed: int = 0, size: tuple[int, int] = IMG_SIZE, batch: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0.0, 1.0, (batch, *size, 3)).astype("float32") for name in ("flow", "rgb")
    }


def _numpy_outputs(model: keras.Model, inputs: dict) -> dict[str, np.ndarray]:
    wanted = {name: inputs[name] for name in model.input}
    return {name: np.asarray(value) for name, value in model(wanted, training=False).items()}


@pytest.fixture(scope="module")
def multitask() -> MultiTaskNet:
    # Seeded: the initial weights must not depend on which tests ran before in this worker.
    keras.utils.set_random_seed(0)
    model = build_multitask_model(IMG_SIZE, semantic_classes=5, width_mult=WIDTH)
    _randomize_batch_norms(model, seed=1)
    return model


@pytest.fixture(scope="module")
def single_semantic() -> MultiTaskNet:
    keras.utils.set_random_seed(1)
    model = build_single_task_model("semantic", IMG_SIZE, semantic_classes=19, width_mult=WIDTH)
    _randomize_batch_norms(model, seed=2)
    return model


def test_multitask_inputs_outputs(multitask):
    assert sorted(multitask.input) == ["flow", "rgb"]
    for name in ("flow", "rgb"):
        assert tuple(multitask.input[name].shape) == (None, 64, 128, 3)
    expected = {"depth": 1, "semantic": 5, "motion": 2}
    assert sorted(multitask.output) == sorted(expected)
    outputs = _numpy_outputs(multitask, _inputs())
    for task, channels in expected.items():
        assert outputs[task].shape == (2, 64, 128, channels)
        assert outputs[task].dtype == np.float32
        assert np.all(np.isfinite(outputs[task]))
    # The default (log) depth head outputs positive metres, whatever the weights.
    assert outputs["depth"].min() > 0


def test_shared_layer_handles(multitask):
    features = multitask.get_layer(SHARED_FEATURES_LAYER)
    assert tuple(features.output.shape) == (None, 4, 8, 80)  # stride 16, 320 * 0.25 channels
    kernel = multitask.get_layer(LAST_SHARED_LAYER).kernel
    assert tuple(kernel.shape) == (1, 1, 240, 80)
    # Every decoder consumes the shared features; nothing after them is shared.
    consumers = {node.operation.name for node in features._outbound_nodes}
    assert {name.split(".")[0] for name in consumers} == {
        "depth_decoder",
        "semantic_decoder",
        "motion_decoder",
    }


def test_shared_trunk_composes_the_network(multitask, single_semantic):
    trunk = shared_trunk_of(multitask)
    assert trunk.output_layers == ("fuse.project_bn", SHARED_FEATURES_LAYER)
    assert (trunk.shared_features_layer, trunk.last_shared_layer) == (
        SHARED_FEATURES_LAYER,
        LAST_SHARED_LAYER,
    )
    assert single_semantic.shared_trunk.output_layers == (
        "rgb_stem.block3.add",
        SHARED_FEATURES_LAYER,
    )
    trunk_model, heads_model = trunk.trunk_model(multitask), trunk.heads_model(multitask)
    # The trunk and the heads partition the network's weights.
    assert len(trunk_model.weights) + len(heads_model.weights) == len(multitask.weights)
    depth_head = trunk.heads_model(multitask, ["depth"])
    assert all(w.path.startswith(("depth_decoder", "depth/")) for w in depth_head.weights)
    inputs = {name: tf.constant(value) for name, value in _inputs(7, batch=1).items()}
    with tf.GradientTape(persistent=True) as tape:
        handoff = trunk_model(inputs, training=False)
        for tensor in handoff:
            tape.watch(tensor)
        outputs = heads_model(handoff, training=False)
        depth_loss = tf.reduce_mean(outputs["depth"] ** 2)
        motion_loss = tf.reduce_mean(outputs["motion"])
    assert [tuple(t.shape) for t in handoff] == [(1, 16, 32, 8), (1, 4, 8, 80)]
    plain = _numpy_outputs(multitask, inputs)
    for task, value in outputs.items():
        np.testing.assert_allclose(np.asarray(value), plain[task], rtol=1e-5, atol=1e-5)
    depth_grad = tape.gradient(depth_loss, handoff[1])
    motion_grad = tape.gradient(motion_loss, handoff[1])
    assert float(tf.norm(depth_grad)) > 0
    assert float(tf.norm(depth_grad - motion_grad)) > 0  # each task its own gradient


def test_width_one_channels():
    model = build_multitask_model((32, 32), semantic_classes=19, backbone="mobilenetv2")
    assert model.get_layer(SHARED_FEATURES_LAYER).output.shape[-1] == 320
    assert model.get_layer("fuse.project").kernel.shape == (1, 1, 48, 24)
    assert model.get_layer("semantic_decoder.classifier").kernel.shape == (1, 1, 304, 19)
    assert model.get_layer("depth_decoder.aspp_concat").output.shape[-1] == 1024
    # torchvision blocks: the t=1 block has no expansion; ericsun keeps it.
    names = {layer.name for layer in model.layers}
    assert "rgb_stem.block1.expand" not in names
    assert "rgb_stem.block1.depthwise" in names


def test_fusion_has_no_activation_and_matches_numpy(multitask):
    probe = keras.Model(
        multitask.input,
        [
            multitask.get_layer("flow_stem.block3.add").output,
            multitask.get_layer("rgb_stem.block3.add").output,
            multitask.get_layer("fuse.project_bn").output,
        ],
    )
    flow, rgb, fused = (np.asarray(t) for t in probe(_inputs(3), training=False))
    assert not any(
        layer.name.startswith("fuse.") and "relu" in layer.name for layer in multitask.layers
    )

    def bn(x, layer):
        mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
        return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta

    x = np.concatenate([flow, rgb], axis=-1)
    kernel = multitask.get_layer("fuse.depthwise").kernel.numpy()[..., 0]  # 3x3xC
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    depthwise = sum(
        padded[:, i : i + height, j : j + width, :] * kernel[i, j]
        for i in range(3)
        for j in range(3)
    )
    y = bn(depthwise, multitask.get_layer("fuse.depthwise_bn"))
    y = y @ multitask.get_layer("fuse.project").kernel.numpy()[0, 0]
    expected = bn(y, multitask.get_layer("fuse.project_bn"))
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4)
    assert expected.min() < 0  # a ReLU would have removed these


def test_mixed_precision_outputs_are_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_single_task_model("motion", (32, 32), width_mult=WIDTH)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("encoder.block4.expand").compute_dtype == "float16"
    inputs = _inputs(size=(32, 32), batch=1)
    assert _numpy_outputs(model, inputs)["motion"].dtype == np.float32


def test_single_task_inputs_and_outputs(single_semantic):
    depth = build_single_task_model("depth", IMG_SIZE, width_mult=WIDTH)
    motion = build_single_task_model("motion", IMG_SIZE, width_mult=WIDTH)
    assert list(depth.input) == ["rgb"] and list(depth.output) == ["depth"]
    assert list(single_semantic.input) == ["rgb"] and list(single_semantic.output) == ["semantic"]
    assert sorted(motion.input) == ["flow", "rgb"] and list(motion.output) == ["motion"]
    names = {layer.name for layer in depth.layers}
    assert not any(name.startswith(("flow_stem.", "fuse.")) for name in names)
    assert "fuse.project" in {layer.name for layer in motion.layers}
    outputs = _numpy_outputs(single_semantic, _inputs())
    assert outputs["semantic"].shape == (2, 64, 128, 19)
    assert _numpy_outputs(motion, _inputs())["motion"].shape == (2, 64, 128, 2)


def test_bad_sizes_and_names():
    with pytest.raises(ValueError, match="multiples of 16"):
        build_multitask_model((60, 128), width_mult=WIDTH)
    with pytest.raises(ValueError, match="backbone"):
        build_multitask_model(IMG_SIZE, backbone="resnet50", width_mult=WIDTH)
    with pytest.raises(ValueError, match="unknown task"):
        build_single_task_model("normals", IMG_SIZE)


def test_depth_scale_multiplies_only_the_linear_depth_head(multitask):
    assert multitask.get_config()["depth_scale"] == DEPTH_SCALE == 1.0
    linear_config = dict(multitask.get_config(), depth_head="linear")
    plain = MultiTaskNet.from_config(linear_config)
    scaled = MultiTaskNet.from_config(dict(linear_config, depth_scale=10.0))
    assert scaled.get_layer("depth_decoder.output_scale") is not None
    for layer in plain.layers:  # the same layers plus a weightless Rescaling
        scaled.get_layer(layer.name).set_weights(layer.get_weights())
    inputs = _inputs(6)
    scaled_out, plain_out = _numpy_outputs(scaled, inputs), _numpy_outputs(plain, inputs)
    np.testing.assert_allclose(scaled_out["depth"], 10.0 * plain_out["depth"], rtol=1e-4, atol=1e-4)
    # The linear head has no output activation: negative metres are possible.
    assert plain_out["depth"].min() < 0 < plain_out["depth"].max()
    for task in ("semantic", "motion"):
        np.testing.assert_array_equal(scaled_out[task], plain_out[task])
    with pytest.raises(ValueError, match="depth_scale"):
        build_multitask_model(IMG_SIZE, width_mult=WIDTH, depth_head="linear", depth_scale=0.0)
    with pytest.raises(ValueError, match="linear depth head only"):
        build_multitask_model(IMG_SIZE, width_mult=WIDTH, depth_scale=10.0)
    # A config saved before depth_scale / depth_head existed describes the original head.
    legacy = {
        k: v for k, v in scaled.get_config().items() if k not in ("depth_scale", "depth_head")
    }
    restored = MultiTaskNet.from_config(legacy)
    assert (restored.depth_scale, restored.depth_head) == (1.0, "linear")


def test_log_depth_head_is_positive_for_any_input():
    keras.utils.set_random_seed(3)
    model = build_single_task_model("depth", IMG_SIZE, width_mult=WIDTH, depth_init=12.0)
    _randomize_batch_norms(model, seed=4)
    rng = np.random.default_rng(5)
    for scale in (0.0, 1.0, 1e3, 1e6):
        rgb = (rng.normal(0.0, 1.0, (2, *IMG_SIZE, 3)) * scale).astype("float32")
        for training in (False, True):
            depth = np.asarray(model({"rgb": rgb}, training=training)["depth"])
            assert np.all(np.isfinite(depth)) and depth.min() > 0, (scale, training)
    # The exponent is clamped: no input reaches 0 or infinity, and the offset is log(init).
    layer = model.get_layer("depth")
    extreme = np.array([[[[-1e30]], [[0.0]], [[1e30]]]], "float32")
    values = np.asarray(layer(extreme))[0, :, 0, 0]
    np.testing.assert_allclose(values, [1e-3, 12.0, 1e4], rtol=1e-4)
    assert float(layer.log_depth_offset.numpy()) == pytest.approx(np.log(12.0))
    with pytest.raises(ValueError, match="depth_init"):
        build_multitask_model(IMG_SIZE, width_mult=WIDTH, depth_init=0.0)
    with pytest.raises(ValueError, match="depth_head"):
        build_multitask_model(IMG_SIZE, width_mult=WIDTH, depth_head="softplus")


def test_log_depth_head_starts_near_its_initial_depth():
    # In training mode (batch statistics) the first predictions sit at the initial depth, the
    # training split's median, within a small factor: no climb from ~0 m as the linear head had.
    keras.utils.set_random_seed(7)
    model = build_multitask_model(IMG_SIZE, width_mult=WIDTH, depth_init=18.0)
    depth = np.asarray(model(_inputs(8, batch=4), training=True)["depth"])
    ratio = depth / 18.0
    assert 0.8 < float(np.exp(np.mean(np.log(ratio)))) < 1.25
    assert np.percentile(ratio, 1) > 0.5 and np.percentile(ratio, 99) < 2.0


def test_old_checkpoint_without_depth_head_loads_linear(tmp_path):
    import json
    import zipfile

    keras.utils.set_random_seed(9)
    model = build_single_task_model("depth", IMG_SIZE, width_mult=WIDTH, depth_head="linear")
    path = tmp_path / "model.keras"
    model.save(path)
    # Rewrite the archive's config as a model saved before depth_head/depth_init existed.
    legacy_path = tmp_path / "legacy.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(legacy_path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for key in ("depth_head", "depth_init", "depth_scale"):
                    config["config"].pop(key, None)
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.saving.load_model(legacy_path, compile=False)
    assert loaded.depth_head == "linear"
    inputs = {"rgb": _inputs(10)["rgb"]}
    np.testing.assert_allclose(
        np.asarray(loaded(inputs)["depth"]), np.asarray(model(inputs)["depth"]), atol=1e-5
    )


def test_save_load_round_trip(multitask, tmp_path):
    path = tmp_path / "model.keras"
    multitask.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded, MultiTaskNet)
    assert loaded.get_config() == multitask.get_config()
    assert loaded.shared_trunk == multitask.shared_trunk
    inputs = _inputs(4)
    expected = _numpy_outputs(multitask, inputs)
    actual = _numpy_outputs(loaded, inputs)
    for task in expected:
        np.testing.assert_array_equal(actual[task], expected[task])


def test_rebuild_carries_weights(multitask):
    larger = rebuild(multitask, (96, 160))
    assert tuple(larger.input["rgb"].shape) == (None, 96, 160, 3)
    assert larger.output["semantic"].shape[1:] == (96, 160, 5)
    for a, b in zip(multitask.get_weights(), larger.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same network at the larger size: its outputs on a larger input differ from the
    # original's only through the input, so rebuilding back gives identical outputs.
    back = rebuild(larger, IMG_SIZE)
    inputs = _inputs(5)
    expected = _numpy_outputs(multitask, inputs)
    actual = _numpy_outputs(back, inputs)
    for task in expected:
        np.testing.assert_array_equal(actual[task], expected[task])
    assert _numpy_outputs(larger, _inputs(5, (96, 160), 1))["depth"].shape == (1, 96, 160, 1)
    with pytest.raises(ValueError, match="multiples of 16"):
        rebuild(multitask, (100, 160))


def test_load_pretrained_single_stream_into_both_streams(single_semantic, tmp_path):
    path = tmp_path / "semantic.keras"
    single_semantic.save(path)
    from keras_mtl.checkpoints import initialise_from_checkpoint

    target = build_multitask_model(IMG_SIZE, semantic_classes=5, width_mult=WIDTH)
    report = initialise_from_checkpoint(target, path)  # the file goes through the loader
    copied, skipped = report["copied"], report["skipped"]
    # Both streams get the single-stream (RGB) stem, every decoder gets the semantic decoder.
    assert copied["flow_stem.block0"] == "rgb_stem.block0"
    assert copied["rgb_stem.block0"] == "rgb_stem.block0"
    assert copied["depth_decoder.aspp_d4.depthwise"] == "semantic_decoder.aspp_d4.depthwise"
    assert copied["encoder.block17.project_bn"] == "encoder.block17.project_bn"
    for stream in ("flow_stem", "rgb_stem"):
        for name in ("block0", "block2.expand", "block3.project_bn"):
            source = single_semantic.get_layer(f"rgb_stem.{name}").get_weights()
            for a, b in zip(
                target.get_layer(f"{stream}.{name}").get_weights(), source, strict=True
            ):
                np.testing.assert_array_equal(a, b)
    motion_kernel = target.get_layer("motion_decoder.aspp_project").kernel.numpy()
    semantic_kernel = single_semantic.get_layer("semantic_decoder.aspp_project").kernel.numpy()
    np.testing.assert_array_equal(motion_kernel, semantic_kernel)
    # Not in a single-stream model: the fusion; 19 != 1/5/2 output channels: the classifiers;
    # the torchvision source has no t=1 expansion for the ericsun target.
    for name in ("fuse.project", "depth_decoder.classifier", "semantic_decoder.classifier"):
        assert name in skipped, name
    assert "shape mismatch" in skipped["semantic_decoder.classifier"]
    assert skipped["rgb_stem.block1.expand"] == "not in source"
    assert set(copied).isdisjoint(skipped)


def test_load_pretrained_from_trainer_like_object(multitask):
    class Holder(keras.Model):  # stands for the trainer: the network is its `.model`
        def __init__(self, model):
            super().__init__()
            self.model = model

    target = build_multitask_model(IMG_SIZE, semantic_classes=5, width_mult=WIDTH)
    report = load_pretrained(target, Holder(multitask))
    assert report["skipped"] == {}
    inputs = _inputs(6)
    expected = _numpy_outputs(multitask, inputs)
    actual = _numpy_outputs(target, inputs)
    for task in expected:
        np.testing.assert_array_equal(actual[task], expected[task])


# --------------------------------------------------------------------------- inference form


def _assert_same_outputs(expected: dict, actual: dict, rtol: float = 1e-5) -> None:
    """Equal to `rtol` of each output's largest value; depth as the log-depth the head computes
    (exp turns its rounding into relative errors)."""
    for task, value in expected.items():
        got = actual[task]
        if task == "depth" and np.all(value > 0):
            value, got = np.log(value), np.log(got)
        scale = np.abs(value).max()
        np.testing.assert_allclose(got, value, atol=rtol * scale, err_msg=task)


def test_folded_network_computes_the_same_outputs(multitask, single_semantic):
    from keras_mtl.models import fold_for_inference
    from keras_mtl.models.folding import linear_tails

    for model in (multitask, single_semantic):
        folded = fold_for_inference(model)
        norms = [x for x in folded.layers if isinstance(x, keras.layers.BatchNormalization)]
        assert not norms
        assert sorted(folded.output) == sorted(model.output)
        assert list(folded.input) == list(model.input)
        inputs = _inputs(7)
        _assert_same_outputs(_numpy_outputs(model, inputs), _numpy_outputs(folded, inputs))
    # Every decoder's tail folds (19 classes too), a convolution keeps its name with a bias,
    # and the result is a copy: changing the trained network leaves it alone.
    assert len(linear_tails(fold_for_inference(multitask))) == 0
    names = {layer.name for layer in folded.layers}
    assert {"semantic_decoder.classifier_taps0", "semantic_decoder.classifier_shift"} <= names
    assert "semantic_decoder.fuse_depthwise" not in names
    assert folded.get_layer("encoder.block17.project").use_bias
    before = _numpy_outputs(folded, _inputs(8))
    single_semantic.get_layer("rgb_stem.block0").kernel.assign(
        single_semantic.get_layer("rgb_stem.block0").kernel * 2.0
    )
    try:
        _assert_same_outputs(before, _numpy_outputs(folded, _inputs(8)), rtol=0.0)
    finally:
        single_semantic.get_layer("rgb_stem.block0").kernel.assign(
            single_semantic.get_layer("rgb_stem.block0").kernel / 2.0
        )


def test_rebuild_folded_at_another_size(multitask):
    folded = rebuild(multitask, (32, 48), folded=True)
    assert tuple(folded.input["rgb"].shape) == (None, 32, 48, 3)
    inputs = _inputs(9, (32, 48), 1)
    expected = _numpy_outputs(rebuild(multitask, (32, 48)), inputs)
    _assert_same_outputs(expected, _numpy_outputs(folded, inputs))


def test_folding_against_hand_built_graphs():
    from keras_mtl.models import fold_batch_norms, fold_linear_tails

    rng = np.random.default_rng(3)
    low = keras.Input((4, 6, 32), name="low")
    other = keras.Input((4, 6, 32), name="other")
    image = keras.Input((8, 12, 4), name="image")
    # A tail whose inputs are all upsampled (the head takes the depthwise bias and its own).
    up_low = keras.layers.UpSampling2D(2, interpolation="bilinear")(low)
    up_other = keras.layers.UpSampling2D(2)(other)
    x = keras.layers.Concatenate()([up_low, up_other])
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    tail = keras.layers.Conv2D(2, 1, name="head")(x)  # 9 * 2 tap channels < 64
    # A convolution read twice keeps its BatchNorm; a depthwise convolution folds its own.
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(image)
    kept = keras.layers.BatchNormalization(name="kept_bn")(conv)
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw2")(conv)
    folded_bn = keras.layers.BatchNormalization(name="dw2_bn")(depthwise)
    side = keras.layers.Add()([kept, folded_bn])
    model = keras.Model([low, other, image], {"tail": tail, "side": side})
    for layer in model.layers:
        weights = [rng.normal(0.0, 0.5, w.shape).astype("float32") for w in layer.weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[3] = rng.uniform(0.5, 2.0, weights[3].shape).astype("float32")
        layer.set_weights(weights)

    folded = fold_linear_tails(fold_batch_norms(model))
    names = {layer.name for layer in folded.layers}
    assert "kept_bn" in names and "dw2_bn" not in names and "dw" not in names
    assert "head_taps0" in names and "head_taps1" in names and "head_kept_depthwise" not in names
    inputs = [rng.normal(size=tuple(t.shape[1:])).astype("float32")[None] for t in model.inputs]
    expected = {k: np.asarray(v) for k, v in model(inputs, training=False).items()}
    actual = {k: np.asarray(v) for k, v in folded(inputs).items()}
    _assert_same_outputs(expected, actual)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_network_and_its_folded_form(policy):
    from keras_mtl.models import fold_for_inference

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_multitask_model((32, 32), width_mult=WIDTH)
        folded = fold_for_inference(model)
    finally:
        keras.config.set_dtype_policy(previous)
    compute = policy.removeprefix("mixed_")
    assert model.get_layer("encoder.block4.expand_bn").compute_dtype == compute
    assert folded.get_layer("encoder.block4.expand").compute_dtype == compute
    # The decoder tails compute in float32, as the classifier they replace.
    assert folded.get_layer("semantic_decoder.classifier_taps0").compute_dtype == "float32"
    inputs = _inputs(size=(32, 32), batch=1)
    expected, actual = _numpy_outputs(model, inputs), _numpy_outputs(folded, inputs)
    for task in expected:
        assert expected[task].dtype == actual[task].dtype == np.float32
    # 16-bit rounding (8 bits of mantissa for bfloat16) in both, in different places.
    tolerance = 0.05 if compute == "bfloat16" else 0.01
    _assert_same_outputs(expected, actual, rtol=tolerance)
