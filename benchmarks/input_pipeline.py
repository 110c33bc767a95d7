"""Input pipeline throughput: samples/s of make_dataset and frames/s of load_frame.

Generates a handful of synthetic frames per source size with
`data_tools.synthetic.generate_dataset` in a temporary folder (or uses `--data_path`), then
times, after one warm-up batch (tracing):

- `train`: the training pipeline (decode, augmentation, normalisation) at `--img_resize`,
- `train_cached`: the same with `cache=True` (decoding done once),
- `val`: the validation pipeline (inputs at `--img_resize`, targets at the native size),
- `load_frame`: one frame decoded to numpy at native size (what evaluation tools use),
- `train_pre_resized` (with `--pre_resize H W`): the training pipeline reading a copy written
  by `data_tools.resize` at H x W (the copy's writing time is reported per frame);
- `train_pre_resized_no_augment`: the same without the geometric augmentation: what the host
  would still do per frame if the augmentation ran on the accelerator.

Usage:

```
python benchmarks/input_pipeline.py [--quick] [--json OUT.json] [--sizes 512x1024 1024x2048]
                                    [--img_resize 384 768] [--batch_size 8] [--frames 6]
                                    [--pre_resize 384 768]
```

`--quick` uses 2 frames per size and fewer batches (about a minute on a 2-core CPU). The
numbers depend on the machine and on its load; the table names both.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_mtl.errors import UserError, run_cli  # noqa: E402
from keras_mtl.io import write_json_atomic  # noqa: E402


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--sizes: expected HxW like 512x1024, got {text!r}") from None
    return height, width


def _time_dataset(dataset, batches: int, batch_size: int) -> float:
    iterator = iter(dataset)
    next(iterator)  # warm-up: tracing and the first decode
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def _time_load_frame(root: str, stems: list[str], repeats: int) -> float:
    from keras_mtl.data.pipeline import load_frame

    load_frame(root, "train", stems[0])  # warm-up
    start = time.perf_counter()
    for i in range(repeats):
        load_frame(root, "train", stems[i % len(stems)])
    return repeats / (time.perf_counter() - start)


def benchmark_size(
    root: str,
    img_resize: tuple[int, int],
    batch_size: int,
    batches: int,
    pre_resize: tuple[int, int] | None = None,
    scratch: str | None = None,
) -> dict[str, float]:
    """Throughputs on one dataset root (split `train`); `pre_resize` also times a resized copy
    written under `scratch`."""
    from keras_mtl.data.pipeline import list_stems, make_dataset

    stems = list_stems(root, "train")
    common = dict(img_resize=img_resize, batch_size=batch_size, repeat=True, seed=0)
    results = {
        "train": _time_dataset(
            make_dataset(root, "train", training=True, **common), batches, batch_size
        ),
        "train_cached": _time_dataset(
            make_dataset(root, "train", training=True, cache=True, **common), batches, batch_size
        ),
        "val": _time_dataset(
            make_dataset(root, "train", training=False, drop_remainder=True, **common),
            batches,
            batch_size,
        ),
        "load_frame": _time_load_frame(root, stems, repeats=max(4, batches)),
    }
    if pre_resize:
        from data_tools.resize import resize_dataset

        copy = os.path.join(scratch or tempfile.mkdtemp(prefix="keras_mtl_resized_"), "resized")
        start = time.perf_counter()
        counts = resize_dataset(root, copy, pre_resize, splits=["train"], progress=False)
        results["resize_seconds_per_frame"] = (time.perf_counter() - start) / counts["written"]
        results["train_pre_resized"] = _time_dataset(
            make_dataset(copy, "train", training=True, **common), batches, batch_size
        )
        results["train_pre_resized_no_augment"] = _time_dataset(
            make_dataset(copy, "train", training=True, augment_data=False, **common),
            batches,
            batch_size,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Input pipeline throughput (samples/s).")
    parser.add_argument("--quick", action="store_true", help="2 frames per size, few batches")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    parser.add_argument("--img_resize", type=int, nargs=2, default=[384, 768])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="synthetic frames per size")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per pipeline")
    parser.add_argument("--data_path", default=None, help="time this dataset instead")
    parser.add_argument(
        "--pre_resize",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="also time training from a data_tools.resize copy at this size",
    )
    args = parser.parse_args(argv)
    pre_resize = tuple(args.pre_resize) if args.pre_resize else None
    if pre_resize and min(pre_resize) <= 0:
        raise UserError(f"--pre_resize {pre_resize[0]} {pre_resize[1]}: must be positive")

    frames = 2 if args.quick else args.frames
    batches = args.batches or (3 if args.quick else 10)
    img_resize = tuple(args.img_resize)
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_mtl_bench_") as tmp:
        sources = []
        if args.data_path:
            sources.append(("given", args.data_path))
        else:
            from data_tools.synthetic import generate_dataset

            for text in args.sizes:
                height, width = _parse_size(text)
                root = os.path.join(tmp, text)
                start = time.perf_counter()
                generate_dataset(root, frames, 0, height, width, seed=0, progress=False)
                print(f"generated {frames} frames {text} in {time.perf_counter() - start:.0f} s")
                sources.append((text, root))
        for index, (name, root) in enumerate(sources):
            scratch = os.path.join(tmp, f"pre_resized_{index}")
            result = benchmark_size(root, img_resize, args.batch_size, batches, pre_resize, scratch)
            rows.append({"source": name, **result})

    header = (
        f"{'source':>10} | {'train':>8} | {'train_cached':>12} | {'val':>8} | {'load_frame':>10}"
    )
    if pre_resize:
        header += f" | {'train_pre_resized':>17} | {'no_augment':>10}"
    print(
        f"\ninput pipeline, samples/s, img_resize {img_resize[0]}x{img_resize[1]}, "
        f"batch {args.batch_size}, {os.cpu_count()} CPU cores ({platform.machine()})"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        line = (
            f"{row['source']:>10} | {row['train']:8.1f} | {row['train_cached']:12.1f} | "
            f"{row['val']:8.1f} | {row['load_frame']:10.1f}"
        )
        if pre_resize:
            line += (
                f" | {row['train_pre_resized']:17.1f} | {row['train_pre_resized_no_augment']:10.1f}"
            )
        print(line)
    if pre_resize:
        print(
            f"train_pre_resized reads a data_tools.resize copy at {pre_resize[0]}x{pre_resize[1]}; "
            "no_augment: the same without geometric augmentation"
        )
    if args.json:
        payload = {
            "benchmark": "input_pipeline",
            "unit": "samples/s",
            "img_resize": list(img_resize),
            "pre_resize": list(pre_resize) if pre_resize else None,
            "batch_size": args.batch_size,
            "frames_per_size": frames,
            "timed_batches": batches,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "results": rows,
        }
        write_json_atomic(args.json, payload)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
