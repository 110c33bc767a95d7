"""Task-weighting methods against hand-computed numpy references on small fixed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.weighting import (
    WEIGHTING_NAMES,
    WEIGHTINGS,
    DynamicWeightAverage,
    EqualWeighting,
    GradNormWeighting,
    PCGradWeighting,
    PseudoGradNormWeighting,
    UncertaintyWeighting,
    get_weighting,
)

TASKS3 = ["depth", "semantic", "motion"]
# Per-step unweighted losses and gradient norms (depth: large norm, fast-falling loss).
LOSSES = np.array(
    [[1.0, 2.0, 0.7], [0.8, 1.9, 0.69], [0.6, 1.85, 0.68], [0.5, 1.8, 0.66], [0.45, 1.7, 0.65]],
    dtype=np.float32,
)
NORMS = np.array(
    [[3.0, 0.5, 0.8], [2.8, 0.6, 0.7], [2.9, 0.55, 0.75], [3.1, 0.5, 0.7], [3.0, 0.52, 0.72]],
    dtype=np.float32,
)


def as_dict(values) -> dict[str, float]:
    return {name: float(v) for name, v in zip(TASKS3, values, strict=True)}


def weights_of(weighting) -> np.ndarray:
    return np.array([float(weighting.task_weights()[name]) for name in weighting.task_names])


# ---------------------------------------------------------------- registry


def test_registry_names_alias_and_unknown_name():
    assert WEIGHTING_NAMES == (
        "vanilla",
        "grad_norm",
        "pseudo_grad_norm",
        "uncertainty",
        "dwa",
        "pcgrad",
        "famo",
        "aligned_mtl",
        "aligned_mtl_ub",
        "imtl_l",
    )
    assert isinstance(get_weighting("learned", TASKS3), PseudoGradNormWeighting)
    assert isinstance(get_weighting("vanilla", TASKS3), EqualWeighting)
    with pytest.raises(UserError) as error:
        get_weighting("gradnorm", TASKS3)
    message = str(error.value)
    assert "--multi_task_type" in message and "'gradnorm'" in message
    for name in WEIGHTING_NAMES:
        assert name in message


def test_registry_is_read_from_each_method_info():
    from dataclasses import fields

    from keras_mtl.weighting import ALIASES, METHODS, resolve_name

    assert tuple(WEIGHTINGS) == WEIGHTING_NAMES == tuple(m.info.name for m in METHODS)
    assert ALIASES == {"learned": "pseudo_grad_norm"}
    assert resolve_name("learned") == "pseudo_grad_norm"
    assert all(method.info.label for method in METHODS)
    # Every method flag belongs to exactly one method; every flag a method names exists.
    shared = {"multi_task_type", "task_weights"}
    claimed = [f for method in METHODS for f in method.info.config_fields]
    assert sorted(claimed) == sorted(
        f.name for f in fields(WeightingConfig) if f.name not in shared
    )
    assert [m.info.name for m in METHODS if m.needs_task_gradients] == ["pcgrad", "aligned_mtl"]


@pytest.mark.parametrize(
    ("name", "field", "value", "flag"),
    [
        ("grad_norm", "grad_norm_initial_loss", "first", "--grad_norm_initial_loss"),
        ("grad_norm", "grad_norm_lr", 0.0, "--grad_norm_lr"),
        ("pseudo_grad_norm", "pseudo_grad_norm_rate", 2.0, "--pseudo_grad_norm_rate"),
        ("uncertainty", "uncertainty_depth_likelihood", "l1", "--uncertainty_depth_likelihood"),
        ("dwa", "dwa_temperature", 0.0, "--dwa_temperature"),
        ("vanilla", "task_weights", (1.0, -1.0, 1.0), "--task_weights"),
        ("vanilla", "task_weights", (1.0, 1.0), "--task_weights"),
    ],
)
def test_registry_rejects_bad_hyper_parameters(name, field, value, flag):
    config = WeightingConfig(**{field: value})
    with pytest.raises(UserError, match=flag):
        get_weighting(name, TASKS3, config)


def test_registry_maps_config_to_constructor_arguments():
    config = WeightingConfig(
        task_weights=(2.0, 1.0, 3.0),
        grad_norm_alpha=0.5,
        grad_norm_lr=0.1,
        grad_norm_initial_loss="theoretical",
        dwa_temperature=4.0,
    )
    # A subset of tasks takes its own entries of the (depth, semantic, motion) task_weights.
    vanilla = get_weighting("vanilla", ["motion", "depth"], config)
    np.testing.assert_allclose(weights_of(vanilla), [3.0, 2.0])
    grad_norm = get_weighting("grad_norm", TASKS3, config, semantic_classes=19)
    assert (grad_norm.alpha, grad_norm.learning_rate) == (0.5, 0.1)
    np.testing.assert_allclose(grad_norm.initial_losses.numpy(), [0.0, math.log(19), math.log(2)])
    np.testing.assert_allclose(weights_of(grad_norm), [1.0, 0.5, 1.5])  # rescaled to sum 3
    assert get_weighting("dwa", TASKS3, config).temperature == 4.0
    assert get_weighting("pcgrad", TASKS3, config, seed=7).seed == 7


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_config_round_trip_and_state_in_weights(name):
    weighting = get_weighting(name, TASKS3, WeightingConfig(task_weights=(1.0, 2.0, 0.5)))
    clone = type(weighting).from_config(weighting.get_config())
    assert clone.get_config() == weighting.get_config()
    assert [v.path.split("/")[-1] for v in clone.weights] == [
        v.path.split("/")[-1] for v in weighting.weights
    ]
    assert all(v.dtype == "float32" for v in weighting.weights)
    if name != "vanilla":  # every stateful method keeps its state in `weights`
        assert weighting.weights
    np.testing.assert_allclose(weights_of(clone), weights_of(weighting), rtol=1e-6)


def test_state_moves_with_checkpointed_weights():
    first = get_weighting("grad_norm", TASKS3)
    for losses, norms in zip(LOSSES[:2], NORMS[:2], strict=True):
        first.update(as_dict(losses), as_dict(norms))
    resumed = get_weighting("grad_norm", TASKS3)
    resumed.set_weights(first.get_weights())
    assert float(resumed.initialized.numpy()) == 1.0
    first.update(as_dict(LOSSES[2]), as_dict(NORMS[2]))
    resumed.update(as_dict(LOSSES[2]), as_dict(NORMS[2]))
    np.testing.assert_allclose(weights_of(resumed), weights_of(first), rtol=1e-6)


# ---------------------------------------------------------------- vanilla


def test_vanilla_combines_with_fixed_weights():
    weighting = get_weighting("vanilla", TASKS3, WeightingConfig(task_weights=(1.0, 0.5, 2.0)))
    total = weighting.combine_losses(as_dict([1.0, 2.0, 0.5]))
    assert float(total) == pytest.approx(1.0 + 1.0 + 1.0)
    weighting.update(as_dict([1.0, 2.0, 0.5]))
    np.testing.assert_allclose(weights_of(weighting), [1.0, 0.5, 2.0])


# ---------------------------------------------------------------- GradNorm


def grad_norm_reference(losses, norms, weights, alpha, lr, initial=None, min_weight=1e-3):
    """numpy GradNorm: closed-form step on L_grad = sum |w n - mean(w n) r^alpha|."""
    weights = np.asarray(weights, np.float64)
    history = []
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True)):
        if step == 0 and initial is None:
            initial = loss.astype(np.float64)
        ratio = loss / initial
        inverse_rate = ratio / ratio.mean()
        g = weights * norm
        target = g.mean() * inverse_rate**alpha
        weights = weights - lr * np.sign(g - target) * norm / norm.mean()
        weights = np.maximum(weights, min_weight)
        weights = len(weights) * weights / weights.sum()
        history.append(weights)
    return np.array(history)


def test_grad_norm_matches_reference_and_moves_toward_target():
    weighting = get_weighting("grad_norm", TASKS3, WeightingConfig(grad_norm_lr=0.05))
    got = []
    for losses, norms in zip(LOSSES, NORMS, strict=True):
        weighting.update(as_dict(losses), as_dict(norms))
        got.append(weights_of(weighting))
    expected = grad_norm_reference(LOSSES, NORMS, np.ones(3), alpha=1.5, lr=0.05)
    np.testing.assert_allclose(np.array(got), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighting.initial_losses.numpy(), LOSSES[0])  # measured once
    final = got[-1]
    # Depth has the largest gradient norm and the smallest loss ratio: it loses weight.
    assert final[0] < 1.0 and final[0] == final.min()
    assert final.sum() == pytest.approx(3.0, rel=1e-6)
    assert np.all(final > 0)


def test_grad_norm_theoretical_initial_loss_and_positivity():
    weighting = GradNormWeighting(TASKS3, alpha=1.5, learning_rate=10.0, initial_loss="theoretical")
    np.testing.assert_allclose(weighting.initial_losses.numpy(), [0.0, math.log(5), math.log(2)])
    weighting.update(as_dict(LOSSES[0]), as_dict(NORMS[0]))
    # depth (regression) is measured, the class tasks keep log(C).
    np.testing.assert_allclose(
        weighting.initial_losses.numpy(), [LOSSES[0][0], math.log(5), math.log(2)], rtol=1e-6
    )
    expected = grad_norm_reference(
        LOSSES[:1],
        NORMS[:1],
        np.ones(3),
        alpha=1.5,
        lr=10.0,
        initial=np.array([LOSSES[0][0], math.log(5), math.log(2)]),
    )
    np.testing.assert_allclose(weights_of(weighting), expected[-1], rtol=1e-5)
    # A huge rate drives a weight through zero: the clip keeps it > 0, the sum stays T.
    assert np.all(weights_of(weighting) > 0)
    assert weights_of(weighting).sum() == pytest.approx(3.0, rel=1e-6)


def test_grad_norm_inside_tf_function_and_skips_non_finite_steps():
    weighting = get_weighting("grad_norm", TASKS3)

    @tf.function
    def step(losses, norms):
        weighting.update(
            {n: losses[i] for i, n in enumerate(TASKS3)},
            {n: norms[i] for i, n in enumerate(TASKS3)},
        )

    for losses, norms in zip(LOSSES[:3], NORMS[:3], strict=True):
        step(tf.constant(losses), tf.constant(norms))
    expected = grad_norm_reference(LOSSES[:3], NORMS[:3], np.ones(3), alpha=1.5, lr=0.025)
    np.testing.assert_allclose(weights_of(weighting), expected[-1], rtol=1e-5)
    before = weighting.get_weights()
    step(tf.constant([np.nan, 1.0, 1.0]), tf.constant(NORMS[3]))
    for old, new in zip(before, weighting.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_grad_norm_without_norms_is_a_clear_error():
    with pytest.raises(ValueError, match="grad_norms"):
        get_weighting("grad_norm", TASKS3).update(as_dict(LOSSES[0]))


# ---------------------------------------------------------------- TI pseudo GradNorm


def pseudo_grad_norm_reference(losses, norms, weights, alpha, rate, short, long):
    """numpy re-implementation of TI's rule (original-system.md section 5), EMAs start at x_1."""
    weights = np.asarray(weights, np.float64)
    weights = len(weights) * weights / weights.sum()
    history = []
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True)):
        g = weights * norm
        if step == 0:
            g_ema, s_ema, l_ema = g, loss.astype(np.float64), loss.astype(np.float64)
        else:
            g_ema = (1 - short) * g_ema + short * g
            s_ema = (1 - short) * s_ema + short * loss
            l_ema = (1 - long) * l_ema + long * loss
        r = s_ema / l_ema
        target = g_ema.mean() * (r / r.sum()) ** alpha
        weights = weights + rate * weights * (target / g_ema - 1)
        weights = len(weights) * weights / weights.sum()
        history.append(weights)
    return np.array(history)


def test_pseudo_grad_norm_matches_reference_step_by_step():
    # Rates larger than TI's so that five steps move the weights visibly.
    weighting = PseudoGradNormWeighting(
        TASKS3, [1.0, 2.0, 1.0], alpha=0.75, rate=0.05, ema_short=0.3, ema_long=0.01
    )
    expected = pseudo_grad_norm_reference(
        LOSSES, NORMS, [1.0, 2.0, 1.0], alpha=0.75, rate=0.05, short=0.3, long=0.01
    )
    for step, (losses, norms) in enumerate(zip(LOSSES, NORMS, strict=True)):
        weighting.update(as_dict(losses), as_dict(norms))
        np.testing.assert_allclose(weights_of(weighting), expected[step], rtol=1e-5)
    assert np.abs(expected[-1] - expected[0]).max() > 1e-3  # the weights really moved
    assert weights_of(weighting).sum() == pytest.approx(3.0, rel=1e-6)
    np.testing.assert_allclose(weighting.loss_ema_long.numpy(), _ema_reference(LOSSES, 0.01))


def _ema_reference(values, rate):
    average = values[0].astype(np.float64)
    for value in values[1:]:
        average = (1 - rate) * average + rate * value
    return average


def test_pseudo_grad_norm_default_rates_inside_tf_function():
    weighting = get_weighting("pseudo_grad_norm", TASKS3)
    assert weighting.grad_norm_source == "shared_features"
    step = tf.function(weighting.update)
    for losses, norms in zip(LOSSES, NORMS, strict=True):
        step(as_dict(losses), as_dict(norms))
    expected = pseudo_grad_norm_reference(
        LOSSES, NORMS, np.ones(3), alpha=0.75, rate=1e-4, short=1e-3, long=1e-6
    )
    np.testing.assert_allclose(weights_of(weighting), expected[-1], rtol=1e-6)
    assert weights_of(weighting)[0] < 1.0  # depth's gradient norm is far above the target


# ---------------------------------------------------------------- uncertainty


@pytest.mark.parametrize(
    ("likelihood", "depth_a", "depth_b"), [("laplace", 1.0, 1.0), ("gaussian", 0.5, 0.5)]
)
def test_uncertainty_loss_and_gradient_wrt_log_variances(likelihood, depth_a, depth_b):
    weighting = UncertaintyWeighting(TASKS3, depth_likelihood=likelihood)
    s = np.array([0.3, -0.2, 0.5], np.float32)
    for variable, value in zip(weighting.log_variances, s, strict=True):
        variable.assign(value)
    losses = np.array([0.8, 1.5, 0.4], np.float32)
    with tf.GradientTape() as tape:
        total = weighting.combine_losses(as_dict(losses))
    grads = tape.gradient(total, [v.value for v in weighting.log_variances])
    a = np.array([depth_a, 1.0, 1.0])
    b = np.array([depth_b, 0.5, 0.5])
    assert float(total) == pytest.approx(np.sum(a * np.exp(-s) * losses + b * s), rel=1e-6)
    # classification: -exp(-s) L + 1/2; Laplace: -exp(-s) L + 1; Gaussian: -exp(-s) L / 2 + 1/2
    np.testing.assert_allclose(
        [float(g) for g in grads], -a * np.exp(-s) * losses + b, rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(weights_of(weighting), a * np.exp(-s), rtol=1e-6)
    assert weighting.trainable_weights == list(weighting.log_variances)


def test_uncertainty_initial_log_variances_follow_task_weights():
    weighting = get_weighting("uncertainty", TASKS3, WeightingConfig(task_weights=(1.0, 2.0, 0.5)))
    np.testing.assert_allclose(
        [float(v.numpy()) for v in weighting.log_variances], [0.0, -math.log(2), math.log(2)]
    )
    np.testing.assert_allclose(weights_of(weighting), [1.0, 2.0, 0.5], rtol=1e-6)


# ---------------------------------------------------------------- DWA


def test_dwa_first_two_epochs_then_softmax_of_loss_ratios():
    weighting = get_weighting("dwa", TASKS3, WeightingConfig(dwa_temperature=2.0))
    epochs = [[1.0, 2.0, 0.5], [0.5, 1.8, 0.5], [0.4, 1.8, 0.3]]
    np.testing.assert_allclose(weights_of(weighting), [1.0, 1.0, 1.0])  # epoch 0
    weighting.on_epoch_end(0, as_dict(epochs[0]))
    np.testing.assert_allclose(weights_of(weighting), [1.0, 1.0, 1.0])  # epoch 1
    weighting.on_epoch_end(1, as_dict(epochs[1]))
    for last in (1, 2):
        ratio = np.array(epochs[last]) / np.array(epochs[last - 1])
        expected = 3 * np.exp(ratio / 2.0) / np.exp(ratio / 2.0).sum()
        np.testing.assert_allclose(weights_of(weighting), expected, rtol=1e-6)
        if last == 1:
            weighting.on_epoch_end(2, as_dict(epochs[2]))
    assert float(weighting.epochs_seen.numpy()) == 3.0
    before = weights_of(weighting)
    weighting.on_epoch_end(3, as_dict([math.nan, 1.0, 1.0]))  # a diverged epoch is skipped
    np.testing.assert_allclose(weights_of(weighting), before)


# ---------------------------------------------------------------- PCGrad


def pcgrad_reference(flat: np.ndarray, orders: np.ndarray) -> np.ndarray:
    total = np.zeros(flat.shape[1])
    for i in range(flat.shape[0]):
        g = flat[i].astype(np.float64)
        for j in orders[i]:
            dot = g @ flat[j]
            if dot < 0:
                g = g - dot / (flat[j] @ flat[j]) * flat[j]
        total += g
    return total


def test_pcgrad_projects_away_conflicts_only():
    weighting = PCGradWeighting(["depth", "semantic"])
    g1, g2 = np.array([1.0, 0.0, 2.0], np.float32), np.array([-1.0, 1.0, -0.5], np.float32)
    assert g1 @ g2 < 0
    (combined,) = weighting.combine_gradients(
        {"depth": [tf.constant(g1)], "semantic": [tf.constant(g2)]}
    )
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert p1 @ g2 == pytest.approx(0.0, abs=1e-6)  # projected g1 is orthogonal to g2
    np.testing.assert_allclose(combined.numpy(), p1 + p2, rtol=1e-6)
    # Agreeing gradients are summed unchanged.
    g3 = np.array([1.0, 1.0, 0.0], np.float32)
    (agree,) = weighting.combine_gradients({"depth": [tf.constant(g1)], "semantic": [g3]})
    np.testing.assert_allclose(agree.numpy(), g1 + g3, rtol=1e-6)


def test_pcgrad_flattens_the_variable_list_and_matches_reference_in_tf_function():
    rng = np.random.default_rng(0)
    shapes = [(2, 3), (4,), (1, 1, 2)]
    grads = {name: [rng.normal(size=s).astype(np.float32) for s in shapes] for name in TASKS3}
    grads["motion"][1] = None  # motion does not reach the second shared variable
    weighting = get_weighting("pcgrad", TASKS3, seed=3)
    combine = tf.function(weighting.combine_gradients)

    def flat_of(name):
        return np.concatenate(
            [
                (g if g is not None else np.zeros(s)).ravel()
                for g, s in zip(grads[name], shapes, strict=True)
            ]
        )

    flat = np.stack([flat_of(name) for name in TASKS3])
    dots = flat @ flat.T
    assert (dots < 0).any(), "the fixture must contain a conflict"
    seen_orders = set()
    for _ in range(4):
        orders = weighting.projection_orders().numpy()
        assert all(sorted([*row, i]) == [0, 1, 2] for i, row in enumerate(orders))
        seen_orders.add(orders.tobytes())
        combined = combine(
            {k: [None if g is None else tf.constant(g) for g in v] for k, v in grads.items()}
        )
        assert [tuple(c.shape) for c in combined] == shapes
        got = np.concatenate([c.numpy().ravel() for c in combined])
        np.testing.assert_allclose(got, pcgrad_reference(flat, orders), rtol=1e-5, atol=1e-6)
        weighting.update({})
    assert len(seen_orders) > 1  # the order changes from step to step


def test_pcgrad_keeps_fixed_loss_weights():
    weighting = get_weighting("pcgrad", TASKS3, WeightingConfig(task_weights=(2.0, 1.0, 1.0)))
    assert weighting.needs_task_gradients and weighting.grad_norm_source is None
    assert float(weighting.combine_losses(as_dict([1.0, 1.0, 1.0]))) == pytest.approx(4.0)


def test_every_registered_method_keeps_positive_weights():
    for name, cls in WEIGHTINGS.items():
        weighting = get_weighting(name, TASKS3)
        assert isinstance(weighting, cls)
        if weighting.grad_norm_source is not None:
            for losses, norms in zip(LOSSES, NORMS, strict=True):
                weighting.update(as_dict(losses), as_dict(norms))
        assert np.all(weights_of(weighting) > 0), name
        # Only uncertainty and IMTL-L have trainable variables (trained with the network,
        # never decayed).
        assert bool(weighting.trainable_weights) == (name in ("uncertainty", "imtl_l"))


def test_dwa_is_registered_under_its_name():
    assert isinstance(get_weighting("dwa", TASKS3), DynamicWeightAverage)


# ---------------------------------------------------------------- MirroredStrategy

MIRRORED_SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
from keras_mtl.weighting import get_weighting

TASKS = ["depth", "semantic", "motion"]
LOSSES = np.array(LOSSES_LITERAL, np.float32)
NORMS = np.array(NORMS_LITERAL, np.float32)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    methods = {name: get_weighting(name, TASKS) for name in ("grad_norm", "pseudo_grad_norm", "pcgrad")}
    dwa = get_weighting("dwa", TASKS)
single = {name: get_weighting(name, TASKS) for name in methods}


@tf.function
def step(losses, norms):
    def replica_fn(losses, norms):
        context = tf.distribute.get_replica_context()
        # Each replica holds half of a batch; the trainer hands update() the replica mean.
        offset = tf.cast(context.replica_id_in_sync_group, tf.float32) * 0.6 - 0.3
        losses = context.all_reduce("mean", losses + offset)
        norms = context.all_reduce("mean", norms + offset)
        for weighting in methods.values():
            weighting.update(
                {n: losses[i] for i, n in enumerate(TASKS)},
                {n: norms[i] for i, n in enumerate(TASKS)},
            )
        grads = methods["pcgrad"].combine_gradients(
            {n: [tf.constant([1.0, -2.0]) * (i + 1.0) * (-1.0) ** i] for i, n in enumerate(TASKS)}
        )
        return grads[0]

    return strategy.run(replica_fn, args=(losses, norms))


for losses, norms in zip(LOSSES, NORMS):
    pcgrad_out = step(tf.constant(losses), tf.constant(norms))
    for weighting in single.values():
        weighting.update(dict(zip(TASKS, losses)), dict(zip(TASKS, norms)))
for epoch, losses in enumerate(LOSSES[:3]):
    dwa.on_epoch_end(epoch, dict(zip(TASKS, map(float, losses))))

result = {"replicas_equal": True, "max_diff": 0.0}
for name, weighting in methods.items():
    for variable in weighting.weights:
        local = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        result["replicas_equal"] &= bool(np.array_equal(local[0], local[1]))
    for a, b in zip(weighting.get_weights(), single[name].get_weights()):
        result["max_diff"] = max(result["max_diff"], float(np.abs(a - b).max()))
local = [v.numpy() for v in strategy.experimental_local_results(pcgrad_out)]
result["pcgrad_equal"] = bool(np.array_equal(local[0], local[1]))
result["dwa_epochs"] = float(dwa.epochs_seen.numpy())
print("RESULT " + json.dumps(result))
"""


def test_updates_agree_across_mirrored_replicas(tmp_path):
    """Two logical CPUs: state stays identical on both replicas and equals a 1-device run."""
    import json
    import os
    import subprocess
    import sys

    script = MIRRORED_SCRIPT.replace("LOSSES_LITERAL", repr(LOSSES.tolist())).replace(
        "NORMS_LITERAL", repr(NORMS.tolist())
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["replicas_equal"] and result["pcgrad_equal"]
    assert result["max_diff"] < 1e-5
    assert result["dwa_epochs"] == 3.0
