"""Partial labels (`--labels partial`): masked losses, weighting state, replicas, data, runs.

A frame needs its inputs (rgb, flow); each task's label is optional. These tests check the
masked loss against a numpy reference on hand-made batches, that no weighting method (every
method of the registry, so later ones too) moves a task's state on a batch without its labels,
that N replicas compute what one device does, that `--labels strict` is unchanged, the
synthetic generator's `--drop_labels`, `data_tools.check`'s coverage numbers, a short training
run with half the motion labels dropped, and the evaluation's per-task frame counts.

Run as a script (`python tests/test_partial_labels.py replica-check`) it does the replica
check in a process whose CPU is split into 2 logical devices.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from conftest import run_module_check  # noqa: E402
from test_training import HEIGHT, WIDTH, as_dataset, tiny_batches, tiny_model  # noqa: E402

from keras_mtl.weighting import WEIGHTING_NAMES  # noqa: E402

TASKS3 = ("depth", "semantic", "motion")
# Train and val: half the motion labels and a quarter of the depth labels dropped.
DROPPED = {"num_train": 8, "num_val": 4, "height": 64, "width": 128, "seed": 11}


@pytest.fixture(scope="module")
def partial_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset with motion labels dropped on half the train and val frames
    and depth labels on a quarter of them."""
    from data_tools.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("partial_dataset")
    generate_dataset(
        root,
        workers=1,
        progress=False,
        drop_labels="motion=0.5,depth=0.25",
        drop_splits=("train", "val"),
        **DROPPED,
    )
    return root


def masks_of(*rows) -> dict:
    """Label masks `{task: float32 [B]}` from per-task 0/1 rows (depth, semantic, motion)."""
    return {task: np.asarray(row, np.float32) for task, row in zip(TASKS3, rows, strict=True)}


def labelled_of(**flags) -> dict:
    """The trainer's `labelled` signal: `{task: bool scalar tensor}`."""
    from keras import ops

    return {task: ops.convert_to_tensor(bool(flags.get(task, True))) for task in TASKS3}


# --------------------------------------------------------------------------- masked losses


def _numpy_depth(kind: str, true, pred, mask) -> float:
    valid = (true > 0) & (mask[:, None, None] > 0)
    t, p = true[valid].astype(np.float64), pred[valid].astype(np.float64)
    if kind == "log_l1":
        return float(np.mean(np.abs(np.log(p) - np.log(t))))
    if kind == "silog":
        g = np.log(p) - np.log(t)
        return float(np.mean(g**2) - 0.5 * np.mean(g) ** 2)
    d = p - t
    smooth = np.where(np.abs(d) < 1.0, 0.5 * d**2, np.abs(d) - 0.5)
    return float(np.mean(smooth) + (np.mean(p - t) ** 2 + 1e-6) ** 0.45)


def _numpy_cross_entropy(labels, logits, mask, class_weights) -> float:
    shifted = logits - logits.max(-1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    valid = (labels != 255) & (mask[:, None, None] > 0)
    safe = np.where(valid, labels, 0)
    picked = np.take_along_axis(log_prob, safe[..., None], -1)[..., 0]
    weights = np.asarray(class_weights)[safe] * valid
    return float(-(picked * weights).sum() / weights.sum())


@pytest.mark.parametrize("kind", ["log_l1", "silog", "smooth_l1"])
def test_masked_depth_loss_matches_numpy_and_replica_shares(kind):
    from keras_mtl import losses

    rng = np.random.default_rng(1)
    true = rng.uniform(2.0, 30.0, (4, 6, 8)).astype(np.float32)
    true[0, :3] = 0.0  # invalid pixels inside a labelled frame
    pred = rng.uniform(2.0, 30.0, (4, 6, 8, 1)).astype(np.float32)
    mask = np.array([1.0, 0.0, 1.0, 0.0], np.float32)  # frames 1 and 3: no depth label
    # What an unlabelled frame's target holds does not matter: the mask excludes it.
    expected = _numpy_depth(kind, true, pred[..., 0], mask)
    terms = losses.task_loss_terms("depth", true, pred, kind, sample_mask=mask)
    np.testing.assert_allclose(
        float(losses.task_loss_from_terms("depth", terms, None, 1, kind)), expected, rtol=1e-5
    )
    # Two replicas holding frames [0, 1] and [2, 3]: the mean of their shares is the loss.
    halves = [
        losses.task_loss_terms("depth", true[s], pred[s], kind, sample_mask=mask[s])
        for s in (slice(0, 2), slice(2, 4))
    ]
    totals = {key: halves[0][key] + halves[1][key] for key in halves[0]}
    shares = [losses.task_loss_from_terms("depth", h, totals, 2, kind) for h in halves]
    np.testing.assert_allclose(float(np.mean(shares)), expected, rtol=1e-5)
    assert float(losses.labelled_amount("depth", terms)) == float(
        ((true > 0) & (mask[:, None, None] > 0)).sum()
    )


def test_masked_cross_entropy_matches_numpy():
    from keras_mtl import losses
    from keras_mtl.tasks import SEMANTIC5_CLASS_WEIGHTS

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, (3, 5, 7)).astype(np.int32)
    labels[2, :, :2] = 255
    logits = rng.normal(size=(3, 5, 7, 5)).astype(np.float32)
    mask = np.array([0.0, 1.0, 1.0], np.float32)
    terms = losses.task_loss_terms(
        "semantic", labels, logits, class_weights=SEMANTIC5_CLASS_WEIGHTS, sample_mask=mask
    )
    expected = _numpy_cross_entropy(labels, logits, mask, SEMANTIC5_CLASS_WEIGHTS)
    np.testing.assert_allclose(
        float(losses.task_loss_from_terms("semantic", terms)), expected, rtol=1e-5
    )


def test_a_batch_without_labels_gives_zero_loss_and_no_gradient():
    import tensorflow as tf

    from keras_mtl import losses

    rng = np.random.default_rng(3)
    logits = tf.Variable(rng.normal(size=(2, 4, 4, 2)).astype(np.float32))
    depth = tf.Variable(rng.uniform(1.0, 9.0, (2, 4, 4, 1)).astype(np.float32))
    labels = rng.integers(0, 2, (2, 4, 4)).astype(np.int32)
    true_depth = rng.uniform(1.0, 9.0, (2, 4, 4)).astype(np.float32)
    none = np.zeros(2, np.float32)
    with tf.GradientTape(persistent=True) as tape:
        motion = losses.task_loss_from_terms(
            "motion", losses.task_loss_terms("motion", labels, logits, sample_mask=none)
        )
        depth_losses = [
            losses.task_loss_from_terms(
                "depth",
                losses.task_loss_terms("depth", true_depth, depth, k, sample_mask=none),
                depth_loss=k,
            )
            for k in ("log_l1", "silog", "smooth_l1")
        ]
    for loss, variable in [(motion, logits)] + [(d, depth) for d in depth_losses]:
        assert float(loss) == 0.0
        gradient = tape.gradient(loss, variable)
        assert gradient is None or not np.any(gradient.numpy()), "no gradient without labels"


# --------------------------------------------------------------------------- weightings


def test_every_registered_method_supports_partial_labels():
    """A later method must take part too (keras_mtl/weighting/base.py says what it must do)."""
    from keras_mtl.weighting import WEIGHTINGS

    refusing = [n for n, m in WEIGHTINGS.items() if not m.supports_partial_labels]
    assert not refusing, f"{refusing}: honour `labelled` and set supports_partial_labels = True"


def test_grad_norm_keeps_an_unlabelled_task_and_measures_it_later():
    from keras_mtl.weighting import GradNormWeighting

    weighting = GradNormWeighting(TASKS3)
    losses = {"depth": 0.9, "semantic": 1.6, "motion": 0.7}
    norms = {"depth": 2.0, "semantic": 0.5, "motion": 0.4}
    weighting.update(losses, norms, labelled=labelled_of(motion=False))
    weights = weighting.loss_weights.numpy()
    np.testing.assert_allclose(weighting.initial_losses.numpy(), [0.9, 1.6, 0.0])
    assert weights[2] == 1.0 and weights[0] != 1.0  # motion kept, depth moved
    np.testing.assert_allclose(weights.sum(), 3.0, rtol=1e-6)
    weighting.update({**losses, "motion": 0.5}, norms, labelled=labelled_of())
    np.testing.assert_allclose(weighting.initial_losses.numpy(), [0.9, 1.6, 0.5])  # measured now


def test_pseudo_grad_norm_starts_an_unlabelled_task_at_its_first_labels():
    from keras_mtl.weighting import PseudoGradNormWeighting

    weighting = PseudoGradNormWeighting(TASKS3)
    losses = {"depth": 0.9, "semantic": 1.6, "motion": 0.7}
    norms = {"depth": 2.0, "semantic": 0.5, "motion": 0.4}
    weighting.update(losses, norms, labelled=labelled_of(motion=False))
    for variable in (weighting.loss_ema_short, weighting.loss_ema_long, weighting.grad_norm_ema):
        assert variable.numpy()[2] == 0.0 and variable.numpy()[0] > 0.0
    assert weighting.loss_weights.numpy()[2] == 1.0
    weighting.update(losses, norms, labelled=labelled_of())
    np.testing.assert_allclose(weighting.loss_ema_long.numpy()[2], 0.7, rtol=1e-6)


def test_uncertainty_adds_no_term_for_an_unlabelled_task():
    import tensorflow as tf

    from keras_mtl.weighting import UncertaintyWeighting

    weighting = UncertaintyWeighting(TASKS3)
    with tf.GradientTape() as tape:
        total = weighting.combine_losses(
            {"depth": 0.9, "semantic": 1.6, "motion": 0.0}, labelled=labelled_of(motion=False)
        )
    gradients = tape.gradient(total, [v.value for v in weighting.log_variances])
    assert float(gradients[0]) != 0.0
    assert gradients[2] is None or float(gradients[2]) == 0.0
    assert list(weighting.task_state_variables()) == list(TASKS3)


def test_dwa_keeps_the_epoch_means_of_a_task_no_batch_had():
    from keras_mtl.weighting import DynamicWeightAverage

    weighting = DynamicWeightAverage(TASKS3)
    weighting.on_epoch_end(0, {"depth": 1.0, "semantic": 2.0, "motion": 0.0})
    weighting.on_epoch_end(1, {"depth": 0.5, "semantic": 1.8, "motion": 0.8})
    # Motion has one recorded epoch: ratio 1, not 0.8 / 0.
    expected = (
        3 * np.exp(np.array([0.5, 0.9, 1.0]) / 2) / np.exp(np.array([0.5, 0.9, 1.0]) / 2).sum()
    )
    np.testing.assert_allclose(weighting.weight_vector().numpy(), expected, rtol=1e-6)
    weighting.on_epoch_end(2, {"depth": 0.4, "semantic": 1.7, "motion": 0.0})
    np.testing.assert_allclose(weighting.last_epoch_losses.numpy(), [0.4, 1.7, 0.8])
    np.testing.assert_allclose(weighting.previous_epoch_losses.numpy(), [0.5, 1.8, 0.0])


def test_pcgrad_ignores_an_unlabelled_task_gradient():
    import tensorflow as tf

    from keras_mtl.weighting import PCGradWeighting

    weighting = PCGradWeighting(TASKS3)
    gradients = {
        "depth": [tf.constant([1.0, 0.0])],
        "semantic": [tf.constant([1.0, 1.0])],
        "motion": [tf.constant([-3.0, -1.0])],  # conflicts with both
    }
    masked = weighting.combine_gradients(gradients, labelled=labelled_of(motion=False))
    np.testing.assert_allclose(masked[0].numpy(), [2.0, 1.0])
    full = weighting.combine_gradients(gradients)
    assert not np.allclose(full[0].numpy(), [2.0, 1.0])


def adam_trainer(method: str, weights, strategy=None, optimizer: str = "adam"):
    import tensorflow as tf

    from keras_mtl.config import WeightingConfig
    from keras_mtl.training import MultiTaskTrainer

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = tiny_model()
        model.set_weights(weights)
        trainer = MultiTaskTrainer(model, method, WeightingConfig(), class_weights=True)
        make = keras.optimizers.Adam(1e-2) if optimizer == "adam" else keras.optimizers.SGD(0.05)
        trainer.compile(optimizer=make, run_eagerly=True)
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def masked_batches(seed: int = 4) -> list:
    """Two batches of 4: the first with motion on frames 0-1 only (one replica's half) and
    depth on 3 frames, the second without any motion label."""
    first, second = tiny_batches(2, batch=4, seed=seed)
    return [
        (*first, masks_of([1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 0, 0])),
        (*second, masks_of([1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0])),
    ]


@pytest.mark.parametrize("method", WEIGHTING_NAMES)
def test_no_method_moves_an_unlabelled_task_state_in_training(method):
    """Every registered method, black box: after a step on a batch without motion labels,
    the motion entries of every per-task state vector and its per-task trainable state are
    what they were (Adam's momentum from the labelled step included)."""
    weights = tiny_model().get_weights()
    trainer = adam_trainer(method, weights)
    batches = masked_batches()
    logs = trainer.train_step(batches[0])  # labelled motion: the state moves
    motion = trainer.task_names.index("motion")
    per_task = [v for v in trainer.weighting.weights if tuple(v.shape) == (3,)]
    before = [v.numpy()[motion] for v in per_task]
    held = [v.numpy() for v in trainer.weighting.task_state_variables().get("motion", [])]
    loss_before = float(logs["loss_motion"])
    logs = trainer.train_step(batches[1])
    assert [v.numpy()[motion] for v in per_task] == before
    for variable, value in zip(
        trainer.weighting.task_state_variables().get("motion", []), held, strict=True
    ):
        np.testing.assert_array_equal(variable.numpy(), value)
    # The logged motion loss is the mean over the batches that had motion labels.
    assert float(logs["loss_motion"]) == pytest.approx(loss_before)
    assert float(logs["loss_depth"]) > 0


def test_a_method_without_partial_support_is_refused():
    from keras_mtl.errors import UserError
    from keras_mtl.weighting import EqualWeighting

    class Legacy(EqualWeighting):
        supports_partial_labels = False

    from keras_mtl.training import MultiTaskTrainer

    trainer = MultiTaskTrainer(tiny_model(), Legacy(TASKS3))
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    with pytest.raises(UserError, match="supports_partial_labels"):
        trainer.train_step(masked_batches()[0])


def test_strict_mode_unchanged_and_full_masks_agree():
    """Without masks the trainer runs today's step; masks of all ones give the same numbers."""
    weights = tiny_model().get_weights()
    batch = tiny_batches(1, batch=4, seed=9)[0]
    results = []
    for with_masks in (False, True):
        trainer = adam_trainer("grad_norm", weights, optimizer="sgd")
        data = (*batch, masks_of([1] * 4, [1] * 4, [1] * 4)) if with_masks else batch
        logs = trainer.train_step(data)
        results.append(
            ([v.numpy() for v in trainer.model.weights], {k: float(v) for k, v in logs.items()})
        )
    for a, b in zip(results[0][0], results[1][0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for key, value in results[0][1].items():
        assert results[1][1][key] == pytest.approx(value, rel=1e-5), key


# --------------------------------------------------------------------------- replicas


def replica_batches() -> list:
    """One batch of 4 (replica 0 gets frames 0-1): motion labelled on replica 0's frames only,
    depth on 3 frames, semantic on none (its state must stay, on both replicas alike)."""
    (batch,) = tiny_batches(1, batch=4, seed=6)
    return [(*batch, masks_of([1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]))]


# The replica check's methods, one per path of the step: a norm-driven update (split backward),
# a loss-level method with trainable per-task state (plain backward, as vanilla's and DWA's
# steps), and gradient surgery on all-reduced task gradients. Pseudo-GradNorm shares
# GradNorm's path; the others are left out to keep the subprocess short (eager
# MirroredStrategy costs seconds per step); their masking is checked on one device above.
REPLICA_METHODS = ("grad_norm", "uncertainty", "pcgrad")


def replica_check() -> dict:
    """One process, 2 logical CPUs: a step on a masked batch, 1 device vs MirroredStrategy(2)."""
    import tensorflow as tf

    from keras_mtl.training import select_strategy

    mirrored = select_strategy(cpu_replicas=2)
    weights = tiny_model().get_weights()
    report = {}
    for method in REPLICA_METHODS:
        states, logged = [], []
        for strategy in (tf.distribute.get_strategy(), mirrored):
            trainer = adam_trainer(method, weights, strategy=strategy, optimizer="sgd")
            dataset = strategy.experimental_distribute_dataset(as_dataset(replica_batches()))
            losses = []
            for batch in dataset:
                logs = strategy.run(trainer.train_step, args=(batch,))
                # Each replica logs its share; their mean is the global-batch value.
                losses.append(
                    [
                        float(np.mean(strategy.experimental_local_results(logs[f"loss_{t}"])))
                        for t in TASKS3
                    ]
                )
            states.append(
                [v.numpy() for v in trainer.model.weights]
                + [np.asarray(v.numpy()) for v in trainer.weighting.weights]
            )
            logged.append(losses)
        diffs = [float(np.max(np.abs(a - b))) for a, b in zip(*states, strict=True)]
        moved = [float(np.max(np.abs(a - b))) for a, b in zip(states[0], weights, strict=False)]
        report[method] = {
            "max_diff": max(diffs),
            "max_move": max(moved),
            "losses": logged,
        }
    return report


@pytest.mark.slow
def test_masked_losses_are_exact_under_replicas():
    report = run_module_check(__file__, "replica-check")
    assert set(report) == set(REPLICA_METHODS)
    for method, numbers in report.items():
        assert numbers["max_move"] > 1e-4, method
        assert numbers["max_diff"] < 1e-5, (method, numbers["max_diff"])
        single, mirrored = (np.array(x) for x in numbers["losses"])
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, err_msg=method)


# --------------------------------------------------------------------------- data and tools


def test_drop_labels_writes_no_file_and_records_the_stems(partial_dataset):
    from data_tools.synthetic import MANIFEST, parse_drop_labels
    from keras_mtl.data import layout

    manifest = json.loads((partial_dataset / MANIFEST).read_text())
    dropped = manifest["dropped_labels"]
    assert manifest["drop_labels"] == {
        "rates": {"motion": 0.5, "depth": 0.25},
        "splits": ["train", "val"],
    }
    assert (len(dropped["train"]["motion"]), len(dropped["train"]["depth"])) == (4, 2)
    assert len(dropped["val"]["motion"]) == 2
    frames = {f.stem: f for f in layout.discover_frames(partial_dataset, "train", labels="partial")}
    assert len(frames) == 8
    for stem, frame in frames.items():
        assert frame.has_label("motion") == (stem not in dropped["train"]["motion"])
        assert frame.has_label("depth") == (stem not in dropped["train"]["depth"])
        assert frame.camera is not None or stem in dropped["train"]["depth"]
    from keras_mtl.errors import UserError

    with pytest.raises(UserError, match="--labels partial"):
        layout.discover_frames(partial_dataset, "train")  # strict: still an error, with a hint
    with pytest.raises(UserError, match="--drop_labels"):
        parse_drop_labels("flow=0.5")
    with pytest.raises(UserError, match="must be in"):
        parse_drop_labels("motion=1.5")


def test_depth_needs_its_camera_and_a_missing_label_folder_is_unlabelled(tiny_dataset, tmp_path):
    from keras_mtl.data import layout
    from keras_mtl.data.pipeline import make_dataset
    from keras_mtl.errors import UserError

    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    camera = sorted((root / "camera" / "train").rglob("*_camera.json"))[0]
    camera.unlink()  # its disparity stays: depth cannot be computed, which is an error
    with pytest.raises(UserError, match="no camera"):
        layout.discover_frames(root, "train", labels="partial")
    shutil.rmtree(root / "disparity")  # no depth label anywhere: every frame unlabelled
    frames = layout.discover_frames(root, "train", labels="partial")
    assert len(frames) == 4 and not any(f.has_label("depth") for f in frames)
    assert layout.scan_split(root, "train", labels="partial").coverage["depth"] == 0
    with pytest.raises(UserError, match="depth on 0 of 4"):
        make_dataset(
            root, "train", img_resize=(HEIGHT, WIDTH), batch_size=2, training=True, labels="partial"
        )
    with pytest.raises(UserError, match="disparity"):
        layout.discover_frames(root, "train")  # strict: the folder is needed


def test_check_reports_label_coverage(partial_dataset, capsys):
    from data_tools import check
    from data_tools.synthetic import MANIFEST

    assert check.main(["--data_path", str(partial_dataset), "--labels", "partial", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == {"train": 8, "val": 4}
    coverage = json.loads(lines[-2])["label_coverage"]
    assert coverage["train"] == {
        "frames": 8,
        "depth": {"labelled": 6, "percent": 75.0},
        "semantic": {"labelled": 8, "percent": 100.0},
        "motion": {"labelled": 4, "percent": 50.0},
    }
    assert coverage["val"]["motion"] == {"labelled": 2, "percent": 50.0}
    assert "train: labels on 8 frames with rgb and flow: depth 6 (75.0%)" in "\n".join(lines)
    # Strict: the frames without labels are problems (exit status 1), coverage still shown.
    assert check.main(["--data_path", str(partial_dataset), "--json"]) == 1
    captured = capsys.readouterr()
    dropped = json.loads((partial_dataset / MANIFEST).read_text())["dropped_labels"]
    lacking = set(dropped["train"]["motion"]) | set(dropped["train"]["depth"])
    assert json.loads(captured.out.strip().splitlines()[-1]) == {
        "train": 8 - len(lacking),
        "val": 2,
    }
    assert "has no motion" in captured.err


def test_pipeline_masks_targets_and_minimum(partial_dataset):
    from data_tools.synthetic import MANIFEST
    from keras_mtl.data.pipeline import list_stems, make_dataset
    from keras_mtl.errors import UserError

    dropped = json.loads((partial_dataset / MANIFEST).read_text())["dropped_labels"]["train"]
    stems = list_stems(partial_dataset, "train", labels="partial")
    dataset = make_dataset(
        partial_dataset,
        "train",
        img_resize=(HEIGHT, WIDTH),
        batch_size=8,
        training=False,
        labels="partial",
    )
    inputs, targets, masks = next(iter(dataset))
    for index, stem in enumerate(stems):
        motion_labelled = stem not in dropped["motion"]
        assert masks["motion"][index] == float(motion_labelled)
        assert masks["depth"][index] == float(stem not in dropped["depth"])
        if not motion_labelled:
            assert np.all(targets["motion"][index].numpy() == 255)  # all ignore
        if stem in dropped["depth"]:
            assert not np.any(targets["depth"][index].numpy())  # all invalid
    with pytest.raises(UserError, match="motion on 4 of 8.*--min_labelled_frames 5"):
        make_dataset(
            partial_dataset,
            "train",
            img_resize=(HEIGHT, WIDTH),
            batch_size=2,
            training=True,
            labels="partial",
            min_labelled_frames=5,
        )
    # A single-task run needs only its own task's labels.
    make_dataset(
        partial_dataset,
        "train",
        img_resize=(HEIGHT, WIDTH),
        batch_size=2,
        training=True,
        labels="partial",
        min_labelled_frames=8,
        trained_tasks=("semantic",),
    )


def test_benchmark_derives_the_dropped_dataset_and_plans_partial_runs(tiny_dataset, tmp_path):
    """benchmarks/partial_labels.py: the dataset of a rate lacks exactly the motion files
    `data_tools.synthetic --drop_labels` would drop; its runs train with --labels partial."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import partial_labels, reproduce_table
    from data_tools.synthetic import dropped_frames, frame_stem
    from keras_mtl.data import layout

    target = tmp_path / "data_motion50"
    manifest = partial_labels.derive_dropped_dataset(tiny_dataset, target, 0.5)
    expected = [frame_stem("train", i)[1] for i in dropped_frames(7, "train", 4, "motion", 0.5)]
    assert manifest["dropped_labels"] == {"train": {"motion": expected}}
    frames = layout.discover_frames(target, "train", labels="partial")
    assert sorted(f.stem for f in frames if not f.has_label("motion")) == sorted(expected)
    assert all(f.has_label("depth") and f.has_label("semantic") for f in frames)
    assert len(layout.discover_frames(target, "val")) == 2  # val keeps every label
    specs = partial_labels.plan(
        reproduce_table.PRESETS["tiny"], ["vanilla"], [0], {0.0: tiny_dataset, 0.5: target}, 1
    )
    assert [s["name"] for s in specs] == ["vanilla_full_s0", "vanilla_motion50_s0"]
    assert "labels" not in specs[0]["overrides"]  # full labels: today's strict training
    assert specs[1]["overrides"]["labels"] == "partial"
    assert specs[1]["overrides"]["data_path"] == str(target)

    # The full-label run is reproduce_table's run of that seed: reused only when it matches.
    table_runs, runs_dir = tmp_path / "table_runs", tmp_path / "runs"
    source = table_runs / reproduce_table.run_name("vanilla", 0)
    source.mkdir(parents=True)
    record = {"name": "vanilla_s0", "overrides": specs[0]["overrides"], "final": {"x": 1.0}}
    (source / reproduce_table.RESULT_NAME).write_text(json.dumps(record))
    assert partial_labels.reuse_full_results(specs, runs_dir, table_runs) == ["vanilla_full_s0"]
    copied = json.loads((runs_dir / "vanilla_full_s0" / reproduce_table.RESULT_NAME).read_text())
    assert copied["final"] == {"x": 1.0} and copied["reused_from"] == str(source)
    assert partial_labels.reuse_full_results(specs, runs_dir, table_runs) == []  # already there
    record["overrides"] = {**record["overrides"], "epochs": 99}  # other settings: not reused
    (source / reproduce_table.RESULT_NAME).write_text(json.dumps(record))
    assert partial_labels.reuse_full_results(specs, tmp_path / "other", table_runs) == []


def train_split_losses(model, root: Path) -> dict[str, float]:
    """Masked per-task losses of `model` over the 8 training frames (no augmentation)."""
    from keras_mtl import losses
    from keras_mtl.data.pipeline import make_dataset

    dataset = make_dataset(
        root, "train", img_resize=(HEIGHT, WIDTH), batch_size=8, training=False, labels="partial"
    )
    inputs, targets, masks = next(iter(dataset))
    outputs = model(inputs, training=False)
    return {
        task: float(
            losses.task_loss_from_terms(
                task,
                losses.task_loss_terms(
                    task, targets[task], outputs[task], "log_l1", sample_mask=masks[task]
                ),
                depth_loss="log_l1",
            )
        )
        for task in TASKS3
    }


@pytest.mark.slow
def test_training_with_half_the_motion_labels_beats_its_first_loss(partial_dataset, tmp_path):
    """run_training with --labels partial (tiny network, graph mode) lowers every task's loss
    over the training frames, motion's included (half its labels dropped); then the
    evaluation's motion score over the labelled val frames equals a strict evaluation of just
    those frames."""
    from data_tools.synthetic import MANIFEST
    from keras_mtl.checkpoints import load_model
    from keras_mtl.config import load_config
    from keras_mtl.evaluation import evaluate, format_table, format_training_results
    from keras_mtl.training import run_training

    config = load_config(
        None,
        {
            "data_path": str(partial_dataset),
            "save_path": str(tmp_path / "run"),
            "labels": "partial",
            "min_labelled_frames": 4,
            "multi_task_type": "grad_norm",
            "img_resize": (HEIGHT, WIDTH),
            "output_size": (HEIGHT, WIDTH),
            "batch_size": 2,
            "epochs": 3,
            "steps_per_epoch": 6,
            "lr": 1e-2,
            "warmup_epochs": 0,
            "lr_milestones": (),
        },
    )
    before = train_split_losses(tiny_model(), partial_dataset)  # run_training's initial model
    results = run_training(config, verbose=0, model_fn=tiny_model)
    after = train_split_losses(load_model(tmp_path / "run" / "checkpoint.keras"), partial_dataset)
    for task in TASKS3:
        assert after[task] < before[task], (task, before, after)
    assert np.isfinite(results["final"]["motion_miou"])
    assert results["labelled_frames"]["train"] == {
        "frames": 8,
        "depth": 6,
        "semantic": 8,
        "motion": 4,
    }
    assert "val: frames with labels: depth 3, semantic 4, motion 2 of 4" in (
        format_training_results(results)
    )

    # Evaluation: motion scored over the 2 val frames that have it, and said so.
    model = str(tmp_path / "run" / "model_best.keras")
    partial = evaluate(
        str(partial_dataset),
        model,
        (HEIGHT, WIDTH),
        (HEIGHT, WIDTH),
        labels="partial",
        progress=False,
    )
    dropped = json.loads((partial_dataset / MANIFEST).read_text())["dropped_labels"]["val"]
    depth_frames = 4 - len(dropped["depth"])  # 3: the val split lost a quarter of depth too
    assert partial["labelled_frames"] == {"depth": depth_frames, "semantic": 4, "motion": 2}
    assert "motion 2 of 4" in format_table(partial)
    subset = tmp_path / "labelled_only"
    shutil.copytree(partial_dataset, subset)
    for stem in dropped["motion"]:
        for path in (subset / "leftImg8bit" / "val").rglob(f"{stem}_leftImg8bit.png"):
            path.unlink()
    strict = evaluate(str(subset), model, (HEIGHT, WIDTH), (HEIGHT, WIDTH), progress=False)
    assert strict["num_frames"] == 2
    assert partial["motion_miou"] == pytest.approx(strict["motion_miou"], abs=1e-4)


if __name__ == "__main__":
    if sys.argv[1:] == ["replica-check"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(replica_check()))
