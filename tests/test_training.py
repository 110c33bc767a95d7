"""Trainer: gradient split, per-task norms, every weighting, replicas, history, resume, NaN.

Most tests use `tiny_model`, a few-layer network that follows the model contract of
`keras_mtl.models` (inputs flow/rgb, outputs depth/semantic/motion, the SHARED_FEATURES_LAYER
and LAST_SHARED_LAYER handles, a stride-2 shortcut into every decoder, and its recorded
`shared_trunk`): the trainer's logic does not depend on the network's size, and eager steps on
it take milliseconds. One end-to-end test runs the real network on the synthetic dataset.

Run as a script (`python tests/test_training.py replica-check`) it does the replica-equivalence
check in a process whose CPU is split into 2 logical devices.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from conftest import run_module_check

from keras_mtl.models import LAST_SHARED_LAYER, SHARED_FEATURES_LAYER, SharedTrunk  # noqa: E402
from keras_mtl.weighting import WEIGHTING_NAMES  # noqa: E402

HEIGHT, WIDTH = 32, 64


@keras.saving.register_keras_serializable(package="keras_mtl_tests")
class TinyNet(keras.Model):
    """A small functional network following the `keras_mtl.models` contract (no BN, no dropout).

    Like `MultiTaskNet`, it builds its graph in `__init__` and records where its trunk hands
    off to the heads (the stride-2 shortcut `fuse` and the shared features), so a saved trainer
    holding it loads with its split.
    """

    def __init__(self, **kwargs) -> None:
        flow = keras.Input((HEIGHT, WIDTH, 3), name="flow")
        rgb = keras.Input((HEIGHT, WIDTH, 3), name="rgb")
        conv = keras.layers.Conv2D
        flow_x = conv(4, 3, strides=2, padding="same", activation="relu", name="fs")(flow)
        rgb_x = conv(4, 3, strides=2, padding="same", activation="relu", name="rs")(rgb)
        stride2 = keras.layers.Concatenate(name="fuse")([flow_x, rgb_x])
        x = conv(8, 3, strides=2, padding="same", activation="relu", name="e1")(stride2)
        x = conv(8, 1, name=LAST_SHARED_LAYER)(x)
        features = keras.layers.Activation("relu", name=SHARED_FEATURES_LAYER)(x)
        outputs = {}
        for task, channels in (("depth", 1), ("semantic", 5), ("motion", 2)):
            h = conv(6, 3, padding="same", activation="relu", name=f"{task}_a")(features)
            h = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{task}_up1")(h)
            h = keras.layers.Concatenate(name=f"{task}_cat")([h, stride2])
            h = conv(channels, 1, name=f"{task}_head")(h)
            outputs[task] = keras.layers.UpSampling2D(2, interpolation="bilinear", name=task)(h)
        kwargs.setdefault("name", "tiny_net")
        super().__init__({"flow": flow, "rgb": rgb}, outputs, **kwargs)
        self.shared_trunk = SharedTrunk(output_layers=("fuse", SHARED_FEATURES_LAYER))

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable}


def tiny_model(config=None, seed: int = 0) -> TinyNet:
    """A seeded `TinyNet` (usable as `model_fn`: the config is not read)."""
    keras.utils.set_random_seed(seed)
    return TinyNet()


def tiny_batches(count: int = 1, batch: int = 4, seed: int = 0):
    """Numpy batches with invalid depth and ignored labels in uneven places."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        inputs = {
            name: rng.normal(size=(batch, HEIGHT, WIDTH, 3)).astype(np.float32)
            for name in ("flow", "rgb")
        }
        depth = rng.uniform(2.0, 6.0, size=(batch, HEIGHT, WIDTH, 1)).astype(np.float32)
        depth[0, : HEIGHT // 2] = 0.0
        semantic = rng.integers(0, 5, size=(batch, HEIGHT, WIDTH)).astype(np.int32)
        semantic[1, :, : WIDTH // 3] = 255
        motion = (inputs["flow"][..., 0] > 0.5).astype(np.int32)
        batches.append((inputs, {"depth": depth, "semantic": semantic, "motion": motion}))
    return batches


def as_dataset(batches):
    import tensorflow as tf

    def gen():
        yield from batches

    spec = tf.nest.map_structure(
        lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype)), batches[0]
    )
    return tf.data.Dataset.from_generator(gen, output_signature=spec).apply(
        tf.data.experimental.assert_cardinality(len(batches))
    )


def tiny_config(method: str, **overrides):
    from keras_mtl.config import load_config

    values = {
        "multi_task_type": method,
        "img_resize": (HEIGHT, WIDTH),
        "output_size": (HEIGHT, WIDTH),
        "warmup_epochs": 0,
        "lr_milestones": (),
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "batch_size": 4,
        "epochs": 2,
    }
    values.update(overrides)
    return load_config(None, values)


def record_grad_norms(trainer) -> list:
    """Wraps the trainer's `weighting.update` so that it records the per-task gradient norms
    of every step (sorted by task name); returns the list it fills."""
    norms = []
    update = trainer.weighting.update

    def recording_update(losses, grad_norms=None):
        if grad_norms is not None:
            norms.append([float(grad_norms[t]) for t in sorted(grad_norms)])
        return update(losses, grad_norms)

    trainer.weighting.update = recording_update
    return norms


def sgd_trainer(method: str, weights, weight_decay: float = 1e-3, strategy=None):
    """A trainer on `tiny_model` with plain SGD (Adam's first step hides gradient scale errors)."""
    import tensorflow as tf

    from keras_mtl.config import WeightingConfig
    from keras_mtl.training import MultiTaskTrainer

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = tiny_model()
        model.set_weights(weights)
        trainer = MultiTaskTrainer(
            model, method, WeightingConfig(), weight_decay=weight_decay, class_weights=True
        )
        trainer.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


@pytest.fixture(scope="module")
def initial_weights():
    return tiny_model().get_weights()


# --------------------------------------------------------------------------- unit pieces


def test_schedule_warmup_and_milestones():
    from keras_mtl.training import WarmupMultiStepSchedule, make_schedule

    schedule = WarmupMultiStepSchedule(1e-3, warmup_steps=4, milestones=[10, 20], gamma=0.5)
    got = [float(schedule(step)) for step in (0, 1, 3, 9, 10, 19, 20, 50)]
    expected = [2.5e-4, 5e-4, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    config = tiny_config("vanilla", epochs=10, warmup_epochs=1, lr_milestones=(0.4, 0.8), lr=1.0)
    built = make_schedule(config, steps_per_epoch=3)
    assert built.warmup_steps == 3 and built.milestones == (12, 24)


def test_select_strategy_rejects_unknown_gpu():
    from keras_mtl.errors import UserError
    from keras_mtl.training import select_strategy

    with pytest.raises(UserError, match=r"--gpus 0 1: no GPU with id 0, 1; available GPU ids"):
        select_strategy(gpus=(0, 1))


def test_split_reads_the_trunk_recorded_by_the_real_model():
    from keras_mtl.models import build_multitask_model
    from keras_mtl.training import MultiTaskTrainer, SharedSplit

    model = build_multitask_model((64, 128), width_mult=0.25)
    split = SharedSplit.from_model(model, ["depth", "semantic", "motion"])
    producers = ["fuse.project_bn", "encoder.block17.project_bn"]
    assert len(split.boundary) == len(producers)
    for tensor, name in zip(split.boundary, producers, strict=True):
        assert tensor is model.get_layer(name).output
    covered = split.shared_variables + sum(split.task_variables.values(), [])
    assert sorted(id(v) for v in covered) == sorted(id(v) for v in model.trainable_variables)
    # The depth decoder's layers and its output layer (the log head's learned offset).
    assert all(
        v.path.startswith(("depth_decoder", "depth/")) for v in split.task_variables["depth"]
    )
    trainer = MultiTaskTrainer(model, "pseudo_grad_norm")
    features = trainer.backward.split.boundary[trainer.backward.features_index]
    assert features is model.get_layer(SHARED_FEATURES_LAYER).output


def test_model_without_recorded_trunk_trains_without_split(initial_weights):
    """A network that records no trunk: norms beside a plain backward pass; PCGrad refused."""
    from keras_mtl.training import MultiTaskTrainer

    tiny = tiny_model()
    plain = keras.Model(tiny.input, tiny.output)  # the same graph, no `shared_trunk`
    trainer = MultiTaskTrainer(plain, "grad_norm")
    assert trainer.backward.split is None and trainer.backward.plain_view is not None
    with pytest.raises(ValueError, match="PCGradWeighting needs a shared trunk"):
        MultiTaskTrainer(plain, "pcgrad")


# --------------------------------------------------------------------------- train step


@pytest.mark.parametrize("method", ["grad_norm", "pseudo_grad_norm", "uncertainty"])
def test_split_backward_equals_plain_backward(method, initial_weights):
    """With initial weights 1 (and s = 0) a first step equals vanilla's plain backward pass."""
    batch = tiny_batches()[0]
    reference = sgd_trainer("vanilla", initial_weights)
    reference.train_step(batch)
    trainer = sgd_trainer(method, initial_weights)
    assert trainer.backward.split is not None or method == "uncertainty"
    trainer.train_step(batch)
    for got, want in zip(trainer.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["grad_norm", "pseudo_grad_norm"])
def test_grad_norms_match_direct_gradients(method, initial_weights):
    import tensorflow as tf

    from keras_mtl import losses as loss_lib
    from keras_mtl.training import class_weights_for

    inputs, targets = tiny_batches()[0]
    trainer = sgd_trainer(method, initial_weights)
    model = trainer.model
    view = keras.Model(model.input, [model.output, model.get_layer(SHARED_FEATURES_LAYER).output])
    kernel = model.get_layer(LAST_SHARED_LAYER).kernel
    expected = {}
    with tf.GradientTape(persistent=True) as tape:
        outputs, features = view(inputs, training=True)
        task_losses = {
            "depth": loss_lib.depth_loss(targets["depth"], outputs["depth"], trainer.depth_loss),
            "semantic": loss_lib.cross_entropy_ignore(
                targets["semantic"], outputs["semantic"], class_weights_for("semantic", 5, True)
            ),
            "motion": loss_lib.cross_entropy_ignore(
                targets["motion"], outputs["motion"], class_weights_for("motion", 5, True)
            ),
        }
    for task, value in task_losses.items():
        source = kernel if method == "grad_norm" else features
        expected[task] = float(tf.norm(tape.gradient(value, source)))
    recorded = {}
    original_update = trainer.weighting.update

    def recording_update(losses, grad_norms=None):
        recorded.update({t: float(v) for t, v in grad_norms.items()})
        recorded.update({f"loss_{t}": float(v) for t, v in losses.items()})
        return original_update(losses, grad_norms)

    trainer.weighting.update = recording_update
    trainer.train_step((inputs, targets))
    for task in task_losses:
        assert recorded[task] == pytest.approx(expected[task], rel=1e-4)
        assert recorded[f"loss_{task}"] == pytest.approx(float(task_losses[task]), rel=1e-5)


@pytest.mark.parametrize("method", WEIGHTING_NAMES)
def test_every_weighting_trains_and_lowers_the_loss(method):
    from keras_mtl.training import build_trainer

    batches = tiny_batches(2, seed=1)
    config = tiny_config(method, lr=1e-2)
    trainer = build_trainer(config, run_eagerly=True, model_fn=tiny_model)

    def unweighted_total():
        logs = trainer.evaluate(as_dataset(batches), verbose=0, return_dict=True)
        return sum(logs[f"loss_{t}"] for t in trainer.task_names)

    before = unweighted_total()
    history = trainer.fit(as_dataset(batches).repeat(), steps_per_epoch=2, epochs=3, verbose=0)
    after = unweighted_total()
    assert after < 0.9 * before
    for task in trainer.task_names:
        weights = history.history[f"weight_{task}"]
        assert len(weights) == 3 and all(np.isfinite(weights))
    if method in ("grad_norm", "pseudo_grad_norm", "uncertainty"):
        assert history.history["weight_depth"][-1] != pytest.approx(1.0, abs=1e-6)
    if method in ("grad_norm", "pseudo_grad_norm"):
        total = sum(history.history[f"weight_{t}"][-1] for t in trainer.task_names)
        assert total == pytest.approx(3.0, rel=1e-4)


def test_pcgrad_projects_conflicting_task_gradients(initial_weights):
    """PCGrad's update differs from vanilla's exactly on the shared trunk."""
    batch = tiny_batches()[0]
    vanilla = sgd_trainer("vanilla", initial_weights)
    vanilla.train_step(batch)
    pcgrad = sgd_trainer("pcgrad", initial_weights)
    pcgrad.train_step(batch)
    shared = {id(v) for v in pcgrad.backward.split.shared_variables}
    differs = []
    for variable, reference in zip(
        pcgrad.model.trainable_variables, vanilla.model.trainable_variables, strict=True
    ):
        same = np.allclose(variable.numpy(), reference.numpy(), rtol=1e-4, atol=1e-6)
        if id(variable) not in shared:
            assert same, variable.path  # task heads get their own task's gradient
        differs.append(not same)
    assert any(differs)


# --------------------------------------------------------------------------- replicas


def replica_check() -> dict:
    """One process, 2 logical CPUs: 2 SGD steps on 1 device vs MirroredStrategy(2)."""
    import tensorflow as tf

    from keras_mtl.training import select_strategy

    mirrored = select_strategy(cpu_replicas=2)
    batches = tiny_batches(2, batch=4, seed=5)
    weights = tiny_model().get_weights()
    report = {}
    for method in WEIGHTING_NAMES:
        results, recorded = [], []
        for strategy in (tf.distribute.get_strategy(), mirrored):
            trainer = sgd_trainer(method, weights, strategy=strategy)
            norms = record_grad_norms(trainer)
            dataset = strategy.experimental_distribute_dataset(as_dataset(batches))
            for batch in dataset:
                strategy.run(trainer.train_step, args=(batch,))
            state = [v.numpy() for v in trainer.model.weights] + [
                np.asarray(v.numpy()) for v in trainer.weighting.weights
            ]
            results.append(state)
            recorded.append(norms)
        if recorded[0]:
            # Every replica (2 per step) must see the single device's norms.
            single = np.array(recorded[0])
            replicas = np.array(recorded[1]).reshape(len(single), 2, -1)
            norm_diff = float(np.max(np.abs(replicas - single[:, None]) / single[:, None]))
        else:
            norm_diff = 0.0
        diffs = [float(np.max(np.abs(a - b))) for a, b in zip(*results, strict=True)]
        moved = [float(np.max(np.abs(a - b))) for a, b in zip(results[0], weights, strict=False)]
        report[method] = {
            "max_diff": max(diffs),
            "max_move": max(moved),
            "norm_rel_diff": norm_diff,
        }
    # An fp16 overflow on replica 1 only must make both replicas skip the step.
    from keras_mtl.training import overflow_on_any_replica

    def replica_gradients(finite_everywhere: bool):
        def replica_fn():
            context = tf.distribute.get_replica_context()
            bad = tf.logical_and(
                tf.equal(context.replica_id_in_sync_group, 1), not finite_everywhere
            )
            gradient = tf.where(bad, float("inf"), 1.0) * tf.ones([3])
            shared = overflow_on_any_replica([gradient, None, tf.ones([2])], context)
            return [tf.reduce_all(tf.math.is_finite(g)) for g in shared if g is not None]

        results = mirrored.run(tf.function(replica_fn))
        return [[bool(t) for t in mirrored.experimental_local_results(r)] for r in results]

    report["overflow"] = {"one": replica_gradients(False), "none": replica_gradients(True)}

    # Keras' evaluate on 2 replicas: the metrics of the whole split, not a mean over replicas.
    evaluations = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        trainer = sgd_trainer("vanilla", weights, strategy=strategy)
        logs = trainer.evaluate(
            as_dataset(tiny_batches(2, batch=4, seed=7)), return_dict=True, verbose=0
        )
        evaluations.append({name: float(value) for name, value in logs.items()})
    report["evaluate"] = {"single": evaluations[0], "mirrored": evaluations[1]}
    return report


@pytest.mark.slow
def test_two_replicas_equal_one_device():
    report = run_module_check(__file__, "replica-check")
    evaluation = report.pop("evaluate")
    overflow = report.pop("overflow")
    assert overflow["one"] == [[False, False], [False, False]]  # both replicas skip
    assert overflow["none"] == [[True, True], [True, True]]
    assert set(report) == set(WEIGHTING_NAMES)
    single, mirrored = evaluation["single"], evaluation["mirrored"]
    assert {"semantic_miou", "motion_miou", "depth_ard_percent", "loss"} <= set(single)
    for name, value in single.items():
        np.testing.assert_allclose(mirrored[name], value, rtol=1e-5, err_msg=name)
    for method, numbers in report.items():
        assert numbers["max_move"] > 1e-4, method  # the step did something
        assert numbers["max_diff"] < 2e-5, (method, numbers)
        assert numbers["norm_rel_diff"] < 1e-5, (method, numbers)


def test_pivot_metric_of_a_single_task_run_is_its_own_task_metric():
    from keras_mtl.config import TrainConfig
    from keras_mtl.errors import UserError
    from keras_mtl.training import pivot_metric_of

    assert pivot_metric_of(TrainConfig()) == "motion_miou"
    assert pivot_metric_of(TrainConfig(single_task="depth")) == "depth_ard_percent"
    assert pivot_metric_of(TrainConfig(single_task="semantic")) == "semantic_miou"
    assert pivot_metric_of(TrainConfig(single_task="depth", pivot_metric="loss")) == "loss"
    with pytest.raises(UserError, match=r"pivot_metric 'semantic_miou': this run does not"):
        pivot_metric_of(TrainConfig(single_task="depth", pivot_metric="semantic_miou"))
    with pytest.raises(UserError, match="depth_abs_rel"):
        pivot_metric_of(TrainConfig(pivot_metric="miou"))


# --------------------------------------------------------------------------- run loop


HISTORY_COLUMNS = [
    "epoch",
    "loss",
    "loss_depth",
    "loss_semantic",
    "loss_motion",
    "weight_depth",
    "weight_semantic",
    "weight_motion",
    "lr",
    "val_loss",
    "val_loss_depth",
    "val_loss_semantic",
    "val_loss_motion",
    "val_depth_ard_percent",
    "val_depth_abs_rel",
    "val_semantic_miou",
    "val_motion_miou",
]


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames or []), list(reader)


def test_history_and_resume_equal_uninterrupted_run(tmp_path):
    from keras_mtl.checkpoints import load_model as load_functional_model
    from keras_mtl.config import apply_overrides
    from keras_mtl.errors import UserError
    from keras_mtl.training import run_training

    batches = tiny_batches(2, seed=2)
    datasets = (as_dataset(batches), as_dataset(tiny_batches(1, seed=3)))
    straight = tiny_config("grad_norm", save_path=str(tmp_path / "straight"), epochs=2)
    run_training(straight, datasets=datasets, run_eagerly=True, verbose=0, model_fn=tiny_model)

    resumed = apply_overrides(straight, {"save_path": str(tmp_path / "resumed"), "epochs": 1})
    with pytest.raises(UserError, match="--resume: nothing to resume"):
        run_training(apply_overrides(resumed, {"resume": True}), datasets=datasets)
    run_training(resumed, datasets=datasets, run_eagerly=True, verbose=0, model_fn=tiny_model)
    history = tmp_path / "resumed" / "history.csv"
    # A run killed after writing epoch 2's history row but before its checkpoint.
    with history.open("a") as stream:
        stream.write("2" + ",0" * (len(HISTORY_COLUMNS) - 1) + "\n")
    resumed = apply_overrides(resumed, {"epochs": 2, "resume": True})
    results = run_training(
        resumed, datasets=datasets, run_eagerly=True, verbose=0, model_fn=tiny_model
    )

    columns, rows_straight = read_rows(tmp_path / "straight" / "history.csv")
    columns_resumed, rows_resumed = read_rows(history)
    assert columns == HISTORY_COLUMNS and columns_resumed == HISTORY_COLUMNS
    assert [r["epoch"] for r in rows_resumed] == ["1", "2"]
    for row_a, row_b in zip(rows_straight, rows_resumed, strict=True):
        for column in HISTORY_COLUMNS:
            assert float(row_a[column]) == pytest.approx(float(row_b[column]), rel=1e-4), column
    assert float(rows_straight[1]["weight_depth"]) != pytest.approx(1.0, abs=1e-6)
    assert results["epochs"] == 2 and "motion_miou" in results["final"]
    for name in ("checkpoint.keras", "model_best.keras", "config.yaml"):
        assert (tmp_path / "resumed" / name).is_file()
    assert any((tmp_path / "resumed" / "logs").rglob("*tfevents*"))
    model_a = load_functional_model(tmp_path / "straight" / "checkpoint.keras")
    model_b = load_functional_model(tmp_path / "resumed" / "checkpoint.keras")
    for a, b in zip(model_a.get_weights(), model_b.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    best = load_functional_model(tmp_path / "resumed" / "model_best.keras")
    assert sorted(best.output) == ["depth", "motion", "semantic"]

    # The summary: per-class IoU of the last validation epoch, the files written, results.json.
    run_dir = tmp_path / "resumed"
    assert set(results) == {"final", "best", "epochs", "per_class_iou", "files"}
    assert results["best"]["epoch"] in (1, 2)
    per_class = results["per_class_iou"]
    assert list(per_class["semantic"]) == ["road", "sky", "pedestrian", "vehicle", "background"]
    assert list(per_class["motion"]) == ["static", "moving"]
    for task in ("semantic", "motion"):
        mean = np.mean(list(per_class[task].values()))
        assert mean == pytest.approx(results["final"][f"{task}_miou"], abs=1e-3)
    names = ["config.yaml", "checkpoint.keras", "model_best.keras", "history.csv", "logs"]
    names += ["predictions.png", "results.json"]
    assert results["files"] == [str(run_dir / name) for name in names]
    assert json.loads((run_dir / "results.json").read_text()) == results
    import tensorflow as tf

    picture = tf.io.decode_png((run_dir / "predictions.png").read_bytes()).numpy()
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 0
    # A resumed run with nothing left to train validates nothing: no per-class IoU.
    again = run_training(
        resumed, datasets=datasets, run_eagerly=True, verbose=0, model_fn=tiny_model
    )
    assert again["per_class_iou"] == {} and again["final"] == results["final"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from keras_mtl.errors import UserError
    from keras_mtl.training import MultiTaskTrainer, run_training

    good, bad = tiny_batches(2, seed=4)
    bad[1]["depth"][:] = np.inf  # the second epoch's batch blows up the depth loss
    datasets = (as_dataset([good, bad]), as_dataset([good]))
    config = tiny_config("vanilla", save_path=str(tmp_path), epochs=3, steps_per_epoch=1)
    with pytest.raises(UserError, match=r"the depth loss became (nan|inf) at epoch 2"):
        run_training(config, datasets=datasets, run_eagerly=True, verbose=0, model_fn=tiny_model)
    _, rows = read_rows(tmp_path / "history.csv")
    assert [r["epoch"] for r in rows] == ["1"]
    checkpoint = keras.saving.load_model(tmp_path / "checkpoint.keras")
    assert isinstance(checkpoint, MultiTaskTrainer)
    assert checkpoint.backward.split is None  # vanilla: a plain backward pass
    assert int(checkpoint.epoch_counter.numpy()) == 1
    assert all(np.all(np.isfinite(w)) for w in checkpoint.model.get_weights())


@pytest.mark.slow
def test_real_network_on_synthetic_data(tiny_dataset, tmp_path):
    from keras_mtl.checkpoints import load_model as load_functional_model
    from keras_mtl.config import load_config
    from keras_mtl.training import run_training

    config = load_config(
        None,
        {
            "data_path": str(tiny_dataset),
            "save_path": str(tmp_path),
            "multi_task_type": "pseudo_grad_norm",
            "img_resize": (64, 128),
            "output_size": (64, 128),
            "width_mult": 0.25,
            "batch_size": 2,
            "epochs": 1,
            "steps_per_epoch": 2,
            "val_steps": 1,
        },
    )
    results = run_training(config, run_eagerly=True, verbose=0)
    assert set(results["final"]) >= {
        "depth_ard_percent",
        "depth_abs_rel",
        "semantic_miou",
        "motion_miou",
    }
    model = load_functional_model(tmp_path / "checkpoint.keras")
    assert model.name == "multi_task_net"


if __name__ == "__main__":
    if sys.argv[1:] == ["replica-check"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(replica_check()))
