"""MobileNetV2 at output stride 16, split into a per-input stem and a shared encoder.

The block table (width 1.0) follows torchvision's MobileNetV2 without the final 1280-channel
convolution; the last stride-2 stage runs at stride 1 (no dilation added), so the encoder ends
at stride 16 with 320 channels:

| blocks | what | out ch | stride |
|---|---|---|---|
| 0 | conv3x3 s2 3->32 | 32 | 2 |
| 1 | inverted residual t=1 -> 16 | 16 | 2 |
| 2-3 | IR t=6 -> 24 (first s2) | 24 | 4 |
| 4-6 | IR t=6 -> 32 (first s2) | 32 | 8 |
| 7-10 | IR t=6 -> 64 (first s2) | 64 | 16 |
| 11-13 | IR t=6 -> 96 | 96 | 16 |
| 14-16 | IR t=6 -> 160 (stride 1 here) | 160 | 16 |
| 17 | IR t=6 -> 320 | 320 | 16 |

Blocks 0-3 form the stem (one copy per input stream, stride 4); blocks 4-17 the shared encoder.
"""

from __future__ import annotations

import keras

from keras_mtl.models.blocks import SEPARATOR, conv_bn, inverted_residual

BACKBONES: tuple[str, ...] = ("mobilenetv2", "mobilenetv2_ericsun")

# (expansion t, output channels c, repeats n, stride s) of each inverted-residual stage.
# The fifth stage (160 ch) has stride 1 instead of torchvision's 2: output stride 16.
INVERTED_RESIDUAL_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 1),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
STEM_BLOCKS = 4  # blocks 0-3 are per-stream; block 4 onward is shared
NUM_BLOCKS = 18


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds channels to a multiple of `divisor`, never going down by more than 10%.

    The rule of the MobileNet papers (and torchvision's `_make_divisible`).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_backbone(backbone: str) -> None:
    """Raises ValueError unless `backbone` is one of `BACKBONES`."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")


def block_settings(width_mult: float = 1.0) -> list[tuple[int, float, int, int]]:
    """The 17 inverted-residual blocks (1-17) as (block index, t, out channels, stride)."""
    settings = []
    index = 1
    for expansion, channels, repeats, stride in INVERTED_RESIDUAL_STAGES:
        out_channels = make_divisible(channels * width_mult)
        for repeat in range(repeats):
            settings.append((index, expansion, out_channels, stride if repeat == 0 else 1))
            index += 1
    return settings


def stem_channels(width_mult: float = 1.0) -> int:
    """Channels of the stride-4 stem output (24 at width 1.0)."""
    return block_settings(width_mult)[STEM_BLOCKS - 2][2]


def encoder_channels(width_mult: float = 1.0) -> int:
    """Channels of the stride-16 encoder output (320 at width 1.0)."""
    return block_settings(width_mult)[-1][2]


def mobilenetv2_stem(
    x: keras.KerasTensor,
    prefix: str,
    backbone: str = "mobilenetv2_ericsun",
    width_mult: float = 1.0,
) -> keras.KerasTensor:
    """Blocks 0-3 of MobileNetV2 on one input: stride 4, 24 channels at width 1.0.

    Args:
        x: the normalised input image (NHWC, 3 channels).
        prefix: layer name prefix, e.g. `rgb_stem`.
        backbone: `mobilenetv2` (torchvision blocks) or `mobilenetv2_ericsun` (the t=1 block
            keeps its 1x1 expansion).
        width_mult: channel multiplier.

    Returns:
        The stride-4 features.
    """
    check_backbone(backbone)
    x = conv_bn(
        x,
        make_divisible(STEM_CHANNELS * width_mult),
        3,
        strides=2,
        name=f"{prefix}{SEPARATOR}block0",
    )
    for index, expansion, channels, stride in block_settings(width_mult)[: STEM_BLOCKS - 1]:
        x = inverted_residual(
            x,
            channels,
            expansion,
            stride,
            name=f"{prefix}{SEPARATOR}block{index}",
            keep_expansion=backbone == "mobilenetv2_ericsun",
        )
    return x


def mobilenetv2_encoder(
    x: keras.KerasTensor, prefix: str = "encoder", width_mult: float = 1.0
) -> keras.KerasTensor:
    """Blocks 4-17 of MobileNetV2 on the (fused) stride-4 features: stride 16, 320 channels.

    Args:
        x: stride-4 features.
        prefix: layer name prefix.
        width_mult: channel multiplier.

    Returns:
        The stride-16 features (output of `{prefix}.block17.project_bn`).
    """
    for index, expansion, channels, stride in block_settings(width_mult)[STEM_BLOCKS - 1 :]:
        x = inverted_residual(
            x, channels, expansion, stride, name=f"{prefix}{SEPARATOR}block{index}"
        )
    return x
