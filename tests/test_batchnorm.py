"""keras_mtl.models.BatchNormalization: Keras' BatchNorm on TensorFlow's fused kernel.

Outputs, gradients and moving statistics against `keras.layers.BatchNormalization` in training
and inference mode, under mixed precision, per replica under MirroredStrategy (run as a script,
`python tests/test_batchnorm.py mirrored-check`, in a process whose CPU is split into 2 logical
devices), and checkpoints saved with Keras' layer loading and training identically.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import run_module_check

from keras_mtl.models.blocks import BN_EPSILON, BN_MOMENTUM, batch_norm_class  # noqa: E402
from keras_mtl.models.blocks import BatchNormalization as FusedBatchNorm  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CHANNELS = 16
SHAPE = (2, 8, 8, CHANNELS)


def _pair(
    policy: str | None = None, shape: tuple[int, ...] = SHAPE
) -> dict[str, keras.layers.BatchNormalization]:
    """Keras' layer and the fused one with the same, non-trivial weights."""
    rng = np.random.default_rng(1)
    weights = [
        rng.uniform(0.5, 1.5, CHANNELS),  # gamma
        rng.normal(0.0, 0.2, CHANNELS),  # beta
        rng.normal(0.0, 0.2, CHANNELS),  # moving mean
        rng.uniform(0.5, 2.0, CHANNELS),  # moving variance
    ]
    layers = {}
    for name, cls in (
        ("keras", keras.layers.BatchNormalization),
        ("fused", FusedBatchNorm),
    ):
        layer = cls(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=policy)
        layer.build(shape)
        layer.set_weights([w.astype("float32") for w in weights])
        layers[name] = layer
    return layers


def _run(layer: keras.layers.BatchNormalization, inputs: np.ndarray, training: bool) -> dict:
    """Output, gradients of a weighted sum (inputs, gamma, beta) and moving statistics after
    one call, all in one tf.function (the graph path training takes)."""
    weights = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
        return y, tape.gradient(loss, [x, layer.gamma, layer.beta])

    y, (dx, dgamma, dbeta) = step(tf.constant(inputs))
    return {
        "output": y,
        "d_inputs": dx,
        "d_gamma": dgamma,
        "d_beta": dbeta,
        "moving_mean": layer.moving_mean,
        "moving_variance": layer.moving_variance,
    }


def _assert_close(expected: dict, actual: dict, rtol: float, atol: float) -> None:
    for name, value in expected.items():
        want = np.asarray(tf.cast(value, "float32"))
        got = np.asarray(tf.cast(actual[name], "float32"))
        np.testing.assert_allclose(
            got, want, rtol=rtol, atol=atol * np.abs(want).max(), err_msg=name
        )


@pytest.mark.parametrize("training", [True, False])
def test_fused_equals_keras_batch_norm(training: bool):
    inputs = np.random.default_rng(0).normal(0.5, 2.0, SHAPE).astype("float32")
    layers = _pair()
    expected, actual = (_run(layers[name], inputs, training) for name in ("keras", "fused"))
    _assert_close(expected, actual, rtol=1e-5, atol=1e-5)
    moved = not np.allclose(
        layers["fused"].moving_mean.numpy(), _pair()["fused"].moving_mean.numpy()
    )
    assert moved == training  # statistics move in training only, as Keras'


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fused_equals_keras_batch_norm_under_mixed_precision(policy: str):
    inputs = np.random.default_rng(3).normal(0.5, 2.0, SHAPE).astype("float32")
    layers = _pair(policy)
    for training in (True, False):
        expected, actual = (_run(layers[name], inputs, training) for name in ("keras", "fused"))
        assert actual["output"].dtype == layers["fused"].compute_dtype == policy[6:]
        # Both normalise in float32 and round the output to 16 bits; the gradients flow back
        # through those 16-bit outputs.
        _assert_close(expected, actual, rtol=1e-5, atol=1e-5)
        assert layers["fused"].moving_variance.dtype == "float32"


def test_batch_size_unknown_until_run_time():
    layers = _pair()
    inputs = np.random.default_rng(8).normal(0.5, 2.0, SHAPE).astype("float32")
    signature = [tf.TensorSpec((None, *SHAPE[1:]), tf.float32)]
    results = {}
    for name, layer in layers.items():
        step = tf.function(
            lambda x, layer=layer: layer(x, training=True), input_signature=signature
        )
        results[name] = (np.asarray(step(inputs)), layer.moving_variance.numpy())
    for expected, actual in zip(results["keras"], results["fused"], strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_cases_the_kernel_does_not_take_run_keras_arithmetic():
    inputs = np.random.default_rng(4).normal(size=(2, 5, CHANNELS)).astype("float32")  # rank 3
    layers = _pair(shape=inputs.shape)
    mask = np.random.default_rng(5).uniform(size=(2, 5)) > 0.3
    for kwargs in ({}, {"mask": mask}):
        expected = layers["keras"](inputs, training=True, **kwargs)
        actual = layers["fused"](inputs, training=True, **kwargs)
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_same_weights_config_and_registered_serialisation():
    layers = _pair()
    names = {key: [v.name for v in layer.weights] for key, layer in layers.items()}
    assert names["fused"] == names["keras"] == ["gamma", "beta", "moving_mean", "moving_variance"]
    config = layers["fused"].get_config()
    assert {k: v for k, v in config.items() if k != "name"} == {
        k: v for k, v in layers["keras"].get_config().items() if k != "name"
    }
    serialized = keras.saving.serialize_keras_object(layers["fused"])
    assert serialized["registered_name"] == "keras_mtl>BatchNormalization"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is FusedBatchNorm
    assert (restored.momentum, restored.epsilon) == (BN_MOMENTUM, BN_EPSILON)


def test_checkpoint_saved_with_keras_batch_norm_loads_and_trains_identically(tmp_path: Path):
    from keras_mtl.models import build_multitask_model

    keras.utils.set_random_seed(0)
    with batch_norm_class(keras.layers.BatchNormalization):
        stock = build_multitask_model((32, 64), width_mult=0.25)
    norms = [layer for layer in stock.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(isinstance(layer, FusedBatchNorm) for layer in norms)
    rng = np.random.default_rng(6)
    for layer in norms:
        layer.moving_mean.assign(rng.normal(0.0, 0.2, layer.moving_mean.shape))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    stock.save(tmp_path / "stock.keras")
    loaded = keras.saving.load_model(tmp_path / "stock.keras", compile=False)
    fused_norms = [layer for layer in loaded.layers if isinstance(layer, FusedBatchNorm)]
    assert len(fused_norms) == len(norms)

    inputs = {
        name: tf.constant(rng.normal(size=(2, 32, 64, 3)).astype("float32"))
        for name in ("flow", "rgb")
    }
    for model in (stock, loaded):
        for task in ("depth", "semantic", "motion"):  # the same outputs in training mode
            model.get_layer(f"{task}_decoder.aspp_dropout").rate = 0.0

    def outputs(model: keras.Model, training: bool) -> dict[str, np.ndarray]:
        return {name: np.asarray(v) for name, v in model(inputs, training=training).items()}

    # Each layer agrees to ~1e-6 (above); through 94 BatchNorms the float32 rounding compounds.
    for training in (False, True):
        expected, actual = outputs(stock, training), outputs(loaded, training)
        for task in expected:
            scale = np.abs(expected[task]).max()
            np.testing.assert_allclose(
                actual[task], expected[task], atol=1e-4 * scale, err_msg=f"{task} {training}"
            )
    for a, b in zip(stock.weights, loaded.weights, strict=True):  # moving statistics included
        assert a.path == b.path
        scale = np.abs(a.numpy()).max()
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-4 * scale, err_msg=a.path)

    def gradient(model: keras.Model, scale: float = 1.0) -> np.ndarray:
        with tf.GradientTape() as tape:
            predictions = model({k: v * scale for k, v in inputs.items()}, training=True)
            loss = sum(tf.reduce_mean(tf.square(tf.tanh(v))) for v in predictions.values())
        grads = tape.gradient(loss, model.trainable_variables)
        return np.concatenate([np.ravel(g) for g in grads if g is not None])

    # At batch 2 and 32x64 (16 values per channel at stride 16) this network's gradient is
    # ill-conditioned in float32: Keras' own moves by ~1% for inputs changed by 1e-6. The
    # fused network's must stay within that (a wrong gradient is off by O(1)).
    reference = gradient(stock)
    rounding = np.linalg.norm(gradient(stock, 1.0 + 1e-6) - reference)
    assert np.linalg.norm(gradient(loaded) - reference) <= 2.0 * rounding
    assert rounding < 0.05 * np.linalg.norm(reference)


# --------------------------------------------------------------------------- replicas


def mirrored_check() -> dict:
    """2 logical CPUs: per-replica batches through both layers under MirroredStrategy."""
    from keras_mtl.training import select_strategy

    strategy = select_strategy(cpu_replicas=2)
    rng = np.random.default_rng(7)
    # Replica 1's batch has another mean and scale: per-replica statistics differ visibly.
    batches = [
        rng.normal(0.0, 1.0, SHAPE).astype("float32"),
        rng.normal(2.0, 3.0, SHAPE).astype("float32"),
    ]
    results = {}
    for name in ("keras", "fused"):
        with strategy.scope():
            layer = _pair()[name]

        @tf.function
        def replica_step(layer=layer):
            context = tf.distribute.get_replica_context()
            x = tf.gather(tf.constant(np.stack(batches)), context.replica_id_in_sync_group)
            return layer(x, training=True)

        per_replica = strategy.run(replica_step)
        outputs = [np.asarray(t) for t in strategy.experimental_local_results(per_replica)]
        results[name] = {
            "outputs": [o.tolist() for o in outputs],
            "moving_mean": layer.moving_mean.numpy().tolist(),
            "moving_variance": layer.moving_variance.numpy().tolist(),
        }
    # What each replica must compute: its own batch normalised with its own statistics.
    gamma, beta = (w for w in _pair()["keras"].get_weights()[:2])
    expected = [
        (b - b.mean((0, 1, 2))) / np.sqrt(b.var((0, 1, 2)) + BN_EPSILON) * gamma + beta
        for b in batches
    ]
    results["expected_outputs"] = [e.tolist() for e in expected]
    return results


@pytest.mark.slow
def test_per_replica_statistics_under_mirrored_strategy():
    report = run_module_check(__file__, "mirrored-check")
    for name in ("keras", "fused"):
        for got, want in zip(report[name]["outputs"], report["expected_outputs"], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
    for key in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            report["fused"][key], report["keras"][key], rtol=1e-5, atol=1e-6, err_msg=key
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["mirrored-check"]:
        print(json.dumps(mirrored_check()))
    else:
        raise SystemExit(f"usage: python {sys.argv[0]} mirrored-check")
