"""Step time of two workers (MultiWorkerMirroredStrategy on 127.0.0.1) against one process
at the same global batch.

On one machine the two workers share its cores, and every step adds a cross-process
all-reduce of the loss statistics and of every gradient over gRPC: this is a correctness and
overhead figure (does the multi-worker path run, and what does its communication cost), not a
speed-up. A speed-up needs workers on separate machines (or GPUs). That the two workers compute
what one process computes on the global batch is checked exactly by
`tests/test_multiworker.py` on a network without BatchNorm; the real network's BatchNorm uses
each replica's own batch statistics (as under MirroredStrategy), so its losses here differ
slightly from one process's, and the table reports that difference for information.

Each configuration runs in fresh processes (`--rounds` times, alternating): the real network
(`--width_mult`, `--img_resize`) on a tiny synthetic dataset (generated unless `--data_path`),
`--warmup` untimed steps (tracing), then `--steps` timed steps of `fit` through the project's
input pipeline (each worker decodes only its own half of every global batch). The figure is the
median step time; the ratio is two workers' median over one process's.

Examples:

```
python benchmarks/multiworker.py --quick
python benchmarks/multiworker.py --global_batch 8 --steps 20 --json multiworker.json
```
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402

NOTE = (
    "2 workers on one machine share its cores: a correctness and overhead figure "
    "(cross-process all-reduce over gRPC), not a speed-up"
)


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (bound to port 0 together, so distinct)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def worker_main(settings: dict) -> dict:
    """One process of a measurement: `fit` for warmup + steps; step times and losses."""
    import keras

    from keras_mtl.config import load_config
    from keras_mtl.training import build_datasets, build_trainer, select_strategy, worker_role

    strategy = select_strategy()
    role = worker_role(strategy)
    steps = settings["warmup"] + settings["steps"]
    config = load_config(
        None,
        {
            "data_path": settings["data_path"],
            "img_resize": tuple(settings["img_resize"]),
            "output_size": tuple(settings["img_resize"]),
            "width_mult": settings["width_mult"],
            "batch_size": settings["global_batch"] // role.count,
            "multi_task_type": settings["method"],
            "steps_per_epoch": steps,
            "epochs": 1,
        },
    )
    keras.utils.set_random_seed(config.train.seed)
    trainer = build_trainer(config, strategy, steps)
    train_ds, _ = build_datasets(config, strategy=strategy)

    class StepTimes(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.losses: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)
            self.losses.append(float((logs or {}).get("loss", float("nan"))))

    timer = StepTimes()
    trainer.fit(train_ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return {
        "role": [role.index, role.count],
        "step_times": timer.times[settings["warmup"] :],
        "first_step": timer.times[0],
        "losses": timer.losses,
    }


def measure(settings: dict, workers: int, scratch: Path, timeout: float) -> dict:
    """Runs one configuration (1 process, or `workers` on 127.0.0.1); the chief's report."""
    ports = free_ports(workers) if workers > 1 else []
    processes, logs = [], []
    for index in range(workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("TF_CONFIG", None)
        if workers > 1:
            cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
        log = scratch / f"workers{workers}_{index}_{time.monotonic_ns()}.log"
        logs.append(log)
        with log.open("w") as stream:
            command = [sys.executable, __file__, "--worker", json.dumps(settings)]
            processes.append(
                subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
            )
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise UserError(f"--timeout {timeout}: a run took longer; see {log}") from None
    for process, log in zip(processes, logs, strict=True):
        if process.returncode != 0:
            tail = log.read_text()[-2000:]
            raise UserError(f"a benchmark process failed ({log}):\n{tail}")
    return json.loads(logs[0].read_text().strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/multiworker.py",
        description="Step time: 2 workers on 127.0.0.1 vs 1 process at the same global batch.",
    )
    parser.add_argument("--quick", action="store_true", help="few steps, one round")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--data_path", default=None, help="dataset (default: tiny synthetic)")
    parser.add_argument("--img_resize", type=int, nargs=2, default=[64, 128])
    parser.add_argument("--width_mult", type=float, default=0.35)
    parser.add_argument("--global_batch", type=int, default=4, help="split over the workers")
    parser.add_argument("--method", default="vanilla", help="weighting method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 4, 1
    if args.global_batch % 2:
        raise UserError(f"--global_batch {args.global_batch}: must split over 2 workers")

    with tempfile.TemporaryDirectory(prefix="multiworker_bench_") as scratch:
        scratch = Path(scratch)
        data_path = args.data_path
        if data_path is None:
            from data_tools.synthetic import generate_dataset

            data_path = str(scratch / "data")
            height, width = args.img_resize
            generate_dataset(data_path, 16, 4, height, width, seed=1, workers=1, progress=False)
        settings = {
            "data_path": data_path,
            "img_resize": list(args.img_resize),
            "width_mult": args.width_mult,
            "global_batch": args.global_batch,
            "method": args.method,
            "warmup": args.warmup,
            "steps": args.steps,
        }
        runs: dict[str, list[dict]] = {"1 process": [], "2 workers": []}
        for _ in range(args.rounds):  # alternating, so that load changes hit both alike
            runs["1 process"].append(measure(settings, 1, scratch, args.timeout))
            runs["2 workers"].append(measure(settings, 2, scratch, args.timeout))

    rows = {}
    for name, reports in runs.items():
        times = [t for report in reports for t in report["step_times"]]
        rows[name] = {
            "processes": 1 if name == "1 process" else 2,
            "batch_per_process": args.global_batch // (1 if name == "1 process" else 2),
            "median_step_s": statistics.median(times),
            "first_step_s": statistics.median(r["first_step"] for r in reports),
            "losses": reports[0]["losses"],
        }
    single, double = rows["1 process"]["median_step_s"], rows["2 workers"]["median_step_s"]
    first_losses = (rows["1 process"]["losses"][0], rows["2 workers"]["losses"][0])
    loss_rel_diff = abs(first_losses[1] - first_losses[0]) / abs(first_losses[0])
    result = {
        "settings": {k: v for k, v in settings.items() if k != "data_path"}
        | {"rounds": args.rounds, "cpus": os.cpu_count()},
        "rows": rows,
        "ratio_2_workers_to_1_process": double / single,
        "first_step_loss_rel_diff": loss_rel_diff,
        "note": NOTE,
    }

    print(f"Multi-worker step time, global batch {args.global_batch} ({NOTE})")
    header = f"{'configuration':<12} {'procs':>5} {'batch/proc':>10} {'step s':>8} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(
            f"{name:<12} {row['processes']:>5} {row['batch_per_process']:>10} "
            f"{row['median_step_s']:>8.3f} {row['median_step_s'] / single:>6.2f}"
        )
    print(
        f"first-step loss, 2 workers vs 1 process: relative difference {loss_rel_diff:.1e} "
        "(per-replica BatchNorm statistics; exact without BatchNorm, tests/test_multiworker.py)"
    )
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker_main(json.loads(sys.argv[2]))), flush=True)
    else:
        run_cli(main, sys.argv[1:])
