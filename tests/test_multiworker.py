"""Multi-worker training: TF_CONFIG, worker shards, exactness, chief-only writes, restart.

Two worker processes on 127.0.0.1 (free ports) train the tiny network of `test_training`
(`TinyNet`: no BatchNorm, whose statistics are per replica under every strategy) on the tiny
synthetic dataset, and are compared with one process reading the same global batches:

- `fit-check` mode: `fit` with plain SGD (Adam's normalised step would hide a gradient scale
  error) through the multi-worker input pipeline, for vanilla, GradNorm (its per-task gradient
  norms recorded at every step), PCGrad (per-task gradients) and uncertainty (its
  log-variances trained beside the network); then `evaluate`.
- `run` mode: `run_training` end to end (Adam, GradNorm, 2 epochs); one run has worker 1 stop
  in the middle of epoch 2, where the test kills it, kills the chief, and restarts both with
  the same command: they resume from the chief's backup and must end where one process does.

Run as a script (`python tests/test_multiworker.py MODE JSON`) it is one of those processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("vanilla", "grad_norm", "pcgrad", "uncertainty")
GLOBAL_BATCH = 4
STEPS = 2  # optimizer steps per epoch (the tiny split holds 4 frames: 2 passes per epoch)
RUN_EPOCHS = 2
PAUSED = "paused"  # the file a worker writes when it stops mid-epoch for the kill test
_STARTED: list[subprocess.Popen] = []  # killed after each test if still running


# --------------------------------------------------------------------------- helpers


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (bound to port 0 and released together, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind(("127.0.0.1", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def tf_config(ports: list[int], index: int) -> str:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def launch(mode: str, args: dict, tmp: Path, name: str, config: str | None) -> subprocess.Popen:
    """Starts `python tests/test_multiworker.py mode args` (TF_CONFIG when `config`); its
    output goes to `tmp/name.log`, its temporary files under `tmp/name.tmp`."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    if config is not None:
        env["TF_CONFIG"] = config
    temp = tmp / f"{name}.tmp"
    temp.mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(temp)  # where a non-chief worker's folder goes (checked: removed)
    with (tmp / f"{name}.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, mode, json.dumps(args)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    _STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def no_process_left():
    """A failing test must not leave its worker processes running (one waits 600 s)."""
    yield
    for process in _STARTED:
        if process.poll() is None and not getattr(process, "shared", False):
            process.kill()
            process.wait()


def finish(process: subprocess.Popen, tmp: Path, name: str, timeout: float = 600) -> dict:
    """Waits for a process (600 s: TensorFlow start-ups on a loaded 2-core machine take a
    minute each); returns the JSON of its last output line."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    text = (tmp / f"{name}.log").read_text()
    assert process.returncode == 0, f"{name} exited {process.returncode}:\n{text[-4000:]}"
    return json.loads(text.strip().splitlines()[-1])


def workers(mode: str, args: dict, tmp: Path, prefix: str, count: int = 2) -> list:
    ports = free_ports(count)
    return [launch(mode, args, tmp, f"{prefix}{i}", tf_config(ports, i)) for i in range(count)]


def assert_states_equal(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=key)


def tiny_run_config(data_path: str, save_path: str, method: str, batch_size: int, epochs: int):
    from test_training import HEIGHT, WIDTH, tiny_config

    return tiny_config(
        method,
        data_path=data_path,
        save_path=save_path,
        img_resize=(HEIGHT, WIDTH),
        output_size=(HEIGHT, WIDTH),
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=STEPS,
    )


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"TF_CONFIG: not valid JSON"),
        ("[1, 2]", r"TF_CONFIG: must be a JSON object, got list"),
        ('{"task": {"type": "worker", "index": 0}}', r'TF_CONFIG: no "cluster" object'),
        ('{"cluster": {"worker": "a:1"}, "task": {}}', r"must be a non-empty list"),
        ('{"cluster": {"worker": ["a"]}, "task": {}}', r"'a' is not \"host:port\""),
        ('{"cluster": {"boss": ["a:1"]}, "task": {}}', r"unknown job 'boss'"),
        ('{"cluster": {"worker": ["a:1"]}}', r'no "task" object'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}', r"task type 'chief'"),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            r"task index 2 is out of range: job 'worker' lists 2 address\(es\), so 0..1",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
            r"task index '0' must be an integer",
        ),
    ],
)
def test_malformed_tf_config_is_one_line_naming_it(monkeypatch, text, message):
    from keras_mtl.errors import UserError
    from keras_mtl.training import select_strategy

    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(UserError, match=message) as caught:
        select_strategy()
    assert "\n" not in str(caught.value) and "set it to JSON like" in str(caught.value)


def test_tf_config_parses_and_refuses_logical_cpus(monkeypatch):
    from keras_mtl.errors import UserError
    from keras_mtl.training import parse_tf_config, select_strategy, worker_role

    assert parse_tf_config("") is None and parse_tf_config("  ") is None
    parsed = parse_tf_config(tf_config([1, 2], 1))
    assert parsed["task"] == {"type": "worker", "index": 1}
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    with pytest.raises(UserError, match=r"--cpu_replicas 2 with TF_CONFIG: .*drop --cpu_replicas"):
        select_strategy(cpu_replicas=2)
    role = worker_role()  # the default strategy: one worker, the chief
    assert (role.index, role.count, role.chief, role.multi_worker) == (0, 1, True, False)


def test_worker_shards_make_up_the_global_batches(tiny_dataset):
    """Two shards of batch 2 are, batch for batch, the stream of one process with batch 4
    (augmentation included), from the start and from a resumed batch on."""
    import tensorflow as tf

    from keras_mtl.data.pipeline import make_dataset

    common = dict(img_resize=(32, 64), training=True, repeat=True, seed=3)
    for first_batch in (0, 3):
        whole = make_dataset(tiny_dataset, "train", batch_size=4, first_batch=first_batch, **common)
        shards = [
            make_dataset(
                tiny_dataset,
                "train",
                batch_size=2,
                first_batch=first_batch,
                shard_index=index,
                num_shards=2,
                **common,
            )
            for index in (0, 1)
        ]
        policy = shards[0].options().experimental_distribute.auto_shard_policy
        assert policy == tf.data.experimental.AutoShardPolicy.OFF
        for global_batch, part0, part1 in zip(
            whole.take(3), shards[0].take(3), shards[1].take(3), strict=True
        ):
            joined = tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), part0, part1)
            for want, got in zip(
                tf.nest.flatten(global_batch), tf.nest.flatten(joined), strict=True
            ):
                np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(ValueError, match="num_shards > 1 needs repeat=True"):
        make_dataset(
            tiny_dataset, "val", img_resize=(32, 64), batch_size=2, training=False, num_shards=2
        )


def test_resume_from_backup_needs_backup_and_checkpoint(tmp_path):
    from keras_mtl.config import load_config
    from keras_mtl.training import BACKUP_NAME, CHECKPOINT_NAME, resume_from_backup

    config = load_config(None, {"save_path": str(tmp_path), "depth_init": None})
    assert not resume_from_backup(config).train.resume  # nothing there
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"x")
    assert not resume_from_backup(config).train.resume  # a finished run: no backup mark
    (tmp_path / BACKUP_NAME).write_text('{"epoch": 1}')
    saved = load_config(None, {"save_path": str(tmp_path), "depth_init": 7.5})
    saved.save(tmp_path / "config.yaml")
    resumed = resume_from_backup(config)
    assert resumed.train.resume and resumed.model.depth_init == 7.5
    overwrite = load_config(None, {"save_path": str(tmp_path), "overwrite": True})
    assert not resume_from_backup(overwrite).train.resume


# --------------------------------------------------------------------------- two workers


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    """One process on the global batch, started at once (it runs beside the workers): the
    `fit-check` states and the uninterrupted `run_training` of the kill test."""
    tmp = tmp_path_factory.mktemp("single")
    args = {"data": str(tiny_dataset), "out": str(tmp), "reference_run": True}
    process = launch("fit-check", args, tmp, "single", None)
    process.shared = True  # runs beside the module's tests, collected by them
    results = {}

    def result() -> dict:
        if not results:
            results.update(finish(process, tmp, "single"))
        return results

    yield result
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.slow
@pytest.mark.xdist_group("multiworker")
def test_two_workers_equal_one_process_on_the_global_batch(tiny_dataset, tmp_path, reference):
    args = {"data": str(tiny_dataset), "out": str(tmp_path)}
    processes = workers("fit-check", args, tmp_path, "worker")
    reports = [finish(p, tmp_path, f"worker{i}") for i, p in enumerate(processes)]
    single = reference()
    assert [r["role"] for r in reports] == [[0, 2, True], [1, 2, False]]
    assert single["role"] == [0, 1, True]
    for method in METHODS:
        want = dict(np.load(single[method]))
        assert want["moved"] > 1e-4, method  # the steps did something
        for report in reports:  # both workers hold the single process's state
            got = dict(np.load(report[method]))
            assert_states_equal(got, want, rtol=1e-5, atol=2e-6)
    # GradNorm's per-task gradient norms were recorded at every step (one row per step).
    assert np.load(single["grad_norm"])["norms"].shape == (STEPS, 3)
    for name, value in single["evaluate"].items():
        for report in reports:
            assert report["evaluate"][name] == pytest.approx(value, rel=1e-5), name


@pytest.mark.slow
@pytest.mark.xdist_group("multiworker")
def test_killed_worker_restart_resumes_from_the_chief_backup(tiny_dataset, tmp_path, reference):
    import keras
    from test_training import TinyNet  # noqa: F401  (registers the class for loading)

    from keras_mtl.training import BACKUP_NAME, CHECKPOINT_NAME, read_history_rows

    run_dir = tmp_path / "run"
    args = {"data": str(tiny_dataset), "save_path": str(run_dir), "pause_at": [1, 0]}
    processes = workers("run", args, tmp_path, "first")
    paused = tmp_path / "first1.tmp" / PAUSED
    deadline = time.monotonic() + 600
    while not paused.exists():
        assert all(p.poll() is None for p in processes), (tmp_path / "first0.log").read_text()
        assert time.monotonic() < deadline, "worker 1 never reached epoch 2"
        time.sleep(0.2)
    # Mid-epoch 2: epoch 1 is backed up; kill worker 1, then the chief (blocked on it).
    assert json.loads((run_dir / BACKUP_NAME).read_text()) == {"epoch": 1}
    for process in reversed(processes):
        process.send_signal(signal.SIGKILL)
        process.wait()

    args.pop("pause_at")
    processes = workers("run", args, tmp_path, "again")
    reports = [finish(p, tmp_path, f"again{i}") for i, p in enumerate(processes)]
    for index in (0, 1):
        log = (tmp_path / f"again{index}.log").read_text()
        assert "resuming from the backup of an interrupted run" in log
        assert "after epoch 1" in log
    assert reports[0]["epochs"] == RUN_EPOCHS and reports[1]["files"] == []
    assert not (run_dir / BACKUP_NAME).exists()  # training ended: the mark is gone
    # Only the chief wrote into the run folder; the restarted worker 1 removed its own
    # (the killed one could not).
    assert not list((tmp_path / "again1.tmp").glob("keras_mtl_worker*"))
    assert list((tmp_path / "first1.tmp").glob("keras_mtl_worker1_*"))
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["checkpoint.keras", "config.yaml", "history.csv", "logs", "model_best.keras"]
        + ["predictions.png", "results.json"]
    )
    assert [row["epoch"] for row in read_history_rows(run_dir / "history.csv")] == ["1", "2"]

    # The resumed job ends where one uninterrupted process on the global batch ends: model,
    # Adam's moments and GradNorm's state (its initial losses and weights) included.
    single = reference()
    want = dict(np.load(single["run"]))
    trainer = keras.saving.load_model(run_dir / CHECKPOINT_NAME)
    got = trainer_state(trainer)
    assert int(trainer.epoch_counter.numpy()) == RUN_EPOCHS
    assert_states_equal(got, want, rtol=1e-4, atol=1e-6)
    rows = read_history_rows(run_dir / "history.csv")
    for row, want_row in zip(rows, single["history"], strict=True):
        for column in ("loss", "loss_depth", "weight_depth", "val_loss", "val_motion_miou"):
            assert float(row[column]) == pytest.approx(float(want_row[column]), rel=1e-4)


# --------------------------------------------------------------------------- the processes


def trainer_state(trainer) -> dict:
    """Every variable a checkpoint holds that must agree: network, optimizer, weighting.

    Keyed by position and short name (a process that built several trainers numbers their
    layers' paths on: `grad_norm_weighting_2`)."""
    groups = {
        "model": trainer.model.weights,
        "optimizer": trainer.optimizer.variables,
        "weighting": trainer.weighting.weights,
    }
    return {
        f"{group}/{index:03d}/{variable.name}": np.asarray(variable.numpy())
        for group, variables in groups.items()
        for index, variable in enumerate(variables)
    }


def fit_check(args: dict) -> dict:
    """`fit` with SGD on the (multi-worker) input pipeline, per method; then `evaluate`."""
    from test_training import record_grad_norms, sgd_trainer, tiny_model

    from keras_mtl.training import build_datasets, select_strategy, worker_role

    strategy = select_strategy()
    role = worker_role(strategy)
    out = Path(args["out"])
    weights = tiny_model().get_weights()
    report = {"role": [role.index, role.count, role.chief]}
    batch = GLOBAL_BATCH // role.count
    for method in METHODS:
        config = tiny_run_config(args["data"], str(out / "unused"), method, batch, 1)
        trainer = sgd_trainer(method, weights, strategy=strategy)
        norms = record_grad_norms(trainer)
        train_ds, val_ds = build_datasets(config, strategy=strategy)
        trainer.fit(train_ds, steps_per_epoch=STEPS, epochs=1, verbose=0)
        state = trainer_state(trainer)
        moved = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(trainer.model.get_weights(), weights, strict=True)
        )
        path = out / f"{method}_{role.index}.npz"
        np.savez(path, norms=np.array(norms), moved=np.array(moved), **state)
        report[method] = str(path)
        if method == "vanilla":
            logs = trainer.evaluate(val_ds, verbose=0, return_dict=True)
            report["evaluate"] = {k: float(v) for k, v in logs.items()}
    if args.get("reference_run"):
        report.update(run(args | {"save_path": str(out / "run")}, batch_size=GLOBAL_BATCH))
    return report


class PauseWorker:
    """A callback factory: worker 1 writes `$TMPDIR/paused` at (epoch, batch) and waits to
    be killed there (the chief then waits for it inside the next step's collective)."""

    @staticmethod
    def make(role, epoch: int, batch: int):
        import tempfile

        import keras

        class Pause(keras.callbacks.Callback):
            def on_train_batch_end(self, step, logs=None):
                if role.index == 1 and (self.model_epoch, step) == (epoch, batch):
                    Path(tempfile.gettempdir(), PAUSED).write_text("")
                    time.sleep(600)

            def on_epoch_begin(self, index, logs=None):
                self.model_epoch = index

        return Pause()


def run(args: dict, batch_size: int | None = None) -> dict:
    """`run_training` of the kill test (GradNorm, Adam, RUN_EPOCHS epochs); a worker pauses
    for its kill at `pause_at` (epoch, batch)."""
    from test_training import tiny_model

    from keras_mtl.training import read_history_rows, run_training, select_strategy, worker_role

    strategy = select_strategy()
    role = worker_role(strategy)
    batch_size = batch_size or GLOBAL_BATCH // role.count
    config = tiny_run_config(args["data"], args["save_path"], "grad_norm", batch_size, RUN_EPOCHS)
    callbacks = []
    if args.get("pause_at"):
        callbacks.append(PauseWorker.make(role, *args["pause_at"]))
    results = run_training(
        config,
        strategy=strategy,
        run_eagerly=True,
        verbose=0,
        model_fn=tiny_model,
        callbacks=callbacks,
    )
    report = {"epochs": results["epochs"], "files": results["files"]}
    if role.count == 1:  # the reference: its state and history to compare with
        import keras

        trainer = keras.saving.load_model(Path(args["save_path"]) / "checkpoint.keras")
        path = Path(args["save_path"]).parent / "run_state.npz"
        np.savez(path, **trainer_state(trainer))
        report["run"] = str(path)
        report["history"] = read_history_rows(Path(args["save_path"]) / "history.csv")
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    mode, arguments = sys.argv[1], json.loads(sys.argv[2])
    result = fit_check(arguments) if mode == "fit-check" else run(arguments)
    print(json.dumps(result), flush=True)
