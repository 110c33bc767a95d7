"""FAMO, Aligned-MTL(-UB) and IMTL-L: numpy re-implementations of the papers' update rules,
and the trainer paths they need (FAMO's second forward pass, the aligned gradient combination,
no weight decay on IMTL-L's scales) eagerly, under fp16, across a checkpoint and on 2 replicas.

Run as a script (`python tests/test_weighting_recent.py replica-check`) it does the replica
comparison in a process whose CPU is split into 2 logical devices.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import run_module_check  # noqa: E402
from test_training import as_dataset, sgd_trainer, tiny_batches, tiny_model  # noqa: E402

from keras_mtl.config import WeightingConfig  # noqa: E402
from keras_mtl.errors import UserError  # noqa: E402
from keras_mtl.weighting import (  # noqa: E402
    WEIGHTING_NAMES,
    AlignedMTLUBWeighting,
    AlignedMTLWeighting,
    FAMOWeighting,
    IMTLLWeighting,
    get_weighting,
)
from keras_mtl.weighting.aligned_mtl import aligned_weights  # noqa: E402

TASKS3 = ["depth", "semantic", "motion"]
NEW_METHODS = ("famo", "aligned_mtl", "aligned_mtl_ub", "imtl_l")
# Per-step losses before and after the optimizer step on the same batch (FAMO's two passes):
# depth falls fast, semantic slowly, motion rises once.
BEFORE = np.array(
    [[2.0, 1.6, 0.70], [1.7, 1.58, 0.72], [1.4, 1.55, 0.69], [1.2, 1.52, 0.69]], np.float32
)
AFTER = np.array(
    [[1.8, 1.59, 0.71], [1.5, 1.56, 0.70], [1.25, 1.53, 0.69], [1.1, 1.50, 0.68]], np.float32
)


def as_dict(values) -> dict[str, float]:
    return {name: float(v) for name, v in zip(TASKS3, values, strict=True)}


def weights_of(weighting) -> np.ndarray:
    return np.array([float(weighting.task_weights()[name]) for name in weighting.task_names])


# ---------------------------------------------------------------- numpy references


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def famo_reference(before, after, lr=0.025, gamma=0.01, min_losses=(0, 0, 0), logits=None):
    """FAMO, Algorithm 1 with the authors' optimiser: Adam (PyTorch form, coupled weight decay
    gamma) on the logits with gradient J_softmax^T delta. Returns per step (logits, k)."""
    xi = np.zeros(before.shape[1]) if logits is None else np.asarray(logits, np.float64)
    m, v = np.zeros_like(xi), np.zeros_like(xi)
    history = []
    for t, (b, a) in enumerate(zip(before, after, strict=True), start=1):
        z = softmax(xi)
        d_before = b.astype(np.float64) - np.asarray(min_losses) + 1e-8
        d_after = a.astype(np.float64) - np.asarray(min_losses) + 1e-8
        k = (z / d_before) / np.sum(z / d_before)  # the network's gradient weights this step
        delta = np.log(d_before) - np.log(d_after)
        jacobian = np.diag(z) - np.outer(z, z)  # d softmax / d xi, symmetric
        g = jacobian.T @ delta + gamma * xi
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        xi = xi - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        history.append((xi.copy(), k))
    return history


def aligned_reference(grads: np.ndarray) -> np.ndarray:
    """Aligned-MTL's alpha as the paper's code computes it: eigenvalues sorted descending, the
    numerical rank kept (tol = max * T * eps32), B = sqrt(l_min) V diag(l^-1/2) V^T, alpha =
    B 1. `grads` is [T, D]."""
    gram = grads.astype(np.float64) @ grads.astype(np.float64).T
    values, vectors = np.linalg.eigh(gram)
    tol = values.max() * gram.shape[0] * np.finfo(np.float32).eps
    rank = int(np.sum(values > tol))
    if rank == 0:
        return np.zeros(gram.shape[0])
    order = np.argsort(values)[::-1]
    values, vectors = values[order][:rank], vectors[:, order][:, :rank]
    b = np.sqrt(values[-1]) * (vectors / np.sqrt(values)) @ vectors.T
    return b.sum(axis=0)


# ---------------------------------------------------------------- registry and flags


def test_registry_lists_the_new_methods_with_their_flags():
    assert set(NEW_METHODS) <= set(WEIGHTING_NAMES)
    famo = get_weighting(
        "famo",
        ["motion", "depth"],
        WeightingConfig(famo_lr=0.1, famo_gamma=0.001, famo_min_losses=(0.5, 0.0, 0.2)),
    )
    assert isinstance(famo, FAMOWeighting)
    assert (famo.learning_rate, famo.gamma, famo.min_losses) == (0.1, 0.001, (0.2, 0.5))
    assert isinstance(get_weighting("aligned_mtl", TASKS3), AlignedMTLWeighting)
    assert isinstance(get_weighting("aligned_mtl_ub", TASKS3), AlignedMTLUBWeighting)
    assert isinstance(get_weighting("imtl_l", TASKS3), IMTLLWeighting)
    for name in NEW_METHODS:
        weighting = get_weighting(name, TASKS3, WeightingConfig(task_weights=(1.0, 2.0, 0.5)))
        clone = type(weighting).from_config(weighting.get_config())
        assert clone.get_config() == weighting.get_config()
        assert weighting.weights and all(v.dtype == "float32" for v in weighting.weights)
        np.testing.assert_allclose(weights_of(clone), weights_of(weighting), rtol=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("famo_lr", 0.0, "--famo_lr"),
        ("famo_gamma", -0.1, "--famo_gamma"),
        ("famo_min_losses", (0.0, -1.0, 0.0), "--famo_min_losses"),
        ("famo_min_losses", (0.0, 0.0), "--famo_min_losses"),
    ],
)
def test_famo_rejects_bad_hyper_parameters_naming_the_flag(field, value, flag):
    with pytest.raises(UserError, match=flag):
        get_weighting("famo", TASKS3, WeightingConfig(**{field: value}))


# ---------------------------------------------------------------- FAMO


def test_famo_objective_value_and_gradient_weights():
    famo = FAMOWeighting(TASKS3, min_losses=[0.1, 0.0, 0.2])
    famo.logits.assign([0.3, -0.2, 0.1])
    losses = np.array([1.2, 1.6, 0.7], np.float32)
    tensors = [tf.constant(v) for v in losses]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        total = famo.combine_losses(dict(zip(TASKS3, tensors, strict=True)))
    grads = np.array([float(g) for g in tape.gradient(total, tensors)])
    z = softmax(np.array([0.3, -0.2, 0.1]))
    shifted = losses - np.array([0.1, 0.0, 0.2]) + 1e-8
    # The paper's objective; its gradient direction sum_i z_i/D_i grad L_i / sum_j z_j/D_j.
    assert float(total) == pytest.approx(np.sum(z * np.log(shifted)) / np.sum(z / shifted))
    np.testing.assert_allclose(grads, (z / shifted) / np.sum(z / shifted), rtol=1e-6)
    assert np.sum(grads) == pytest.approx(1.0, rel=1e-6)  # the normaliser divides: sum k = 1


def test_famo_logits_follow_the_reference_step_by_step_eager_and_in_tf_function():
    eager = get_weighting("famo", TASKS3)
    graph = get_weighting("famo", TASKS3)
    step = tf.function(graph.update_after_step)
    expected = famo_reference(BEFORE, AFTER)
    for t, (before, after) in enumerate(zip(BEFORE, AFTER, strict=True)):
        eager.update_after_step(as_dict(before), as_dict(after))
        step(as_dict(before), as_dict(after))
        logits, k = expected[t]
        for weighting in (eager, graph):
            np.testing.assert_allclose(weighting.logits.numpy(), logits, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(weights_of(weighting), k, rtol=1e-5)  # logged: k
    assert eager.adam_steps.numpy().tolist() == [len(BEFORE)] * eager.num_tasks
    # Depth's log-loss fell fastest: its logit goes down; motion's, the slowest, goes up.
    logits = eager.logits.numpy()
    assert logits[0] < 0 < logits[2] and logits.argmin() == 0
    # The first Adam step moves every logit by ~lr (a sign step), the paper's scale.
    first = expected[0][0]
    np.testing.assert_allclose(np.abs(first), 0.025, rtol=1e-3)


def test_famo_weight_decay_min_losses_initial_weights_and_non_finite_steps():
    # No loss change: only gamma * xi moves the logits, towards 0.
    famo = FAMOWeighting(TASKS3, initial_weights=[2.0, 1.0, 1.0], gamma=0.5)
    start = famo.logits.numpy()
    np.testing.assert_allclose(start, np.log([2.0, 1.0, 1.0]) - np.log(2.0) / 3, rtol=1e-6)
    np.testing.assert_allclose(softmax(start), [0.5, 0.25, 0.25], rtol=1e-6)
    famo.update_after_step(as_dict(BEFORE[0]), as_dict(BEFORE[0]))
    assert np.all(np.abs(famo.logits.numpy()) < np.abs(start))
    # L* shifts the logs; references agree with and without bounds.
    bounded = FAMOWeighting(TASKS3, min_losses=[0.5, 1.0, 0.1], gamma=0.01)
    expected = famo_reference(BEFORE, AFTER, min_losses=(0.5, 1.0, 0.1))
    for before, after in zip(BEFORE, AFTER, strict=True):
        bounded.update_after_step(as_dict(before), as_dict(after))
    np.testing.assert_allclose(bounded.logits.numpy(), expected[-1][0], rtol=1e-5, atol=1e-7)
    before_state = bounded.get_weights()
    bounded.update_after_step(as_dict([math.nan, 1.0, 1.0]), as_dict(AFTER[0]))
    for old, new in zip(before_state, bounded.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


# ---------------------------------------------------------------- Aligned-MTL


ALIGNED_CASES = {
    # orthogonal, norms 2 and 1: both scaled to the smaller norm -> alpha = (1/2, 1)
    "orthogonal": np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "conflicting": np.array([[1.0, 0.2, -0.5, 2.0], [-0.8, 0.4, 0.3, -1.5], [0.1, 1.0, 0.2, 0.3]]),
    # two equal gradients: rank 2 of 3, the third eigen-direction dropped
    "rank_deficient": np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.5, 1.0]]),
    "one_zero_task": np.array([[1.0, -1.0, 0.5], [0.0, 0.0, 0.0], [0.3, 0.2, 0.1]]),
    "all_zero": np.zeros((3, 4)),
}


@pytest.mark.parametrize("case", list(ALIGNED_CASES))
def test_aligned_weights_match_the_reference(case):
    grads = ALIGNED_CASES[case].astype(np.float32)
    gram = grads @ grads.T
    got = aligned_weights(tf.constant(gram)).numpy()
    np.testing.assert_allclose(got, aligned_reference(grads), rtol=1e-5, atol=1e-6)
    if case == "orthogonal":
        np.testing.assert_allclose(got, [0.5, 1.0], rtol=1e-6)
    if case == "conflicting":  # full rank: G B has orthogonal columns of length sigma_min
        exact = grads.astype(np.float64)
        values, vectors = np.linalg.eigh(exact @ exact.T)
        b = np.sqrt(values.min()) * (vectors / np.sqrt(values)) @ vectors.T
        aligned = exact.T @ b
        np.testing.assert_allclose(
            aligned.T @ aligned, values.min() * np.eye(3), rtol=1e-6, atol=1e-9
        )
        # The weights do not depend on the gradients' common scale (a loss scale).
        scaled = aligned_weights(tf.constant(gram * 1024.0**2)).numpy()
        np.testing.assert_allclose(scaled, got, rtol=1e-5)
    if case == "all_zero":
        np.testing.assert_array_equal(got, np.zeros(3))
    nan = aligned_weights(tf.constant(np.where(np.eye(len(gram)), np.inf, gram))).numpy()
    assert not np.isfinite(nan).any()  # an overflowed step stays non-finite: it is skipped


def test_aligned_combine_gradients_over_a_variable_list_in_tf_function():
    rng = np.random.default_rng(1)
    shapes = [(2, 3), (4,), (1, 2)]
    grads = {t: [rng.normal(size=s).astype(np.float32) for s in shapes] for t in TASKS3}
    grads["motion"][1] = None  # motion does not reach the second variable
    weighting = get_weighting("aligned_mtl", TASKS3, WeightingConfig(task_weights=(2.0, 1, 1)))
    assert weighting.needs_task_gradients
    np.testing.assert_allclose(weights_of(weighting), [2.0, 1.0, 1.0])  # before any step
    combine = tf.function(weighting.combine_gradients)
    combined = combine(
        {t: [None if g is None else tf.constant(g) for g in v] for t, v in grads.items()}
    )
    flat = np.stack(
        [
            np.concatenate(
                [(np.zeros(s) if g is None else g).ravel() for g, s in zip(v, shapes, strict=True)]
            )
            for v in grads.values()
        ]
    )
    alpha = aligned_reference(flat)
    got = np.concatenate([c.numpy().ravel() for c in combined])
    np.testing.assert_allclose(got, alpha @ flat, rtol=1e-5, atol=1e-6)
    assert [tuple(c.shape) for c in combined] == shapes
    np.testing.assert_allclose(weighting.alpha.numpy(), alpha, rtol=1e-5)
    np.testing.assert_allclose(weights_of(weighting), alpha * [2.0, 1.0, 1.0], rtol=1e-5)
    # The larger gradient gets the smaller multiplier.
    norms = np.linalg.norm(flat, axis=1)
    assert alpha[norms.argmax()] == alpha.min()


# ---------------------------------------------------------------- IMTL-L


def test_imtl_loss_gradient_and_the_scaled_losses_moving_to_one():
    weighting = get_weighting("imtl_l", TASKS3, WeightingConfig(task_weights=(1.0, 2.0, 0.5)))
    s = np.array([float(v.numpy()) for v in weighting.log_scales])
    np.testing.assert_allclose(s, np.log([1.0, 2.0, 0.5]), rtol=1e-6)
    losses = np.array([0.8, 1.5, 0.4], np.float32)
    with tf.GradientTape() as tape:
        total = weighting.combine_losses(as_dict(losses))
    grads = tape.gradient(total, [v.value for v in weighting.log_scales])
    assert float(total) == pytest.approx(np.sum(np.exp(s) * losses - s), rel=1e-6)
    np.testing.assert_allclose([float(g) for g in grads], np.exp(s) * losses - 1, rtol=1e-5)
    assert weighting.trainable_weights == list(weighting.log_scales)
    # Plain gradient descent on s with fixed losses: exp(s_i) L_i -> 1 for every task.
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(60):
        with tf.GradientTape() as tape:
            total = weighting.combine_losses(as_dict(losses))
        gradients = tape.gradient(total, weighting.trainable_variables)
        optimizer.apply(gradients, weighting.trainable_variables)
    np.testing.assert_allclose(weights_of(weighting) * losses, 1.0, rtol=1e-3)


# ---------------------------------------------------------------- in the trainer


@pytest.fixture(scope="module")
def initial_weights():
    return tiny_model().get_weights()


def test_imtl_scales_are_trained_without_weight_decay(initial_weights):
    batch = tiny_batches()[0]
    trainer = sgd_trainer("imtl_l", initial_weights, weight_decay=10.0)
    trainer.weighting.log_scales[0].assign(0.4)
    s = np.array([float(v.numpy()) for v in trainer.weighting.log_scales])
    logs = trainer.train_step(batch)
    losses = np.array([float(logs[f"loss_{t}"]) for t in TASKS3])
    # SGD(0.05) on exp(s) L - s alone: a decay of 10 would add -0.05 * 10 * s.
    expected = s - 0.05 * (np.exp(s) * losses - 1.0)
    got = [float(v.numpy()) for v in trainer.weighting.log_scales]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_aligned_mtl_ub_weights_the_representation_gradients(initial_weights):
    """alpha from the Gram matrix of the per-task gradients at the trunk's hand-off tensors,
    and the trunk trained on sum_i alpha_i L_i, the heads on their own task's loss."""
    from keras_mtl import losses as loss_lib

    batch = tiny_batches()[0]
    trainer = sgd_trainer("aligned_mtl_ub", initial_weights, weight_decay=0.0)
    split = trainer.backward.split
    trunk, heads = trainer.backward.trunk_view, trainer.backward.heads_view

    def task_losses(outputs):
        return {
            t: loss_lib.task_loss_from_terms(
                t,
                loss_lib.task_loss_terms(
                    t, batch[1][t], outputs[t], trainer.depth_loss, trainer.class_weights[t]
                ),
                None,
                1,
                trainer.depth_loss,
            )
            for t in TASKS3
        }

    with tf.GradientTape(persistent=True) as tape:
        boundary = trunk(batch[0], training=True)["boundary"]
        losses = task_losses(heads(boundary, training=True))
        # The representation h = the hand-off tensors as the heads' inputs: the partial
        # derivatives dL_i/dh (one hand-off tensor also feeds the trunk's later layers).
        cut = [tf.stop_gradient(h) for h in boundary]
        tape.watch(cut)
        cut_losses = task_losses(heads(cut, training=True))
    flat = np.stack(
        [
            np.concatenate([g.numpy().ravel() for g in tape.gradient(cut_losses[t], cut)])
            for t in TASKS3
        ]
    )
    alpha = aligned_reference(flat)
    assert np.abs(alpha - 1).max() > 1e-2  # the fixture's tasks are far from aligned
    per_task_trunk = [tape.gradient(losses[t], split.shared_variables) for t in TASKS3]
    trunk_grads = [
        sum(float(a) * g[v].numpy() for a, g in zip(alpha, per_task_trunk, strict=True))
        for v in range(len(split.shared_variables))
    ]
    head_grads = {t: tape.gradient(losses[t], split.task_variables[t]) for t in TASKS3}
    expected = {
        id(v): v.numpy() - 0.05 * g
        for v, g in zip(split.shared_variables, trunk_grads, strict=True)
    }
    for t in TASKS3:
        for v, g in zip(split.task_variables[t], head_grads[t], strict=True):
            expected[id(v)] = v.numpy() - 0.05 * g.numpy()
    trainer.train_step(batch)
    np.testing.assert_allclose(trainer.weighting.alpha.numpy(), alpha, rtol=1e-4)
    for variable in trainer.model.trainable_variables:
        np.testing.assert_allclose(
            variable.numpy(), expected[id(variable)], rtol=1e-4, atol=1e-6, err_msg=variable.path
        )


def network_batch(batch: int = 2, seed: int = 4):
    """A random batch at the real network's 64x128 test size."""
    rng = np.random.default_rng(seed)
    shape = (batch, 64, 128)
    inputs = {k: rng.normal(size=(*shape, 3)).astype(np.float32) for k in ("flow", "rgb")}
    targets = {
        "depth": rng.uniform(2.0, 60.0, size=(*shape, 1)).astype(np.float32),
        "semantic": rng.integers(0, 5, size=shape).astype(np.int32),
        "motion": rng.integers(0, 2, size=shape).astype(np.int32),
    }
    return inputs, targets


def test_famo_second_pass_writes_nothing_and_sees_the_same_masks():
    """On the real network (BatchNorm, dropout): with a zero step the losses after equal the
    losses before, and the moving statistics are updated once, as in a vanilla step."""
    from keras_mtl.models import build_multitask_model
    from keras_mtl.training import MultiTaskTrainer

    keras.utils.set_random_seed(3)
    model = build_multitask_model((64, 128), width_mult=0.35, dropout=0.5)
    weights = model.get_weights()
    initial_statistics = [v.numpy() for v in model.non_trainable_weights]
    batch = network_batch()
    results = {}
    for method in ("vanilla", "famo"):
        model.set_weights(weights)
        trainer = MultiTaskTrainer(model, method)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
        recorded = {}
        if method == "famo":
            update = trainer.weighting.update_after_step

            def recording(before, after, update=update, recorded=recorded):
                recorded["before"] = [float(before[t]) for t in TASKS3]
                recorded["after"] = [float(after[t]) for t in TASKS3]
                return update(before, after)

            trainer.weighting.update_after_step = recording
        trainer.train_step(batch)
        results[method] = [v.numpy() for v in model.non_trainable_weights]
    np.testing.assert_allclose(recorded["after"], recorded["before"], rtol=1e-6)
    for famo_state, vanilla_state in zip(results["famo"], results["vanilla"], strict=True):
        np.testing.assert_allclose(famo_state, vanilla_state, rtol=1e-6)
    # The step did update the moving statistics (once: equal to vanilla's).
    assert any(
        np.abs(a - b).max() > 1e-6 for a, b in zip(results["famo"], initial_statistics, strict=True)
    )


def test_steps_in_a_tf_function_equal_eager_steps(initial_weights):
    """The hooks traced (FAMO's stateless second pass, the aligned combinations): two steps
    in a `tf.function` equal two eager steps."""
    batches = tiny_batches(2, seed=9)
    for method in ("famo", "aligned_mtl", "aligned_mtl_ub"):
        eager = sgd_trainer(method, initial_weights)
        graph = sgd_trainer(method, initial_weights)
        step = tf.function(graph.train_step)
        for batch in batches:
            eager.train_step(batch)
            step(batch)
        assert np.abs(weights_of(graph.weighting) - 1).max() > 1e-4, method
        for a, b in zip(
            eager.model.weights + eager.weighting.weights,
            graph.model.weights + graph.weighting.weights,
            strict=True,
        ):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=method)


def run_steps(trainer, batches) -> None:
    for batch in batches:
        trainer.train_step(batch)


def test_state_resumes_from_a_saved_trainer(initial_weights, tmp_path):
    """Save after 2 steps, load, one more step: equal to the uninterrupted trainer."""
    batches = tiny_batches(3, seed=6)
    for method in NEW_METHODS:
        trainer = sgd_trainer(method, initial_weights)
        run_steps(trainer, batches[:2])
        path = tmp_path / f"{method}.keras"
        trainer.save(path)
        loaded = keras.saving.load_model(path)
        loaded.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
        for saved, restored in zip(
            trainer.weighting.weights, loaded.weighting.weights, strict=True
        ):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=method)
        run_steps(trainer, batches[2:])
        run_steps(loaded, batches[2:])
        assert np.abs(weights_of(trainer.weighting) - 1).max() > 1e-4, method  # moved
        for a, b in zip(
            trainer.model.weights + trainer.weighting.weights,
            loaded.model.weights + loaded.weighting.weights,
            strict=True,
        ):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=method)


def test_mixed_float16_steps_keep_float32_state(initial_weights):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        # The first steps overflow at the initial loss scale and are skipped (as vanilla's).
        batches = tiny_batches(4, seed=8)
        for method in NEW_METHODS:
            trainer = sgd_trainer(method, initial_weights)
            assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
            run_steps(trainer, batches)
            state = [v.numpy() for v in trainer.weighting.weights]
            assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in state), method
            assert np.abs(weights_of(trainer.weighting) - 1).max() > 1e-4, method
            moved = max(
                np.abs(a - b).max()
                for a, b in zip(trainer.model.get_weights(), initial_weights, strict=True)
            )
            assert moved > 1e-5, method
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------- train.py


@pytest.mark.slow
@pytest.mark.parametrize("method", NEW_METHODS)
def test_train_py_trains_below_its_first_loss(method, tiny_dataset, tmp_path):
    """`train.py --multi_task_type <method>` on the tiny synthetic dataset with the real network
    (width 0.35, 64x128): the batch's unweighted loss after one step is below its first loss.

    The step functions run eagerly (`tf.config.run_functions_eagerly`): a graph trace of the
    real network per method would take minutes on two cores; the traced path of the hooks is
    `test_steps_in_a_tf_function_equal_eager_steps`.
    """
    import csv

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import train

    save_path = tmp_path / method
    argv = ["--config", str(Path(train.__file__).parent / "configs/synthetic.yaml")]
    argv += ["--data_path", str(tiny_dataset), "--save_path", str(save_path)]
    argv += ["--multi_task_type", method, "--img_resize", "64", "128"]
    # One step per epoch on the same 4 frames: epoch 2's loss is the batch's loss after the
    # first update, epoch 1's its first loss.
    argv += ["--output_size", "64", "128", "--batch_size", "4", "--epochs", "2"]
    argv += ["--steps_per_epoch", "1", "--val_steps", "1", "--no_augment", "--no_shuffle"]
    argv += ["--no_cache", "--lr", "3e-3", "--lr_milestones"]
    tf.config.run_functions_eagerly(True)
    try:
        assert train.main(argv) == 0
    finally:
        tf.config.run_functions_eagerly(False)
    with (save_path / "history.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    unweighted = [sum(float(r[f"loss_{t}"]) for t in TASKS3) for r in rows]
    assert len(unweighted) == 2 and unweighted[1] < unweighted[0], unweighted
    weights = np.array([float(rows[-1][f"weight_{t}"]) for t in TASKS3])
    assert np.all(np.isfinite(weights)) and np.abs(weights - 1).max() > 1e-4


# ---------------------------------------------------------------- replicas


def replica_check() -> dict:
    """One process, 2 logical CPUs: 2 SGD steps of each new method on 1 device vs 2 replicas
    traced (`tf.function` around `strategy.run`, as fit does), FAMO's also eagerly (to record
    the losses after the step each replica's update sees)."""
    from keras_mtl.training import select_strategy

    mirrored = select_strategy(cpu_replicas=2)
    batches = tiny_batches(2, batch=4, seed=5)
    weights = tiny_model().get_weights()
    variants = [
        ("single", tf.distribute.get_strategy(), False),
        ("mirrored", mirrored, False),
        ("mirrored_traced", mirrored, True),
    ]
    report = {}
    for method in NEW_METHODS:
        states, after_losses, replicas_equal = {}, {}, True
        for name, strategy, traced in variants:
            if name == "mirrored" and method != "famo":
                continue  # eager replicas of every method: tests/test_training.py's check
            trainer = sgd_trainer(method, weights, strategy=strategy)
            recorded = []
            if method == "famo" and not traced:
                update = trainer.weighting.update_after_step

                def recording(before, after, update=update, recorded=recorded):
                    recorded.append([float(after[t]) for t in TASKS3])
                    return update(before, after)

                trainer.weighting.update_after_step = recording

            def step(batch, strategy=strategy, trainer=trainer):
                return strategy.run(trainer.train_step, args=(batch,))

            if traced:
                step = tf.function(step)
            for batch in strategy.experimental_distribute_dataset(as_dataset(batches)):
                step(batch)
            for variable in trainer.weighting.weights:
                local = [np.asarray(v.numpy()) for v in _locals(strategy, variable)]
                replicas_equal &= all(np.array_equal(local[0], x) for x in local)
            states[name] = [v.numpy() for v in trainer.model.weights] + [
                np.asarray(v.numpy()) for v in trainer.weighting.weights
            ]
            after_losses[name] = np.array(recorded)
        single, both = after_losses["single"], after_losses.get("mirrored", np.zeros(0))
        report[method] = {
            **{
                f"max_diff_{name}": max(
                    float(np.abs(a - b).max())
                    for a, b in zip(states["single"], states[name], strict=True)
                )
                for name in states
                if name != "single"
            },
            "max_move": max(
                float(np.abs(a - b).max()) for a, b in zip(states["single"], weights, strict=False)
            ),
            "replicas_equal": bool(replicas_equal),
            "after_losses_diff": (
                float(np.abs(both.reshape(len(single), 2, -1) / single[:, None] - 1.0).max())
                if len(single)
                else 0.0
            ),
        }
    return report


def _locals(strategy, variable):
    value = getattr(variable, "value", variable)
    return strategy.experimental_local_results(value)


@pytest.mark.slow
def test_two_replicas_equal_one_device():
    report = run_module_check(__file__, "replica-check")
    assert set(report) == set(NEW_METHODS)
    for method, numbers in report.items():
        assert numbers["max_move"] > 1e-4, method
        assert numbers["replicas_equal"], method
        assert numbers["max_diff_mirrored_traced"] < 2e-5, (method, numbers)
    assert report["famo"]["max_diff_mirrored"] < 2e-5, report["famo"]
    # Every replica's FAMO update sees the one-device losses after the step.
    assert report["famo"]["after_losses_diff"] < 2e-5  # relative, float32 sums in other orders


if __name__ == "__main__":
    if sys.argv[1:] == ["replica-check"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(replica_check()))


def test_unlabelled_task_is_left_out_as_if_the_problem_had_only_the_others():
    """Partial labels: with motion unlabelled, FAMO, Aligned-MTL and IMTL-L on three tasks do
    on depth and semantic exactly what they do on a two-task problem, and motion's state stays.
    """
    labelled = {"depth": tf.constant(True), "semantic": tf.constant(True)}
    labelled["motion"] = tf.constant(False)
    before = [{"depth": 0.9, "semantic": 1.6, "motion": 0.0}, {"depth": 0.7, "semantic": 1.2}]
    after = [{"depth": 0.8, "semantic": 1.55, "motion": 0.0}, {"depth": 0.66, "semantic": 1.1}]
    three, two = FAMOWeighting(TASKS3), FAMOWeighting(TASKS3[:2])
    for losses, losses_after in zip(before, after, strict=True):
        losses = {"motion": 0.0, **losses}
        losses_after = {"motion": 0.0, **losses_after}
        total = three.combine_losses(losses, labelled=labelled)
        pair = {t: losses[t] for t in TASKS3[:2]}
        np.testing.assert_allclose(float(total), float(two.combine_losses(pair)), rtol=1e-6)
        three.update_after_step(losses, losses_after, labelled=labelled)
        two.update_after_step(pair, {t: losses_after[t] for t in TASKS3[:2]})
    for name in ("logits", "adam_m", "adam_v", "adam_steps", "last_weights"):
        got, reference = getattr(three, name).numpy(), getattr(two, name).numpy()
        np.testing.assert_allclose(got[:2], reference, rtol=1e-5, atol=1e-7, err_msg=name)
    assert three.logits.numpy()[2] == 0.0 and three.adam_steps.numpy()[2] == 0.0
    assert three.last_weights.numpy()[2] == 1.0

    grads = np.array([[2.0, 0.5, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    aligned = AlignedMTLWeighting(TASKS3)
    combined = aligned.combine_gradients(
        {t: [tf.constant(g)] for t, g in zip(TASKS3, grads, strict=True)}, labelled=labelled
    )
    alpha = aligned_reference(grads[:2])
    np.testing.assert_allclose(aligned.alpha.numpy(), [*alpha, 1.0], rtol=1e-5)
    np.testing.assert_allclose(combined[0].numpy(), alpha @ grads[:2], rtol=1e-5, atol=1e-6)

    imtl = IMTLLWeighting(TASKS3)
    imtl.log_scales[2].assign(0.3)
    total = imtl.combine_losses({"depth": 0.9, "semantic": 1.6, "motion": 0.0}, labelled=labelled)
    assert float(total) == pytest.approx(0.9 + 1.6)  # exp(0) L - 0 for the labelled two only
    assert set(imtl.task_state_variables()) == set(TASKS3)
