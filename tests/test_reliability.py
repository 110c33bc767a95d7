"""A run never silently loses or corrupts results: the rows of docs/reliability.md.

Divergence guard, bad frames in every tool, the run folder's lock, earlier results and
`--overwrite`, temp files of interrupted writes, and exact resume (after kill -9 and after a
crash mid-epoch, with shuffling, augmentation and dropout on).

Most runs use `DropoutNet`, a few-layer network on the model contract of `keras_mtl.models`
with channel dropout like the real decoders (the guard, the folder and the resume logic do not
depend on the network's size), on copies of the session's tiny synthetic dataset at 32x64.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.config import apply_overrides, load_config
from keras_mtl.errors import UserError, bad_input_report, run_cli
from keras_mtl.training import LOCK_NAME, RunLock, run_training

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HEIGHT, WIDTH = 32, 64

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed"),
    # One worker: the reference run (a module fixture) is trained once.
    pytest.mark.xdist_group("reliability"),
]


@keras.saving.register_keras_serializable(package="keras_mtl_reliability_tests")
class DropoutNet(keras.Model):
    """Flow + RGB -> depth, semantic, motion through one conv and channel dropout."""

    def __init__(self, **kwargs) -> None:
        flow = keras.Input((HEIGHT, WIDTH, 3), name="flow")
        rgb = keras.Input((HEIGHT, WIDTH, 3), name="rgb")
        x = keras.layers.Concatenate(name="inputs")([flow, rgb])
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(x)
        x = keras.layers.SpatialDropout2D(0.3, name="dropout")(x)
        outputs = {}
        for task, channels in (("depth", 1), ("semantic", 5), ("motion", 2)):
            head = keras.layers.Conv2D(channels, 1, name=f"{task}_head")(x)
            outputs[task] = keras.layers.UpSampling2D(2, interpolation="bilinear", name=task)(head)
        kwargs.setdefault("name", "dropout_net")
        super().__init__({"flow": flow, "rgb": rgb}, outputs, **kwargs)

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable}


def dropout_net(config=None) -> DropoutNet:
    """`model_fn` of the runs here (the config is not read)."""
    return DropoutNet()


def run_config(data: Path, save_path: Path, **overrides):
    """A small run on `data`: shuffling, augmentation and dropout on, 2 epochs of 2 steps."""
    values = {
        "data_path": str(data),
        "save_path": str(save_path),
        "img_resize": (HEIGHT, WIDTH),
        "output_size": (HEIGHT, WIDTH),
        "batch_size": 2,
        "epochs": 2,
        "lr": 3e-3,
        "warmup_epochs": 0,
        "lr_milestones": (0.5,),
        "multi_task_type": "uncertainty",
        "depth_init": 10.0,
        "seed": 3,
    }
    values.update(overrides)
    return load_config(None, values)


def train(config, **kwargs) -> dict:
    return run_training(config, run_eagerly=True, verbose=0, model_fn=dropout_net, **kwargs)


def corrupt_inside(path: Path) -> None:
    """Keeps the PNG header and end marker, zeroes the compressed data: only decoding finds it."""
    data = bytearray(path.read_bytes())
    data[41:-12] = bytes(len(data) - 53)
    path.write_bytes(bytes(data))


def label_file(root: Path, split: str, index: int = 0) -> Path:
    return sorted((root / "gtFine" / split).rglob("*_gtFine_labelTrainIds.png"))[index]


@pytest.fixture()
def data(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny dataset (4 train, 2 val frames)."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "data"))


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> content)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checkpoint_state(path: Path) -> tuple[int, list[np.ndarray]]:
    """(epoch, every saved variable) of a trainer checkpoint: network, weighting, optimizer.

    (Dropout's seed generators are not saved: the trainer reseeds them from the step.)
    """
    trainer = keras.saving.load_model(path)
    variables = [np.asarray(v) for v in trainer.weights]
    variables += [np.asarray(v) for v in trainer.optimizer.variables]
    return int(trainer.epoch_counter.numpy()), variables


def history_rows(folder: Path) -> list[str]:
    return (folder / "history.csv").read_text().splitlines()


@pytest.fixture(scope="module")
def deterministic_ops():
    """Deterministic TensorFlow ops for this module's runs (restored afterwards)."""
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was_enabled:
        tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset: Path, tmp_path_factory, deterministic_ops) -> Path:
    """A 2-epoch run without interruption: the reference every resumed run must equal."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(run_config(tiny_dataset, run, val_steps=1))
    return run


# ------------------------------------------------------------------------- divergence guard


class PoisonValidation(keras.callbacks.Callback):
    """Turns the validation targets of epoch `epoch` (0-based) and later infinite."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch
        self.on = False

    def on_epoch_begin(self, epoch, logs=None):
        self.on = epoch >= self.epoch


def in_memory_datasets(poison: PoisonValidation):
    """(train, val) at 32x64; validation depth targets become inf while `poison.on`."""
    rng = np.random.default_rng(0)
    inputs = {k: rng.normal(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32) for k in ("flow", "rgb")}
    targets = {
        "depth": rng.uniform(2, 6, (2, HEIGHT, WIDTH, 1)).astype(np.float32),
        "semantic": rng.integers(0, 5, (2, HEIGHT, WIDTH)).astype(np.int32),
        "motion": rng.integers(0, 2, (2, HEIGHT, WIDTH)).astype(np.int32),
    }
    spec = tf.nest.map_structure(
        lambda a: tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)), (inputs, targets)
    )

    def validation():
        depth = np.full_like(targets["depth"], np.inf) if poison.on else targets["depth"]
        yield inputs, {**targets, "depth": depth}

    train_ds = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
    val_ds = tf.data.Dataset.from_generator(validation, output_signature=spec)
    return train_ds, val_ds


def test_nan_validation_metrics_stop_the_run_and_keep_the_last_finite_files(tmp_path):
    """Issue case 1: training stays finite, validation does not."""
    run = tmp_path / "run"
    poison = PoisonValidation(epoch=1)
    config = run_config(tmp_path, run, steps_per_epoch=2)
    with pytest.raises(UserError) as info:
        train(config, datasets=in_memory_datasets(poison), callbacks=[poison])
    message = str(info.value)
    assert message.startswith("training stopped: the validation ")
    assert "became nan in the validation of epoch 2" in message or "became inf in" in message
    assert f"the files in {run} are those of epoch 1, the last finite one" in message
    assert len(history_rows(run)) == 2  # header + epoch 1
    epoch, variables = checkpoint_state(run / "checkpoint.keras")
    assert epoch == 1 and all(np.all(np.isfinite(v)) for v in variables if v.dtype.kind == "f")
    best = keras.saving.load_model(run / "model_best.keras")
    assert all(np.all(np.isfinite(w)) for w in best.get_weights())
    assert not (run / "results.json").exists() and not (run / LOCK_NAME).exists()


def test_a_diverging_resume_never_saves_its_state(tiny_dataset, tmp_path, uninterrupted):
    """Issue case 1b: a good uncertainty-weighted run resumed with a learning rate that blows up
    (the issue's --lr 1e6 on the real network; this small one needs more)."""
    run = Path(shutil.copytree(uninterrupted, tmp_path / "run"))
    before = files_of(run)
    resumed = run_config(tiny_dataset, run, val_steps=1, epochs=3, lr=1e30, resume=True)
    with pytest.raises(UserError, match=r"^training stopped: .* (at|in the validation of) epoch 3"):
        train(resumed)
    # Every file the resumed run could have replaced is the epoch-2 file, byte for byte.
    after = files_of(run)
    for name in ("checkpoint.keras", "model_best.keras", "history.csv", "config.yaml"):
        assert after[name] == before[name], name
    epoch, variables = checkpoint_state(run / "checkpoint.keras")
    assert epoch == 2 and all(np.all(np.isfinite(v)) for v in variables if v.dtype.kind == "f")


def test_no_good_epoch_says_so_in_one_line_from_train_py(data, tmp_path, monkeypatch, capsys):
    """Issue case 1c: --lr 1e30 from the start: no file to point to."""
    import train as train_script
    from keras_mtl.training import run as run_module

    monkeypatch.setattr(run_module, "build_model", dropout_net)
    run = tmp_path / "run"
    argv = [
        "--data_path", str(data), "--save_path", str(run), "--img_resize", "32", "64",
        "--output_size", "32", "64", "--batch_size", "2", "--epochs", "2", "--lr", "1e30",
        "--val_steps", "1", "--depth_init", "10", "--multi_task_type", "uncertainty",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_script.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: training stopped: ")
    assert err[0].endswith(
        "no epoch ended finite, so nothing was saved (lower --lr or check the data)"
    )
    assert "at epoch 1" in err[0] or "of epoch 1" in err[0]
    assert not any((run / name).exists() for name in ("checkpoint.keras", "model_best.keras"))


def test_the_guard_reads_every_variable_of_the_checkpoint(tmp_path):
    """A checkpoint with a non-finite variable is never written (network, weighting, optimizer)."""
    from keras_mtl.training import NaNGuard, RunArtifacts, build_trainer

    config = run_config(tmp_path, tmp_path / "run")
    trainer = build_trainer(config, run_eagerly=True, model_fn=dropout_net)
    optimizer_slot = next(v for v in trainer.optimizer.variables if v.dtype == "float32")
    cases = [
        (trainer.model.get_layer("c1").kernel, np.nan, "the network variable c1/kernel"),
        (trainer.weighting.weights[1], np.inf, "the uncertainty weighting's log_variance_semantic"),
        (optimizer_slot, -np.inf, "the optimizer variable "),
    ]
    for variable, bad, what in cases:
        good = np.asarray(variable).copy()
        value = good.copy()
        value.flat[0] = bad
        variable.assign(value)
        guard = NaNGuard(trainer.task_names)
        artifacts = RunArtifacts(tmp_path / "run", "motion_miou", trainer.task_names, guard)
        artifacts.set_model(trainer)
        artifacts.on_epoch_end(0, {"loss": 1.0, "val_motion_miou": 50.0})
        assert guard.failure.startswith(what), guard.failure
        assert guard.failure.endswith("at the end of epoch 1") and guard.failed_epoch == 1
        assert not (tmp_path / "run").exists()  # nothing written
        variable.assign(good)


def test_log_names_say_what_diverged():
    from keras_mtl.training.callbacks import describe_log

    assert describe_log("loss_depth") == "the depth loss"
    assert describe_log("loss") == "the total loss"
    assert describe_log("weight_motion") == "the motion task weight"
    assert describe_log("val_loss_semantic") == "the validation semantic loss"
    assert describe_log("val_motion_miou") == "the validation metric motion_miou"


# ------------------------------------------------------------------------- bad frames


def test_a_corrupt_png_is_named_relative_to_the_data_path_or_skipped(data, capfd):
    from keras_mtl.data.pipeline import make_dataset

    bad = label_file(data, "train", 1)
    corrupt_inside(bad)
    relative = bad.relative_to(data).as_posix()
    common = dict(img_resize=(HEIGHT, WIDTH), batch_size=2, training=True, repeat=True)
    for cache in (False, True):
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            list(make_dataset(data, "train", cache=cache, **common).take(4))
        report = bad_input_report(info.value)
        assert report.startswith(f"--data_path {data}: {relative}: corrupt PNG data (")
        assert "regenerate or remove this frame" in report
    capfd.readouterr()
    kept = make_dataset(data, "train", skip_bad_frames=True, **{**common, "batch_size": 1})
    assert len(list(kept.take(6))) == 6  # 3 good frames, twice
    warnings = [line for line in capfd.readouterr().err.splitlines() if "skipping" in line]
    assert warnings == [
        f"warning: --skip_bad_frames: skipping a frame of split 'train': {relative}: corrupt "
        f"PNG data (Invalid PNG data, size {bad.stat().st_size})"
    ]
    for index in (0, 2, 3):
        corrupt_inside(label_file(data, "train", index))
    with pytest.raises(tf.errors.OpError) as info:
        list(make_dataset(data, "train", skip_bad_frames=True, **common).take(1))
    assert "none of its 4 frame(s) decodes" in bad_input_report(info.value)


def test_train_py_stops_at_a_corrupt_frame_mid_epoch_with_one_line(
    data, tmp_path, monkeypatch, capsys
):
    import train as train_script
    from keras_mtl.training import run as run_module

    monkeypatch.setattr(run_module, "build_model", dropout_net)
    bad = label_file(data, "train", 2)
    corrupt_inside(bad)
    run = tmp_path / "run"
    argv = [
        "--data_path", str(data), "--save_path", str(run), "--img_resize", "32", "64",
        "--output_size", "32", "64", "--batch_size", "2", "--epochs", "2", "--val_steps", "1",
        "--depth_init", "10",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_script.main, argv)  # graph mode: the error comes out of fit's step
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    relative = bad.relative_to(data).as_posix()
    assert err[0].startswith(f"error: --data_path {data}: {relative}: corrupt PNG data (")
    assert err[0].endswith("; or pass --skip_bad_frames to leave such frames out")
    assert not (run / "checkpoint.keras").exists()

    run_training(
        run_config(data, tmp_path / "skipping", epochs=1, skip_bad_frames=True),
        run_eagerly=True,
        verbose=0,
        model_fn=dropout_net,
    )
    assert "skipping a frame of split 'train'" in capsys.readouterr().err
    assert len(history_rows(tmp_path / "skipping")) == 2


def test_evaluate_and_export_calibration_name_a_corrupt_frame(data, tmp_path, capsys):
    import evaluate
    from keras_mtl.export import load_frames

    checkpoint = tmp_path / "model.keras"
    DropoutNet().save(checkpoint)
    bad = label_file(data, "val", 1)
    corrupt_inside(bad)
    relative = bad.relative_to(data).as_posix()
    argv = [
        "--data_path", str(data), "--checkpoint", str(checkpoint), "--img_resize", "32", "64",
        "--output_size", "32", "64", "--no_progress",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluate.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --data_path {data}: {relative}: corrupt PNG data (")

    # export.py's int8 calibration reads its frames with this function.
    def calibration(argv):
        load_frames(str(data), "val", (HEIGHT, WIDTH), 2, 5)

    with pytest.raises(SystemExit) as exit_info:
        run_cli(calibration, [])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and relative in err[0], err


def test_tune_py_stops_the_search_at_a_corrupt_frame(data, tmp_path, monkeypatch, capsys):
    import tune
    from keras_mtl.training import run as run_module

    monkeypatch.setattr(run_module, "build_model", dropout_net)
    bad = label_file(data, "train", 0)
    corrupt_inside(bad)
    argv = [
        "--data_path", str(data), "--save_path", str(tmp_path / "tune"), "--max_trials", "2",
        "--img_resize", "32", "64", "--output_size", "32", "64", "--batch_size", "2",
        "--epochs", "1", "--depth_init", "10", "--verbose",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tune.main, argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert bad.relative_to(data).as_posix() in err[0] and "--skip_bad_frames" in err[0]
    assert not (tmp_path / "tune" / LOCK_NAME).exists()


# ------------------------------------------------------------------------- the run folder


def test_a_second_run_into_a_folder_in_use_is_refused(data, tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        owner = json.loads((run / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with pytest.raises(UserError) as info:
            train(run_config(data, run, epochs=1))
    assert str(info.value).startswith(
        f"--save_path {run}: another run is using this folder (PID {os.getpid()} on host "
    )
    assert sorted(p.name for p in run.iterdir()) == []  # the lock went with its owner
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"--save_path .*file/run: cannot create the folder"):
        train(run_config(data, blocker / "run", epochs=1))


def test_a_dead_runs_lock_is_taken_over_with_a_warning(data, tmp_path, capsys):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(done.stdout)  # a process that has ended
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead_pid, "host": "elsewhere"}) + "\n")
    train(run_config(data, run, epochs=1, val_steps=1))
    err = capsys.readouterr().err
    assert f"taking over the lock of a run that is gone (PID {dead_pid} on host elsewhere)" in err
    assert (run / "checkpoint.keras").is_file() and not (run / LOCK_NAME).exists()


def test_earlier_results_need_overwrite_and_stay_until_replaced(
    tiny_dataset, tmp_path, uninterrupted
):
    run = Path(shutil.copytree(uninterrupted, tmp_path / "run"))
    config = run_config(tiny_dataset, run, epochs=1, val_steps=1)
    earlier = files_of(run)
    old_events = [name for name in earlier if "tfevents" in name]
    assert old_events and "results.json" in earlier

    with pytest.raises(UserError, match=r"holds an earlier run's results .*--resume .*--overwrite"):
        train(config)
    assert files_of(run) == earlier
    with pytest.raises(UserError, match=r"--resume and --overwrite: give one"):
        train(apply_overrides(config, {"resume": True, "overwrite": True}))

    # A new run that never finishes an epoch leaves every earlier file as it was.
    diverging = apply_overrides(config, {"overwrite": True, "lr": 1e30})
    with pytest.raises(UserError, match=r"the earlier run's files in .* are untouched"):
        train(diverging)
    assert {k: v for k, v in files_of(run).items() if "tfevents" not in k} == {
        k: v for k, v in earlier.items() if "tfevents" not in k
    }

    # A new run that does: every earlier file is replaced or gone.
    train(apply_overrides(config, {"overwrite": True, "seed": 4}))
    now = files_of(run)
    assert not set(old_events) & set(now)
    for name in ("checkpoint.keras", "model_best.keras", "results.json", "history.csv"):
        assert now[name] != earlier[name], name
    assert len(history_rows(run)) == 2  # the new run's one epoch
    assert "overwrite: false" in now["config.yaml"].decode()


# ------------------------------------------------------------------------- exact resume


def assert_same_run(resumed: Path, reference: Path) -> None:
    epoch, variables = checkpoint_state(resumed / "checkpoint.keras")
    reference_epoch, reference_variables = checkpoint_state(reference / "checkpoint.keras")
    assert epoch == reference_epoch == 2
    assert len(variables) == len(reference_variables)
    for got, want in zip(variables, reference_variables, strict=True):
        np.testing.assert_array_equal(got, want)
    assert history_rows(resumed) == history_rows(reference)


def test_resume_after_ctrl_c_mid_epoch_equals_the_uninterrupted_run(
    tiny_dataset, tmp_path, uninterrupted, capsys
):
    class CtrlCMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                raise KeyboardInterrupt

    run = tmp_path / "run"
    config = run_config(tiny_dataset, run, val_steps=1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda argv: train(config, callbacks=[CtrlCMidEpoch()]), [])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
    assert checkpoint_state(run / "checkpoint.keras")[0] == 1
    assert not (run / LOCK_NAME).exists()
    train(apply_overrides(config, {"resume": True}))
    assert_same_run(run, uninterrupted)


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import test_reliability as t
from keras_mtl.training import callbacks

real_save = callbacks.save_atomic
checkpoints = []

def save_then_die(save_fn, path):
    # The second checkpoint write dies after its temp file is written: kill -9.
    if Path(path).name == "checkpoint.keras":
        checkpoints.append(path)
        if len(checkpoints) == 2:
            def write_and_die(tmp):
                save_fn(tmp)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(write_and_die, path)
    return real_save(save_fn, path)

callbacks.save_atomic = save_then_die
t.train(t.run_config(Path({data!r}), Path({run!r}), val_steps=1))
"""


def test_resume_after_kill_9_during_a_checkpoint_write_equals_the_uninterrupted_run(
    tiny_dataset, tmp_path, uninterrupted, capsys
):
    run = tmp_path / "run"
    script = KILLED_RUN.format(
        root=str(ROOT), tests=str(ROOT / "tests"), data=str(tiny_dataset), run=str(run)
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    # Killed after epoch 2's history row and best model, before its checkpoint was in place.
    left = sorted(p.name for p in run.iterdir())
    partial = [name for name in left if name.startswith(".checkpoint.") and "partial" in name]
    assert len(partial) == 1 and LOCK_NAME in left, left
    assert len(history_rows(run)) == 3 and checkpoint_state(run / "checkpoint.keras")[0] == 1

    capsys.readouterr()
    train(apply_overrides(run_config(tiny_dataset, run, val_steps=1), {"resume": True}))
    out, err = capsys.readouterr()
    assert f"removed {run / partial[0]}, left by an interrupted write" in out
    assert "resuming from" in out and "after epoch 1" in out
    assert "taking over the lock of a run that is gone (PID " in err
    assert_same_run(run, uninterrupted)
    assert not [p for p in run.iterdir() if "partial" in p.name or p.name == LOCK_NAME]


def test_dropout_draws_depend_on_the_step_alone():
    """The real network's dropout layers are reseeded from (seed, step) by the trainer."""
    from keras_mtl.models import build_multitask_model
    from keras_mtl.training.trainer import StepSeeds

    model = build_multitask_model((64, 128), width_mult=0.25)
    seeds = StepSeeds(model, seed=5)
    dropouts = [layer for layer in model.layers if "dropout" in layer.name]
    assert len(seeds.generators) == len(dropouts) == 3
    seeds.reseed(tf.constant(7, tf.int64))
    states = [g.state.numpy().tolist() for g in seeds.generators]
    assert states == [[5 * 1_000_003 + i + 1, 7] for i in range(3)]
