"""Convolution MAC counter and the complexity table (the seed's "Complexity (GigaMACS)" column).

MACs are counted by walking the real Keras layers of a built model, the way the original
counted them: convolutions (and dense layers, if any) only, one input per model input,
`Cout * Cin / groups * kh * kw * Hout * Wout` per convolution. BatchNorm, activations, adds
and resizes are not counted.

Usage:

```
python -m keras_mtl.complexity --img_resize 384 768 --semantic_classes 19
python -m keras_mtl.complexity --json   # last line: {"multitask": g, "depth": g, ...}
```
"""

from __future__ import annotations

import argparse
import json
import math

import keras

from keras_mtl.errors import UserError, run_cli


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs of one call of a built Conv / DepthwiseConv / SeparableConv / Dense layer, else 0.

    Uses the layer's output shape in its functional graph (batch dimension excluded).
    """
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw, in_channels, multiplier = layer.depthwise_kernel.shape
        out_h, out_w = _output_hw(layer)
        depthwise = kh * kw * in_channels * multiplier * out_h * out_w
        pointwise = in_channels * multiplier * layer.filters * out_h * out_w
        return int(depthwise + pointwise)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, in_channels, multiplier = layer.kernel.shape
        out_h, out_w = _output_hw(layer)
        return int(kh * kw * in_channels * multiplier * out_h * out_w)
    if isinstance(layer, keras.layers.Conv2D):
        # Keras stores grouped kernels as (kh, kw, Cin / groups, Cout).
        kh, kw, in_per_group, out_channels = layer.kernel.shape
        out_h, out_w = _output_hw(layer)
        return int(kh * kw * in_per_group * out_channels * out_h * out_w)
    if isinstance(layer, keras.layers.Dense):
        in_units, out_units = layer.kernel.shape
        positions = math.prod(layer.output.shape[1:-1])
        return int(in_units * out_units * positions)
    return 0


def _output_hw(layer: keras.layers.Layer) -> tuple[int, int]:
    shape = layer.output.shape
    if None in shape[1:3]:
        raise ValueError(
            f"layer {layer.name} has an unknown spatial size {shape}: build the model with a "
            "fixed input size to count MACs"
        )
    return int(shape[1]), int(shape[2])


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of `model` at batch size 1.

    Walks `model.layers` (recursing into nested models) and sums `layer_macs`.

    Example:

    ```python
    model = build_multitask_model((384, 768), semantic_classes=19)
    count_macs(model) / 1e9  # 5.710
    ```
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        else:
            total += layer_macs(layer)
    return total


def complexity_table(
    img_size: tuple[int, int] = (384, 768),
    semantic_classes: int = 5,
    backbone: str = "mobilenetv2_ericsun",
    single_task_backbone: str = "mobilenetv2",
    width_mult: float = 1.0,
) -> dict[str, dict[str, float]]:
    """GMACs and parameter counts of the multi-task model and the three single-task models.

    Returns:
        `{model: {"gmacs": float, "params": int}}` for `multitask`, `depth`, `semantic`,
        `motion`.
    """
    from keras_mtl.models import build_multitask_model, build_single_task_model
    from keras_mtl.tasks import TASK_NAMES

    models = {
        "multitask": lambda: build_multitask_model(
            img_size, semantic_classes, backbone=backbone, width_mult=width_mult
        )
    }
    for task in TASK_NAMES:
        models[task] = lambda task=task: build_single_task_model(
            task, img_size, semantic_classes, backbone=single_task_backbone, width_mult=width_mult
        )
    table = {}
    for name, build in models.items():
        model = build()
        table[name] = {"gmacs": count_macs(model) / 1e9, "params": int(model.count_params())}
        del model
        keras.backend.clear_session()
    return table


def main(argv: list[str] | None = None) -> int:
    from keras_mtl.models import BACKBONES, OUTPUT_STRIDE

    parser = argparse.ArgumentParser(
        prog="python -m keras_mtl.complexity",
        description="Conv GMACs and parameters of the multi-task and single-task models.",
    )
    parser.add_argument("--img_resize", type=int, nargs=2, default=(384, 768), metavar=("H", "W"))
    parser.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2_ericsun")
    parser.add_argument(
        "--single_task_backbone",
        choices=BACKBONES,
        default="mobilenetv2",
        help="backbone of the single-task baselines (the seed's used torchvision blocks)",
    )
    parser.add_argument("--semantic_classes", type=int, default=5)
    parser.add_argument("--width_mult", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print a JSON line of GMACs last")
    args = parser.parse_args(argv)
    height, width = args.img_resize
    if height <= 0 or width <= 0 or height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        raise UserError(
            f"--img_resize {height} {width}: height and width must be positive multiples of "
            f"{OUTPUT_STRIDE}, e.g. --img_resize 384 768"
        )
    if args.semantic_classes < 2:
        raise UserError(f"--semantic_classes {args.semantic_classes}: must be at least 2 (5 or 19)")
    if args.width_mult <= 0:
        raise UserError(f"--width_mult {args.width_mult}: must be positive, e.g. 1.0")

    table = complexity_table(
        (height, width),
        args.semantic_classes,
        backbone=args.backbone,
        single_task_backbone=args.single_task_backbone,
        width_mult=args.width_mult,
    )
    print(
        f"input {height}x{width}, {args.semantic_classes} semantic classes, width "
        f"{args.width_mult}; multitask {args.backbone}, single-task {args.single_task_backbone}"
    )
    print(f"{'model':<12} {'GMACs':>8} {'params':>12}")
    for name, row in table.items():
        print(f"{name:<12} {row['gmacs']:>8.3f} {row['params']:>12,}")
    single_sum = sum(table[task]["gmacs"] for task in ("depth", "semantic", "motion"))
    print(f"{'3 x single':<12} {single_sum:>8.3f}")
    if args.json:
        print(json.dumps({name: round(row["gmacs"], 6) for name, row in table.items()}))
    return 0


if __name__ == "__main__":
    run_cli(main)
