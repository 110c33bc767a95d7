"""Synthetic driving scenes written in the Cityscapes multitask layout.

Every frame is ray cast, per pixel and vectorised with numpy, through a pinhole camera mounted
about 1.4 m above a straight street: a ground plane (road with lane marks and sometimes a
zebra crossing, sidewalks with paving tiles, grass verges), rows of building facades, hedges,
walls and fences at varying lateral distances, poles with traffic signs, trees, a distant
skyline, sky, the ego vehicle's bonnet, and road users standing on the ground: cars, trucks and
buses (boxes), pedestrians and cyclists (rider + bicycle; articulated silhouettes on planes
facing the camera). Textures are procedural functions of world (or object) coordinates, so the
optical flow between two renders is the true image motion; lighting (sun direction and
strength, ambient, exposure, white balance, haze) is drawn per scene.

Between the previous and the current frame the camera drives forward by `ego_speed` metres, so
everything static moves in the image too; a fraction of the road users also move on their own
(cars along their lane, pedestrians along the sidewalk or across the road, cyclists along or
across). Only those are labelled moving: telling them apart needs flow and appearance.

Per frame the generator writes the current frame, the previous frame (in leftImg8bit_sequence,
named as in Cityscapes' sequence package), Cityscapes labelIds, the five-class labelTrainIds, the
motion mask (0 static, 255 moving), the disparity (uint16, p = round(256 d) + 1, 0 = invalid for
sky and bonnet, d = fx * baseline / depth) and the camera JSON, then runs `data_tools.flow`
(`--flow_method`).

Deterministic: frame `i` of split `s` is drawn from `SeedSequence([seed, split code, i])`, so the
output does not depend on the number of workers.

`--drop_labels motion=0.5,depth=0.1` leaves out a task's label files on that fraction of the
frames of the splits `--drop_splits` names (default: train), to test and benchmark training
with `--labels partial`: dropping means not writing the file (motion: the motion mask;
semantic: both label images; depth: the disparity, the camera JSON stays). Which frames lose a
label is drawn from the seed, the split and the task alone (exactly round(rate * frames) of
them), so the images are those of the same dataset without dropping; the stems are recorded in
synthetic_dataset.json (`dropped_labels`).

With `--sequence N` it renders instead one drive of N consecutive frames of one street (the
camera and the road users moving on frame after frame), written as Cityscapes
`leftImg8bit_sequence` frames and, with `--mp4 PATH`, as an MPEG-4 video.

Command line:
    python -m data_tools.synthetic --out DIR --num_train N --num_val M --height H --width W \
        --seed S [--workers K] [--flow_method {farneback,dis}] [--object_count ...] \
        [--drop_labels motion=0.5,depth=0.1 [--drop_splits train]]
    python -m data_tools.synthetic --out DIR --sequence N [--mp4 PATH] [--fps F] --height H \
        --width W --seed S [--object_count ...] ...
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_tools import default_workers, map_jobs, read_png, write_json_atomic, write_png_atomic
from data_tools.flow import DEFAULT_METHOD, default_params, run_flow
from keras_mtl.data.labels import FIVE_CLASS_NAMES, LABEL_BY_NAME, label_ids_to_five_classes
from keras_mtl.data.layout import (
    CAMERA_DIR,
    CAMERA_SUFFIX,
    DISPARITY_DIR,
    DISPARITY_SUFFIX,
    FIVE_CLASS_SUFFIX,
    FLOW_DIRS,
    GT_DIR,
    LABEL_IDS_SUFFIX,
    MOTION_SUFFIX,
    RGB_DIR,
    RGB_SUFFIX,
    SEQUENCE_DIR,
    flow_dir_for,
)
from keras_mtl.errors import UserError, run_cli
from keras_mtl.io import save_atomic

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
CITIES = {
    "train": ("alderbrook", "birchfield"),
    "val": ("cedarton",),
    "test": ("dunmore",),
}
ANNOTATED_FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet
BASELINE = 0.209313  # metres, Cityscapes' stereo baseline
FOCAL_PER_WIDTH = 2262.52 / 2048.0  # Cityscapes' fx relative to the image width
NEAR = 0.3  # metres; nothing closer to the camera is rendered
MANIFEST = "synthetic_dataset.json"
# Present while a generation runs: a rerun after an interruption may clear the folder again.
IN_PROGRESS = "synthetic_dataset.in_progress"
# Drives (--sequence): their own random stream (the splits use codes 0-2), split and city.
DRIVE_CODE = 3
DRIVE_SPLIT = "demo"
DRIVE_CITY = "ellwood"
MAX_DRIVE_FRAMES = 1000
DRIVE_MANIFEST = "synthetic_sequence.json"
DRIVE_IN_PROGRESS = "synthetic_sequence.in_progress"
DRIVE_FPS = 17.0  # Cityscapes' frame rate

_ID = {name: label.id for name, label in LABEL_BY_NAME.items()}

# Tasks whose labels `--drop_labels` may leave out, and the code of each one's random stream
# (after the split codes and DRIVE_CODE).
DROPPABLE_TASKS: dict[str, int] = {"depth": 10, "semantic": 11, "motion": 12}


def parse_drop_labels(text: str | None) -> dict[str, float]:
    """`--drop_labels` text `motion=0.5,depth=0.1` -> `{"motion": 0.5, "depth": 0.1}`.

    Args:
        text: comma-separated `task=rate` entries, rate in [0, 1]; None or "" = nothing.

    Raises:
        UserError: naming `--drop_labels`, for an unknown task, a bad or repeated entry or a
            rate outside [0, 1].

    Example:
        >>> parse_drop_labels("motion=0.5, depth=0.1")
        {'motion': 0.5, 'depth': 0.1}
    """
    rates: dict[str, float] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        task, sep, value = entry.partition("=")
        task = task.strip()
        if not sep or task not in DROPPABLE_TASKS:
            raise UserError(
                f"--drop_labels {text!r}: {entry!r} is not TASK=RATE with TASK one of "
                f"{', '.join(DROPPABLE_TASKS)} (e.g. --drop_labels motion=0.5,depth=0.1)"
            )
        try:
            rate = float(value)
        except ValueError:
            rate = float("nan")
        if not 0.0 <= rate <= 1.0:
            raise UserError(f"--drop_labels {text!r}: the rate of {task} must be in [0, 1]")
        if task in rates:
            raise UserError(f"--drop_labels {text!r}: {task} is given twice")
        rates[task] = rate
    return rates


def dropped_frames(seed: int, split: str, count: int, task: str, rate: float) -> list[int]:
    """Indices of the frames of `split` whose `task` label is dropped: round(rate * count) of
    them, drawn from (seed, split, task) only, sorted.

    Example:
        >>> len(dropped_frames(0, "train", 10, "motion", 0.5))
        5
    """
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), SPLIT_CODES[split], DROPPABLE_TASKS[task]])
    )
    return sorted(int(i) for i in rng.permutation(int(count))[: int(round(rate * count))])


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Difficulty:
    """Knobs that make the scenes harder or easier (each is also a CLI flag of the same name).

    Args:
        object_count: mean number of road users per frame (Poisson).
        moving_fraction: probability that a road user moves on its own.
        object_speed: multiplier on the road users' base speeds (car 0.9, truck 0.7, bus 0.6,
            cyclist 0.5, pedestrian 0.25 metres per frame).
        ego_speed: metres the camera drives forward between the previous and the current frame.
        texture_noise: standard deviation (grey levels) of the sensor noise added to each
            frame independently; also scales the texture contrast a little.
        lighting_variation: 0 = the same lighting in every scene, 1 = wide variation of sun,
            ambient, exposure and white balance.
    """

    object_count: float = 10.0
    moving_fraction: float = 0.5
    object_speed: float = 1.0
    ego_speed: float = 1.0
    texture_noise: float = 2.0
    lighting_variation: float = 0.5

    def validate(self) -> Difficulty:
        """Returns self, or raises UserError naming the offending flag."""
        limits = {
            "object_count": (0.0, 50.0),
            "moving_fraction": (0.0, 1.0),
            "object_speed": (0.0, 5.0),
            "ego_speed": (0.0, 5.0),
            "texture_noise": (0.0, 50.0),
            "lighting_variation": (0.0, 1.0),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not (isinstance(value, int | float) and low <= value <= high):
                raise UserError(f"--{name} must be a number in [{low}, {high}], got {value!r}")
        return self


def make_difficulty(**knobs: Any) -> Difficulty:
    """A validated `Difficulty` from keyword knobs (unknown names raise UserError)."""
    known = {item.name for item in fields(Difficulty)}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise UserError(f"unknown difficulty setting(s) {unknown}; known: {sorted(known)}")
    return Difficulty(**{name: float(value) for name, value in knobs.items()}).validate()


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: intrinsics in pixels, mount height and stereo baseline in metres.

    The camera looks along the world +z axis (x right, y up), without pitch or roll; depth is
    the z distance, as in Cityscapes' disparity maps.
    """

    height: int
    width: int
    fx: float
    fy: float
    u0: float
    v0: float
    mount_height: float
    baseline: float = BASELINE

    @classmethod
    def for_image(cls, height: int, width: int, mount_height: float = 1.4) -> Camera:
        """Cityscapes-like field of view (fx = 1.105 * width) for an image of this size."""
        focal = FOCAL_PER_WIDTH * width
        return cls(height, width, focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, mount_height)

    def to_json(self) -> dict[str, Any]:
        """The camera in Cityscapes' camera JSON format (extrinsic z = mount height)."""
        return {
            "extrinsic": {
                "baseline": self.baseline,
                "pitch": 0.0,
                "roll": 0.0,
                "yaw": 0.0,
                "x": 0.0,
                "y": 0.0,
                "z": round(self.mount_height, 6),
            },
            "intrinsic": {
                "fx": self.fx,
                "fy": self.fy,
                "u0": self.u0,
                "v0": self.v0,
            },
        }


def depth_to_disparity_png(depth: np.ndarray, camera: Camera) -> np.ndarray:
    """Cityscapes disparity encoding: p = round(256 * fx * baseline / depth) + 1, 0 = invalid.

    Args:
        depth: float metres, 0 or non-finite where invalid.
        camera: gives fx and the baseline.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    disparity = np.where(valid, camera.fx * camera.baseline / np.where(valid, depth, 1.0), 0.0)
    encoded = np.where(valid, np.rint(disparity * 256.0) + 1.0, 0.0)
    return np.clip(encoded, 0, 65535).astype(np.uint16)


def disparity_png_to_depth(encoded: np.ndarray, camera: Camera | dict) -> np.ndarray:
    """Inverse of `depth_to_disparity_png` (without clipping): metres, 0 where invalid."""
    if isinstance(camera, dict):
        fx, baseline = camera["intrinsic"]["fx"], camera["extrinsic"]["baseline"]
    else:
        fx, baseline = camera.fx, camera.baseline
    encoded = np.asarray(encoded, dtype=np.float64)
    disparity = (encoded - 1.0) / 256.0
    valid = encoded > 1
    return np.where(valid, fx * baseline / np.where(valid, disparity, 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# Procedural textures (functions of world or object coordinates)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xBF58476D1CE4E5B9)
_M4 = np.uint64(0x94D049BB133111EB)


def _mix64(h: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) from pre-multiplied lattice coordinates (splitmix-style finaliser)."""
    h = h ^ np.uint64((seed * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(30)
    h *= _M3
    h ^= h >> np.uint64(27)
    h *= _M4
    h ^= h >> np.uint64(31)
    return (h >> np.uint64(40)).astype(np.float64) * (1.0 / (1 << 24))


def _as_u64(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(np.int64).view(np.uint64)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) hash of integer lattice points."""
    return _mix64((_as_u64(ix) * _M1) ^ (_as_u64(iy) * _M2), seed)


def _value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with unit lattice spacing."""
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    ix, iy = _as_u64(x0), _as_u64(y0)
    one = np.uint64(1)
    hx0, hx1 = ix * _M1, (ix + one) * _M1
    hy0, hy1 = iy * _M2, (iy + one) * _M2
    n00 = _mix64(hx0 ^ hy0, seed)
    n10 = _mix64(hx1 ^ hy0, seed)
    n01 = _mix64(hx0 ^ hy1, seed)
    n11 = _mix64(hx1 ^ hy1, seed)
    top = n00 + (n10 - n00) * fx
    bottom = n01 + (n11 - n01) * fx
    return top + (bottom - top) * fy


def _fade(wavelength: float, footprint: np.ndarray) -> np.ndarray:
    """Weight of a pattern of this wavelength seen with this pixel footprint (anti-aliasing)."""
    return np.clip(wavelength / (footprint + 1e-9) / 2.0 - 0.5, 0.0, 1.0)


def _fbm(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    wavelengths: tuple[float, ...],
    footprint: np.ndarray,
    roughness: float = 0.5,
) -> np.ndarray:
    """Sum of value-noise octaves, zero mean, roughly in [-0.5, 0.5]; octave amplitudes grow
    as wavelength**roughness (0 = as much fine grain as coarse blotches); octaves finer than
    the pixel footprint fade out instead of aliasing."""
    total = np.zeros_like(x)
    norm = 0.0
    for octave, wavelength in enumerate(wavelengths):
        amplitude = wavelength**roughness
        noise = _value_noise(x / wavelength, y / wavelength, seed * 31 + octave) - 0.5
        total += amplitude * noise * _fade(wavelength, footprint)
        norm += amplitude
    return total / norm


def _pulse(coord: np.ndarray, period: float, duty: float, footprint: np.ndarray) -> np.ndarray:
    """Anti-aliased periodic box pattern: 1 inside `duty * period` of each period, else 0;
    tends to `duty` where the period is under a few pixels."""
    half = 0.5 * duty * period
    distance = np.abs(np.mod(coord, period) - 0.5 * period)
    coverage = np.clip((half - distance) / (footprint + 1e-9) + 0.5, 0.0, 1.0)
    fade = np.clip(period / (footprint + 1e-9) / 2.0 - 1.0, 0.0, 1.0)
    return fade * coverage + (1.0 - fade) * duty


def _band(coord: np.ndarray, low: float, high: float, footprint: np.ndarray) -> np.ndarray:
    """Anti-aliased indicator of low <= coord <= high."""
    centre = 0.5 * (low + high)
    half = 0.5 * (high - low)
    return np.clip((half - np.abs(coord - centre)) / (footprint + 1e-9) + 0.5, 0.0, 1.0)


def _mix(base: np.ndarray, other: np.ndarray, amount: np.ndarray) -> np.ndarray:
    amount = np.asarray(amount)[..., None] if np.ndim(amount) else amount
    return base + (np.asarray(other) - base) * amount


def _tint(color: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """color (3,) or (n, 3) times a per-pixel factor (n,) -> (n, 3)."""
    return np.asarray(color)[None, :] * np.asarray(factor)[:, None]


# --------------------------------------------------------------------------------------------
# Scene description


@dataclass
class _Box:
    """Axis-aligned box; `lo`, `hi` at the current frame, moving with `velocity` (m/frame)."""

    lo: np.ndarray
    hi: np.ndarray
    material: str
    label: str
    color: np.ndarray
    seed: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    moving: bool = False
    style: dict = field(default_factory=dict)

    def at(self, time: float) -> tuple[np.ndarray, np.ndarray]:
        return self.lo + self.velocity * time, self.hi + self.velocity * time


@dataclass
class _Billboard:
    """Silhouette on the plane z = const facing the camera, standing on the ground at x."""

    kind: str  # pedestrian, cyclist, tree
    x: float
    z: float
    size: float
    half_width: float
    top: float
    colors: np.ndarray
    seed: int
    facing: float = 1.0
    view: str = "side"
    phase: float = 0.0
    phase_rate: float = 0.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    moving: bool = False
    style: dict = field(default_factory=dict)

    def at(self, time: float) -> tuple[float, float, float]:
        return (
            self.x + self.velocity[0] * time,
            self.z + self.velocity[2] * time,
            self.phase + self.phase_rate * time,
        )


@dataclass
class Scene:
    """One street scene: camera, street layout, static scenery, road users, lighting."""

    camera: Camera
    camera_x: float
    ego_speed: float
    road_half_width: float
    lane_width: float
    num_lanes: int
    sidewalk_width: tuple[float, float]  # left, right
    verge_width: tuple[float, float]
    crossing_z: float | None
    hood_fraction: float
    boxes: list[_Box]
    billboards: list[_Billboard]
    lighting: dict[str, Any]
    ground_style: dict[str, Any]
    texture_gain: float

    def camera_position(self, time: float) -> np.ndarray:
        """Camera centre at `time` (0 = current frame, -1 = previous frame)."""
        return np.array([self.camera_x, self.camera.mount_height, self.ego_speed * time])


def _color(rng: np.random.Generator, base: tuple[float, float, float], spread: float) -> np.ndarray:
    return np.clip(np.asarray(base) * (1.0 + rng.uniform(-spread, spread, 3)), 0.02, 0.98)


_CAR_COLORS = (
    (0.75, 0.75, 0.78),
    (0.12, 0.12, 0.14),
    (0.55, 0.08, 0.08),
    (0.1, 0.2, 0.5),
    (0.85, 0.85, 0.85),
    (0.35, 0.35, 0.38),
    (0.2, 0.35, 0.2),
    (0.8, 0.6, 0.1),
)
_FACADE_COLORS = (
    (0.75, 0.68, 0.55),
    (0.6, 0.45, 0.38),
    (0.7, 0.7, 0.68),
    (0.5, 0.5, 0.52),
    (0.78, 0.74, 0.62),
    (0.55, 0.35, 0.28),
    (0.85, 0.82, 0.75),
)
_CLOTH_COLORS = (
    (0.1, 0.1, 0.12),
    (0.2, 0.25, 0.45),
    (0.6, 0.1, 0.1),
    (0.8, 0.8, 0.78),
    (0.35, 0.3, 0.25),
    (0.15, 0.4, 0.2),
    (0.85, 0.6, 0.2),
    (0.4, 0.4, 0.42),
)
_SKIN_COLORS = ((0.85, 0.65, 0.5), (0.65, 0.45, 0.32), (0.4, 0.27, 0.18), (0.92, 0.75, 0.62))


def _pick(rng: np.random.Generator, palette: tuple) -> np.ndarray:
    return _color(rng, palette[rng.integers(len(palette))], 0.12)


def _facade_style(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "window_period": (rng.uniform(2.0, 3.5), rng.uniform(3.0, 3.6)),
        "window_duty": (rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)),
        "glass": _color(rng, (0.15, 0.18, 0.24), 0.3),
    }


def _static_box(rng: np.random.Generator, kind: str, lo: list, hi: list) -> _Box:
    """A building, hedge (vegetation), wall, fence, pole or sign box with a drawn colour."""
    color = {
        "building": lambda: _pick(rng, _FACADE_COLORS),
        "vegetation": lambda: _color(rng, (0.22, 0.38, 0.12), 0.25),
        "wall": lambda: _color(rng, (0.6, 0.58, 0.55), 0.15),
        "fence": lambda: _color(rng, (0.45, 0.33, 0.2), 0.2),
        "pole": lambda: _color(rng, (0.45, 0.45, 0.47), 0.1),
        "sign": lambda: np.array(
            [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.75, 0.1)][rng.integers(3)]
        ),
    }[kind]()
    label = "traffic sign" if kind == "sign" else kind
    style = _facade_style(rng) if kind == "building" else {}
    seed = int(rng.integers(1 << 30))
    return _Box(np.array(lo, float), np.array(hi, float), kind, label, color, seed, style=style)


def _street_scenery(rng: np.random.Generator, scene: Scene, far: float) -> None:
    """Facades, hedges, walls, fences, poles, signs, trees and the distant skyline."""
    boxes, billboards = scene.boxes, scene.billboards
    road = scene.road_half_width
    for side_index, side in enumerate((-1.0, 1.0)):
        edge = road + scene.sidewalk_width[side_index] + scene.verge_width[side_index]
        # Front row: mixed blocks right behind the verge, sometimes with gaps between them.
        z = rng.uniform(-30.0, -10.0)
        while z < far:
            length = rng.uniform(6.0, 28.0)
            kinds = ["building", "vegetation", "wall", "fence", "gap"]
            kind = str(rng.choice(kinds, p=[0.55, 0.2, 0.1, 0.08, 0.07]))
            if kind != "gap":
                height, thickness = {
                    "building": (rng.uniform(6.0, 26.0), rng.uniform(8.0, 16.0)),
                    "vegetation": (rng.uniform(2.0, 8.0), rng.uniform(1.5, 4.0)),
                    "wall": (rng.uniform(1.0, 3.0), 0.4),
                    "fence": (rng.uniform(1.0, 2.0), 0.1),
                }[kind]
                near_x = side * (edge + rng.uniform(0.0, 2.5))
                far_x = near_x + side * thickness
                lo = [min(near_x, far_x), 0.0, z]
                hi = [max(near_x, far_x), height, z + length]
                boxes.append(_static_box(rng, kind, lo, hi))
            z += length + (rng.uniform(0.0, 4.0) if rng.random() < 0.25 else 0.0)
        # Back row: tall buildings, continuous, seen above and between the front row.
        z = rng.uniform(-30.0, -10.0)
        back = side * (edge + rng.uniform(10.0, 20.0))
        while z < far:
            length = rng.uniform(10.0, 30.0)
            lo = [min(back, back + side * 15.0), 0.0, z]
            hi = [max(back, back + side * 15.0), rng.uniform(9.0, 32.0), z + length]
            boxes.append(_static_box(rng, "building", lo, hi))
            z += length
        # Poles at the kerb, half of them carrying a traffic sign facing the camera.
        z = rng.uniform(0.0, 20.0)
        while z < far * 0.6:
            x = side * (road + 0.35)
            height = rng.uniform(4.0, 7.5)
            boxes.append(_static_box(rng, "pole", [x - 0.07, 0.0, z], [x + 0.07, height, z + 0.14]))
            if rng.random() < 0.5:
                plate = rng.uniform(0.5, 0.8)
                inner, outer = x - side * 0.1, x - side * (0.1 + plate)
                lo = [min(inner, outer), height - 1.2 - plate, z - 0.04]
                hi = [max(inner, outer), height - 1.2, z]
                boxes.append(_static_box(rng, "sign", lo, hi))
            z += rng.uniform(15.0, 40.0)
        # Trees on the sidewalk.
        if rng.random() < 0.6:
            z = rng.uniform(3.0, 15.0)
            while z < far * 0.7:
                trunk, crown = rng.uniform(1.8, 3.2), rng.uniform(1.2, 2.8)
                x = side * (road + scene.sidewalk_width[side_index] * rng.uniform(0.55, 0.85))
                bark, leaves = (
                    _color(rng, (0.3, 0.22, 0.14), 0.2),
                    _color(rng, (0.2, 0.36, 0.1), 0.3),
                )
                style = {
                    "crown": crown,
                    "trunk_radius": rng.uniform(0.1, 0.18),
                    "lobes": rng.uniform(0, 2 * np.pi, 3),
                }
                seed = int(rng.integers(1 << 30))
                billboards.append(
                    _Billboard(
                        "tree", x, z, trunk, 1.3 * crown, trunk + 2.0 * crown,
                        np.stack([bark, leaves]), seed, style=style,
                    )
                )  # fmt: skip
                z += rng.uniform(8.0, 20.0)
    # Distant skyline of buildings and wooded hills closing the street: every ground ray ends
    # on it, so all depths stay under the reader's 255 m.
    x = -400.0
    while x < 400.0:
        width = rng.uniform(8.0, 40.0)
        front = far + rng.uniform(0.0, 25.0)
        kind = "vegetation" if rng.random() < 0.3 else "building"
        hi = [x + width, rng.uniform(6.0, 35.0), front + 20.0]
        boxes.append(_static_box(rng, kind, [x, 0.0, front], hi))
        x += width


def _footprint(
    box_lo: np.ndarray, box_hi: np.ndarray, margin: float
) -> tuple[float, float, float, float]:
    return box_lo[0] - margin, box_hi[0] + margin, box_lo[2] - margin, box_hi[2] + margin


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _collide(feet: np.ndarray, other: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two road users' ground footprints overlap at the same or neighbouring frames.

    Args:
        feet, other: (T, 4) footprints (x0, x1, z0, z1) at the scene's frame times.
        pairs: indices (i, j) of the frame pairs to compare (times at most one frame apart, so
            nothing passes through anything between two frames either).
    """
    a, b = feet[pairs[0]], other[pairs[1]]
    return bool(
        np.any(
            (a[:, 0] < b[:, 1]) & (b[:, 0] < a[:, 1]) & (a[:, 2] < b[:, 3]) & (b[:, 2] < a[:, 3])
        )
    )


def _vehicle_boxes(
    rng: np.random.Generator,
    kind: str,
    x: float,
    z: float,
    heading: float,
    velocity: np.ndarray,
    moving: bool,
) -> list[_Box]:
    """Boxes of one vehicle whose rear (heading +z) or front (heading -z) faces the camera at z."""
    label = {"car": "car", "truck": "truck", "bus": "bus"}[kind]
    seed = int(rng.integers(1 << 30))
    paint = _pick(rng, _CAR_COLORS)
    style = {"heading": heading}
    boxes = []

    def add(
        lo: list, hi: list, material: str, color: np.ndarray, extra: dict | None = None
    ) -> None:
        boxes.append(
            _Box(
                np.array(lo, float),
                np.array(hi, float),
                material,
                label,
                color,
                seed,
                velocity.copy(),
                moving,
                {**style, **(extra or {})},
            )
        )

    if kind == "car":
        length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.9)
        body_top, cabin_top = rng.uniform(0.9, 1.05), rng.uniform(1.38, 1.55)
        half = width / 2.0
        add([x - half, 0.28, z], [x + half, body_top, z + length], "paint", paint)
        cabin_start = z + length * rng.uniform(0.22, 0.32)
        cabin_end = z + length * rng.uniform(0.68, 0.8)
        add(
            [x - half + 0.1, body_top, cabin_start],
            [x + half - 0.1, cabin_top, cabin_end],
            "cabin",
            paint,
        )
        wheel_length, wheel_height = 0.62, 0.62
    else:
        length = rng.uniform(6.5, 9.0) if kind == "truck" else rng.uniform(10.0, 12.5)
        width = rng.uniform(2.3, 2.55)
        half = width / 2.0
        height = rng.uniform(3.0, 3.6) if kind == "truck" else rng.uniform(2.9, 3.3)
        if kind == "truck":
            cab = 2.0
            cab_z = (z, z + cab) if heading < 0 else (z + length - cab, z + length)
            cargo_z = (z + cab + 0.2, z + length) if heading < 0 else (z, z + length - cab - 0.2)
            add([x - half, 0.45, cab_z[0]], [x + half, 2.6, cab_z[1]], "cab", paint)
            add(
                [x - half, 0.9, cargo_z[0]],
                [x + half, height, cargo_z[1]],
                "cargo",
                _pick(rng, _FACADE_COLORS),
                {"stripe": _pick(rng, _CAR_COLORS)},
            )
        else:
            add([x - half, 0.35, z], [x + half, height, z + length], "bus", paint)
        wheel_length, wheel_height = 0.95, 0.95
    for wheel_z in (z + 0.15 * length, z + 0.85 * length - wheel_length):
        for wheel_x in (x - half - 0.02, x + half - 0.23):
            add(
                [wheel_x, 0.0, wheel_z],
                [wheel_x + 0.25, wheel_height, wheel_z + wheel_length],
                "tire",
                np.array([0.05, 0.05, 0.06]),
            )
    return boxes


def _road_users(
    rng: np.random.Generator,
    scene: Scene,
    difficulty: Difficulty,
    times: tuple[float, ...] = (0.0, -1.0),
    ahead: float = 0.0,
) -> None:
    """Cars, trucks, buses, pedestrians and cyclists, some of them moving on their own.

    Args:
        times: the frame times the scene is rendered at (consecutive frames): no road user
            overlaps another or the ego vehicle's keep-out box at any of them, and each one
            is at least 4 m in front of the camera at the times within one frame of 0.
        ahead: metres the camera drives beyond time 0 (a drive): the road users are spread
            over that much more street, with the same density.
    """
    camera = scene.camera
    road = scene.road_half_width
    lanes = [-road + scene.lane_width * (k + 0.5) for k in range(scene.num_lanes)]
    ego = scene.ego_speed
    time_array = np.asarray(times, dtype=np.float64)
    pairs = np.nonzero(np.abs(time_array[:, None] - time_array[None, :]) <= 1.0)
    near_times = [t for t in times if abs(t) <= 1.0]
    # The ego vehicle's keep-out box drives with the camera.
    taken = [
        np.array(
            [
                (scene.camera_x - 1.3, scene.camera_x + 1.3, -8.0 + ego * t, 3.0 + ego * t)
                for t in times
            ]
        )
    ]
    count = int(rng.poisson(difficulty.object_count * (1.0 + ahead / 65.0)))
    speed_scale = difficulty.object_speed
    tan_half = (camera.width / 2.0) / camera.fx

    for _ in range(count):
        kind = rng.choice(
            ["car", "truck", "bus", "pedestrian", "cyclist"], p=[0.42, 0.07, 0.04, 0.3, 0.17]
        )
        moving = bool(rng.random() < difficulty.moving_fraction)
        for _attempt in range(30):
            velocity = np.zeros(3)
            if kind in ("car", "truck", "bus"):
                base = (
                    {"car": 0.9, "truck": 0.7, "bus": 0.6}[kind]
                    * speed_scale
                    * rng.uniform(0.6, 1.3)
                )
                if moving or rng.random() < 0.3:
                    lane = lanes[rng.integers(len(lanes))]
                    heading = 1.0 if lane >= 0 else -1.0
                    x = lane + rng.uniform(-0.3, 0.3)
                else:  # parked at the kerb
                    side = rng.choice([-1.0, 1.0])
                    heading = side
                    x = side * (road - 1.15)
                if moving:
                    velocity = np.array([0.0, 0.0, heading * base])
                z = rng.uniform(5.0, 70.0 + ahead)
                boxes = _vehicle_boxes(rng, kind, x, z, heading, velocity, moving)
                lo = np.min([b.lo for b in boxes], axis=0)
                hi = np.max([b.hi for b in boxes], axis=0)
                centre_x, near_z = 0.5 * (lo[0] + hi[0]), lo[2]
                shapes: list = boxes
            else:
                size = rng.uniform(1.55, 1.9) if kind == "pedestrian" else rng.uniform(1.6, 1.85)
                base = (0.25 if kind == "pedestrian" else 0.5) * speed_scale * rng.uniform(0.7, 1.3)
                view, facing = "side", float(rng.choice([-1.0, 1.0]))
                if kind == "pedestrian":
                    if moving and rng.random() < 0.45:  # crossing the road
                        x = rng.uniform(-road, road)
                        velocity = np.array([facing * base, 0.0, 0.0])
                    else:  # on a sidewalk
                        side_index = int(rng.integers(2))
                        side = (-1.0, 1.0)[side_index]
                        x = side * (
                            road
                            + rng.uniform(0.3, max(0.4, scene.sidewalk_width[side_index] - 0.3))
                        )
                        if moving:
                            view = "front"
                            velocity = np.array([0.0, 0.0, facing * base])
                        elif rng.random() < 0.5:
                            view = "front"
                    half_width, top = 0.3 * size, size
                else:
                    if moving and rng.random() < 0.5:  # riding along the road
                        heading = float(rng.choice([-1.0, 1.0]))
                        x = heading * (road - rng.uniform(0.6, 1.3))
                        view = "back"
                        velocity = np.array([0.0, 0.0, heading * base])
                    else:  # crossing, or waiting at the kerb
                        x = (
                            rng.uniform(-road, road)
                            if moving
                            else float(rng.choice([-1.0, 1.0])) * (road + 0.4)
                        )
                        if moving:
                            velocity = np.array([facing * base, 0.0, 0.0])
                    half_width, top = (1.0 if view == "side" else 0.4), size + 0.1
                z = rng.uniform(4.0, 45.0 + ahead)
                colors = np.stack(
                    [
                        _pick(rng, _SKIN_COLORS),
                        _pick(rng, _CLOTH_COLORS),
                        _pick(rng, _CLOTH_COLORS),
                        _color(rng, (0.12, 0.09, 0.07), 0.4),
                        _pick(rng, _CAR_COLORS),
                        np.array([0.06, 0.06, 0.07]),
                    ]
                )
                billboard = _Billboard(
                    kind=kind,
                    x=x,
                    z=z,
                    size=size,
                    half_width=half_width,
                    top=top,
                    colors=colors,
                    seed=int(rng.integers(1 << 30)),
                    facing=facing,
                    view=view,
                    phase=rng.uniform(0, 2 * np.pi),
                    # Legs swing (pedestrians) or pedal (cyclists) only while moving.
                    phase_rate=(1.1 if kind == "pedestrian" else 0.9) if moving else 0.0,
                    velocity=velocity,
                    moving=moving,
                    style={"stripes": bool(rng.random() < 0.3)},
                )
                # Ground footprint: a side-view bicycle is long in x, a rear-view one in z.
                half_x = 0.9 if kind == "cyclist" and view == "side" else 0.35
                depth = 1.8 if view == "back" else 0.3
                lo = np.array([x - half_x, 0.0, z - 0.3])
                hi = np.array([x + half_x, top, z + depth])
                centre_x, near_z = x, z
                shapes = [billboard]
            # Free space at every frame, in front of the camera around time 0 and in view now.
            feet = np.array([_footprint(lo + velocity * t, hi + velocity * t, 0.3) for t in times])
            ok = not any(_collide(feet, other, pairs) for other in taken)
            for t in near_times:
                z_rel = near_z + velocity[2] * t - ego * t
                ok = ok and z_rel >= 4.0
            z_now = near_z
            ok = ok and abs(centre_x - scene.camera_x) < 0.9 * tan_half * z_now
            if ok:
                taken.append(feet)
                if kind in ("car", "truck", "bus"):
                    scene.boxes.extend(shapes)
                else:
                    scene.billboards.extend(shapes)
                break


def make_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    difficulty: Difficulty,
    times: tuple[float, ...] = (0.0, -1.0),
) -> Scene:
    """Draws one street scene for an image of `height` x `width` pixels.

    Args:
        rng: the scene's random generator (the scene is a function of its state).
        height: image height (px).
        width: image width (px).
        difficulty: the knobs.
        times: the consecutive frame times the scene must hold at: (0, -1) for a frame pair,
            (0, 1, ..., N - 1) for a drive of N frames (the street and its road users then
            extend as far beyond time 0 as the camera drives).

    Example:
        >>> scene = make_scene(frame_rng(0, "train", 0), 64, 128, Difficulty())
    """
    camera = Camera.for_image(height, width, mount_height=rng.uniform(1.25, 1.6))
    num_lanes = int(rng.integers(2, 5))
    lane_width = rng.uniform(3.0, 3.6)
    road = num_lanes * lane_width / 2.0
    right_lanes = [k for k in range(num_lanes) if -road + lane_width * (k + 0.5) >= 0]
    lane = right_lanes[rng.integers(len(right_lanes))]
    lv = difficulty.lighting_variation
    elevation = math.radians(rng.uniform(15.0, 65.0))
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    overcast = rng.random() < 0.6 * lv
    lighting = {
        "sun_direction": np.array(
            [
                math.cos(elevation) * math.sin(azimuth),
                math.sin(elevation),
                math.cos(elevation) * math.cos(azimuth),
            ]
        ),
        "sun": (0.25 if overcast else 0.6) + lv * rng.uniform(-0.25, 0.25),
        "ambient": (0.75 if overcast else 0.5) + lv * rng.uniform(-0.12, 0.12),
        "exposure": 1.0 + lv * rng.uniform(-0.35, 0.25),
        "white_balance": 1.0 + lv * rng.uniform(-0.12, 0.12, 3),
        "zenith": np.array([0.6, 0.63, 0.68]) if overcast else _color(rng, (0.3, 0.5, 0.85), 0.15),
        "horizon": np.array([0.8, 0.82, 0.85])
        if overcast
        else _color(rng, (0.75, 0.83, 0.92), 0.05),
        "haze_distance": rng.uniform(180.0, 600.0),
        "cloud_seed": int(rng.integers(1 << 30)),
        "clouds": rng.uniform(0.0, 0.5) + (0.3 if overcast else 0.0),
    }
    ground_style = {
        "asphalt": rng.uniform(0.22, 0.38),
        "paving": _color(rng, (0.62, 0.6, 0.56), 0.1),
        "tile": rng.uniform(0.35, 0.6),
        "grass": _color(rng, (0.3, 0.42, 0.15), 0.2),
        "dash": (rng.uniform(2.0, 4.0), rng.uniform(5.0, 9.0)),
        "seed": int(rng.integers(1 << 30)),
        "centre_yellow": bool(rng.random() < 0.3),
        "hood": _pick(rng, _CAR_COLORS) * 0.6,
    }
    scene = Scene(
        camera=camera,
        camera_x=-road + lane_width * (lane + 0.5) + rng.uniform(-0.3, 0.3),
        ego_speed=difficulty.ego_speed,
        road_half_width=road,
        lane_width=lane_width,
        num_lanes=num_lanes,
        sidewalk_width=(rng.uniform(1.8, 4.5), rng.uniform(1.8, 4.5)),
        verge_width=(
            rng.uniform(0.0, 3.0) * (rng.random() < 0.5),
            rng.uniform(0.0, 3.0) * (rng.random() < 0.5),
        ),
        crossing_z=rng.uniform(8.0, 50.0) if rng.random() < 0.4 else None,
        hood_fraction=rng.uniform(0.04, 0.08),
        boxes=[],
        billboards=[],
        lighting=lighting,
        ground_style=ground_style,
        texture_gain=1.0 + difficulty.texture_noise / 20.0,
    )
    ahead = scene.ego_speed * max(0.0, *times)  # metres driven beyond time 0
    _street_scenery(rng, scene, far=rng.uniform(110.0, 170.0) + ahead)
    _road_users(rng, scene, difficulty, tuple(float(t) for t in times), ahead)
    return scene


# --------------------------------------------------------------------------------------------
# Silhouettes (billboards); part codes index the billboard's colour table

_SKIN, _SHIRT, _PANTS, _HAIR, _FRAME, _TYRE = 1, 2, 3, 4, 5, 6
_TRUNK, _CROWN = 7, 8
# Row of the billboard's colour table for each part code (trees: 0 bark, 1 leaves).
_PART_COLOR = np.array([0, 0, 1, 2, 3, 4, 5, 0, 1])


def _capsule(px: np.ndarray, py: np.ndarray, a: tuple, b: tuple, radius: float) -> np.ndarray:
    """Points within `radius` of the segment a-b."""
    vx, vy = b[0] - a[0], b[1] - a[1]
    wx, wy = px - a[0], py - a[1]
    t = np.clip((wx * vx + wy * vy) / (vx * vx + vy * vy + 1e-12), 0.0, 1.0)
    return (wx - t * vx) ** 2 + (wy - t * vy) ** 2 <= radius * radius


def _disc(px: np.ndarray, py: np.ndarray, centre: tuple, radius: float) -> np.ndarray:
    return (px - centre[0]) ** 2 + (py - centre[1]) ** 2 <= radius * radius


def _pedestrian_parts(
    lx: np.ndarray, ly: np.ndarray, size: float, view: str, phase: float
) -> np.ndarray:
    s, q = lx / size, ly / size
    part = np.zeros(lx.shape, dtype=np.int8)
    swing = math.sin(phase)
    if view == "side":
        legs = _capsule(s, q, (0.0, 0.5), (0.14 * swing, 0.025), 0.045)
        legs |= _capsule(s, q, (0.0, 0.5), (-0.14 * swing, 0.025), 0.045)
        torso = _capsule(s, q, (0.0, 0.56), (0.0, 0.79), 0.085)
        arms = _capsule(s, q, (0.0, 0.8), (-0.12 * swing, 0.5), 0.033)
        head_centre = (0.015, 0.925)
    else:
        legs = _capsule(s, q, (0.05, 0.5), (0.06, 0.025), 0.045)
        legs |= _capsule(s, q, (-0.05, 0.5), (-0.06, 0.025), 0.045)
        torso = (np.abs(s) < 0.115) & (q > 0.48) & (q < 0.83)
        arms = _capsule(s, q, (0.14, 0.8), (0.16 + 0.02 * swing, 0.5), 0.033)
        arms |= _capsule(s, q, (-0.14, 0.8), (-0.16 - 0.02 * swing, 0.5), 0.033)
        head_centre = (0.0, 0.925)
    head = _disc(s, q, head_centre, 0.065)
    part[legs] = _PANTS
    part[torso | arms] = _SHIRT
    part[head] = _SKIN
    part[head & ((q > head_centre[1] + 0.02) | (s < head_centre[0] - 0.045))] = _HAIR
    return part


def _cyclist_parts(
    lx: np.ndarray, ly: np.ndarray, size: float, view: str, phase: float
) -> np.ndarray:
    part = np.zeros(lx.shape, dtype=np.int8)
    k = size / 1.75  # rider scale
    if view == "side":
        wheel_r = 0.34
        tyre = np.zeros(lx.shape, dtype=bool)
        for cx in (-0.55, 0.55):
            radius = np.sqrt((lx - cx) ** 2 + (ly - wheel_r) ** 2)
            tyre |= np.abs(radius - wheel_r + 0.03) < 0.035
            tyre |= radius < 0.05
        frame = np.zeros(lx.shape, dtype=bool)
        for a, b in (
            ((-0.55, 0.34), (-0.1, 0.85)),
            ((-0.1, 0.85), (0.45, 0.85)),
            ((0.45, 0.85), (0.55, 0.34)),
            ((-0.55, 0.34), (0.0, 0.34)),
            ((0.0, 0.34), (-0.1, 0.85)),
            ((0.0, 0.34), (0.45, 0.85)),
            ((0.45, 0.85), (0.42, 1.02)),
        ):
            frame |= _capsule(lx, ly, a, b, 0.025)
        pedal = (0.17 * math.cos(phase), 0.34 + 0.17 * math.sin(phase))
        hip = (-0.12, 0.95 * k + 0.05)
        knee = (0.12, 0.62 + 0.08 * math.sin(phase))
        legs = _capsule(lx, ly, hip, knee, 0.06 * k) | _capsule(lx, ly, knee, pedal, 0.05 * k)
        torso = _capsule(lx, ly, (-0.14, 1.0 * k), (0.12, 1.42 * k), 0.12 * k)
        arms = _capsule(lx, ly, (0.08, 1.38 * k), (0.42, 1.02), 0.045 * k)
        head = _disc(lx, ly, (0.2, 1.6 * k), 0.11 * k)
        helmet = head & (ly > 1.6 * k)
    else:
        tyre = (np.abs(lx) < 0.035) & (ly < 0.68)
        frame = _capsule(lx, ly, (-0.3, 1.0), (0.3, 1.0), 0.02) | (
            (np.abs(lx) < 0.03) & (ly < 1.0) & (ly > 0.3)
        )
        pedal = 0.12 * math.sin(phase)
        legs = _capsule(lx, ly, (0.1, 0.95 * k), (0.13, 0.4 + pedal), 0.065 * k)
        legs |= _capsule(lx, ly, (-0.1, 0.95 * k), (-0.13, 0.4 - pedal), 0.065 * k)
        torso = _capsule(lx, ly, (0.0, 1.02 * k), (0.0, 1.42 * k), 0.17 * k)
        arms = _capsule(lx, ly, (0.18, 1.38 * k), (0.28, 1.0), 0.045 * k)
        arms |= _capsule(lx, ly, (-0.18, 1.38 * k), (-0.28, 1.0), 0.045 * k)
        head = _disc(lx, ly, (0.0, 1.6 * k), 0.11 * k)
        helmet = head & (ly > 1.6 * k - 0.02)
    part[tyre] = _TYRE
    part[frame] = _FRAME
    part[legs] = _PANTS
    part[torso | arms] = _SHIRT
    part[head] = _SKIN
    part[helmet] = _HAIR
    return part


def _tree_parts(lx: np.ndarray, ly: np.ndarray, billboard: _Billboard) -> np.ndarray:
    part = np.zeros(lx.shape, dtype=np.int8)
    crown = billboard.style["crown"]
    centre_y = billboard.size + 0.8 * crown
    angle = np.arctan2(ly - centre_y, lx)
    lobes = billboard.style["lobes"]
    radius = crown * (
        1.0
        + 0.15 * np.sin(3 * angle + lobes[0])
        + 0.1 * np.sin(5 * angle + lobes[1])
        + 0.06 * np.sin(9 * angle + lobes[2])
    )
    part[(np.abs(lx) < billboard.style["trunk_radius"]) & (ly < centre_y)] = _TRUNK
    part[lx**2 + (ly - centre_y) ** 2 < radius**2] = _CROWN
    return part


def _billboard_parts(
    billboard: _Billboard, lx: np.ndarray, ly: np.ndarray, phase: float
) -> np.ndarray:
    local_x = lx * billboard.facing
    if billboard.kind == "pedestrian":
        return _pedestrian_parts(local_x, ly, billboard.size, billboard.view, phase)
    if billboard.kind == "cyclist":
        return _cyclist_parts(local_x, ly, billboard.size, billboard.view, phase)
    return _tree_parts(lx, ly, billboard)


# --------------------------------------------------------------------------------------------
# Materials: albedo of the visible pixels of one primitive

_WHITE = np.array([0.88, 0.88, 0.86])


def _face_coords(local: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D texture coordinates on a box face: x-faces (z, y), y-faces (x, z), z-faces (x, y)."""
    a = np.where(axis == 0, local[:, 2], local[:, 0])
    b = np.where(axis == 1, local[:, 2], local[:, 1])
    return a, b


def _face_extent(size: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = np.where(axis == 0, size[2], size[0])
    height = np.where(axis == 1, size[2], size[1])
    return width, height


def _lights(
    a: np.ndarray,
    b: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    fp: np.ndarray,
    heading: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lamp mask, plate mask and lamp colour (red at the rear, white at the front) of the
    face a vehicle shows the camera."""
    lamps = (_band(a, 0.08, 0.38, fp) + _band(a, width - 0.38, width - 0.08, fp)) * _band(
        b, 0.45 * height, 0.7 * height, fp
    )
    plate = _band(a, width / 2 - 0.26, width / 2 + 0.26, fp) * _band(
        b, 0.15 * height, 0.32 * height, fp
    )
    lamp_color = np.array([0.75, 0.05, 0.04]) if heading > 0 else np.array([0.95, 0.92, 0.8])
    return lamps, plate, lamp_color


def _shade_box(
    box: _Box, local: np.ndarray, axis: np.ndarray, fp: np.ndarray, gain: float
) -> np.ndarray:
    a, b = _face_coords(local, axis)
    size = box.hi - box.lo
    width, height = _face_extent(size, axis)
    seed, material = box.seed, box.material
    n = len(a)
    if material == "building":
        base = _tint(box.color, 1.0 + 0.35 * gain * _fbm(a, b, seed, (0.12, 0.5, 2.0), fp))
        period_a, period_b = box.style["window_period"]
        duty_a, duty_b = box.style["window_duty"]
        windows = (
            _pulse(a, period_a, duty_a, fp)
            * _pulse(b - 0.6, period_b, duty_b, fp)
            * _band(b, 3.3, height - 0.9, fp)
        )
        shops = _pulse(a, 4.5, 0.75, fp) * _band(b, 0.4, 2.7, fp)
        lit = _hash01(np.floor(a / period_a), np.floor((b - 0.6) / period_b), seed)
        glass = _tint(
            box.style["glass"],
            0.5 + 1.8 * lit**2 + gain * 0.6 * _fbm(a, b, seed + 1, (0.4, 1.5), fp),
        )
        walls = axis != 1
        albedo = _mix(base, glass, np.clip(windows + 0.85 * shops, 0, 1) * walls)
        roof = _tint(np.array([0.3, 0.3, 0.31]), 1.0 + 0.3 * _fbm(a, b, seed + 2, (0.3, 1.5), fp))
        return np.where(walls[:, None], albedo, roof)
    if material == "vegetation":
        leaves = 0.5 + gain * _fbm(a, b, seed, (0.1, 0.3, 0.9, 3.0), fp)
        return _tint(box.color, 0.35 + 1.3 * leaves)
    if material == "wall":
        courses = 1.0 - 0.3 * (1.0 - _pulse(b, 0.3, 0.88, fp))
        return _tint(
            box.color, courses * (1.0 + 0.35 * gain * _fbm(a, b, seed, (0.06, 0.3, 1.2), fp))
        )
    if material == "fence":
        slats = 0.4 + 0.6 * _pulse(a, 0.2, 0.65, fp)
        return _tint(box.color, slats * (1.0 + 0.25 * gain * _fbm(a, b, seed, (0.05, 0.4), fp)))
    if material == "pole":
        return _tint(box.color, 1.0 + 0.15 * _fbm(a, b, seed, (0.1, 0.5), fp))
    if material == "sign":
        inner = _band(a, 0.06, width - 0.06, fp) * _band(b, 0.06, height - 0.06, fp) * (axis == 2)
        symbol = _band(a, 0.3 * width, 0.7 * width, fp) * _band(b, 0.42 * height, 0.58 * height, fp)
        return _mix(
            _mix(np.tile(_WHITE, (n, 1)), np.tile(box.color, (n, 1)), inner), _WHITE, symbol * inner
        )
    heading = box.style.get("heading", 1.0)
    paint = _tint(box.color, 1.0 + 0.1 * gain * _fbm(a, b, seed, (0.3, 1.2), fp))
    if material == "paint":
        lamps, plate, lamp_color = _lights(a, b, width, height, fp, heading)
        front = axis == 2
        albedo = _mix(paint, lamp_color, lamps * front)
        albedo = _mix(albedo, _WHITE, plate * front)
        if heading < 0:
            grille = (
                _band(a, 0.5, width - 0.5, fp) * _band(b, 0.4 * height, 0.62 * height, fp) * front
            )
            albedo = _mix(albedo, np.array([0.07, 0.07, 0.08]), grille)
        seams = (
            _band(a, 0.35 * width - 0.02, 0.35 * width + 0.02, fp)
            + _band(a, 0.62 * width - 0.02, 0.62 * width + 0.02, fp)
        ) * (axis == 0)
        trim = _band(b, 0.55 * height, 0.6 * height, fp) * (axis == 0)
        return albedo * (1.0 - 0.6 * np.clip(seams + trim, 0, 1))[:, None]
    if material in ("cabin", "cab", "bus"):
        if material == "cabin":
            glass_mask = _band(a, 0.12, width - 0.12, fp) * _band(b, 0.06, height - 0.05, fp)
            glass_mask *= 1.0 - _band(a, width / 2 - 0.06, width / 2 + 0.06, fp) * (axis == 0)
        elif material == "cab":
            glass_mask = _band(a, 0.15, width - 0.15, fp) * _band(
                b, 0.6 * height, 0.92 * height, fp
            )
        else:
            side = _pulse(a, 1.3, 0.8, fp) * _band(b, 0.4 * height, 0.78 * height, fp) * (axis == 0)
            front = (
                _band(a, 0.15, width - 0.15, fp)
                * _band(b, 0.4 * height, 0.85 * height, fp)
                * (axis == 2)
            )
            glass_mask = side + front
        glass_mask = glass_mask * (axis != 1)
        reflection = (
            0.7 + 1.5 * b / np.maximum(height, 1e-3) + gain * _fbm(a, b, seed + 3, (0.5, 2.0), fp)
        )
        glass = _tint(np.array([0.07, 0.08, 0.1]), reflection)
        albedo = _mix(paint, glass, glass_mask)
        if material != "cabin":
            lamps, plate, lamp_color = _lights(a, b, width, height * 0.35, fp, heading)
            albedo = _mix(albedo, lamp_color, lamps * (axis == 2))
            albedo = _mix(albedo, _WHITE, plate * (axis == 2))
        return albedo
    if material == "cargo":
        stripe = _band(b, 0.45 * height, 0.6 * height, fp) * (axis == 0)
        albedo = _mix(
            _tint(box.color, 1.0 + 0.12 * gain * _fbm(a, b, seed, (0.2, 1.0), fp)),
            box.style["stripe"],
            stripe,
        )
        doors = (
            _band(a, width / 2 - 0.025, width / 2 + 0.025, fp) + _pulse(a, 0.6, 0.08, fp) * 0.5
        ) * (axis == 2)
        return albedo * (1.0 - 0.5 * np.clip(doors, 0, 1))[:, None]
    if material == "tire":
        hub = np.clip((0.2 - np.hypot(a - width / 2, b - height / 2)) / (fp + 1e-9) + 0.5, 0, 1) * (
            axis == 0
        )
        rubber = _tint(box.color, 1.0 + 0.4 * _fbm(a, b, seed, (0.05, 0.2), fp))
        return _mix(rubber, np.array([0.55, 0.55, 0.57]), hub)
    raise ValueError(f"unknown material {material!r}")


def _shade_billboard(
    billboard: _Billboard,
    lx: np.ndarray,
    ly: np.ndarray,
    part: np.ndarray,
    fp: np.ndarray,
    gain: float,
) -> np.ndarray:
    colors = billboard.colors[_PART_COLOR[part]]
    seed = billboard.seed
    if billboard.kind == "tree":
        bark = 1.0 + 0.35 * gain * _fbm(lx * 4.0, ly, seed, (0.08, 0.3), fp * 4.0)
        leaves = 0.35 + 1.3 * (0.5 + gain * _fbm(lx, ly, seed + 1, (0.07, 0.2, 0.6), fp))
        return colors * np.where(part == _TRUNK, bark, leaves)[:, None]
    cloth = 1.0 + 0.25 * gain * _fbm(lx, ly, seed, (0.03, 0.1, 0.3), fp)
    if billboard.style.get("stripes"):
        cloth = cloth * np.where(part == _SHIRT, 0.65 + 0.35 * _pulse(ly, 0.12, 0.5, fp), 1.0)
    return colors * cloth[:, None]


def _shade_ground(
    scene: Scene, x: np.ndarray, z: np.ndarray, fp_x: np.ndarray, fp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and label name index (0 road, 1 sidewalk, 2 terrain) of ground points."""
    style = scene.ground_style
    seed = style["seed"]
    gain = scene.texture_gain
    road = scene.road_half_width
    side = (x > 0).astype(int)
    sidewalk = np.where(side == 1, scene.sidewalk_width[1], scene.sidewalk_width[0])
    distance = np.abs(x)
    kind = np.where(distance < road, 0, np.where(distance < road + sidewalk, 1, 2))

    # Asphalt: fine aggregate grain (strong, so that near road has texture to track) + blotches.
    grain = _fbm(x, z, seed, (0.04, 0.1, 0.25), fp, roughness=0.0)
    patches = _fbm(x, z, seed + 1, (1.0, 3.0, 9.0), fp)
    asphalt = np.full(x.shape, style["asphalt"]) * (1.0 + 2.5 * gain * grain + 0.5 * patches)
    albedo = np.repeat(asphalt[:, None], 3, axis=1) * np.array([1.0, 1.0, 1.04])

    # Lane marks: dashed between lanes of one direction, solid at the centre and the edges.
    marks = np.zeros(x.shape)
    dash_on, dash_off = style["dash"]
    dashes = _pulse(z, dash_on + dash_off, dash_on / (dash_on + dash_off), fp)
    centre_x = None
    for k in range(1, scene.num_lanes):
        boundary = -road + k * scene.lane_width
        solid = boundary > -scene.lane_width * 0.5 and centre_x is None
        if solid:
            centre_x = boundary
        line = _band(x, boundary - 0.07, boundary + 0.07, fp_x)
        marks = np.maximum(marks, line * (1.0 if solid else dashes))
    for edge in (-road + 0.3, road - 0.3):
        marks = np.maximum(marks, _band(x, edge - 0.08, edge + 0.08, fp_x))
    if scene.crossing_z is not None:
        zebra = _band(z, scene.crossing_z, scene.crossing_z + 4.0, fp) * _pulse(x, 1.0, 0.5, fp_x)
        marks = np.maximum(marks, zebra * (distance < road - 0.5))
    paint = np.tile(_WHITE, (len(x), 1))
    if style["centre_yellow"] and centre_x is not None:
        yellow = _band(x, centre_x - 0.2, centre_x + 0.2, fp_x)[:, None]
        paint = paint + (np.array([0.85, 0.7, 0.15]) - paint) * yellow
    wear = 0.8 + 0.2 * _value_noise(x * 2.0, z * 0.5, seed + 2)
    albedo = _mix(albedo, paint * wear[:, None], marks * (kind == 0))

    # Sidewalk: paving tiles with grout lines and per-tile shade, a lighter kerb stone.
    tile = style["tile"]
    tile_shade = 0.85 + 0.3 * _hash01(np.floor(x / tile), np.floor(z / tile), seed + 3)
    grout = _pulse(x, tile, 0.9, fp_x) * _pulse(z, tile, 0.9, fp)
    paving = _tint(
        style["paving"],
        (0.75 + 0.25 * grout)
        * (1.0 + 0.25 * gain * _fbm(x, z, seed + 4, (0.05, 0.3), fp))
        * np.where(_fade(tile, fp) > 0, tile_shade, 1.0),
    )
    kerb = _band(distance, road, road + 0.25, fp_x)
    paving = _mix(paving, np.array([0.72, 0.72, 0.7]), kerb)
    grass = _tint(
        style["grass"], 0.55 + 1.0 * (0.5 + gain * _fbm(x, z, seed + 5, (0.05, 0.2, 0.8, 3.0), fp))
    )
    albedo = np.where((kind == 1)[:, None], paving, albedo)
    albedo = np.where((kind == 2)[:, None], grass, albedo)
    return albedo, kind


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass
class View:
    """One rendered frame: colour before sensor noise, z-depth, labels and motion.

    Attributes:
        rgb: float32 HxWx3 in [0, 1].
        depth: float32 HxW metres along the optical axis, 0 where invalid (sky, bonnet).
        label_ids: uint8 HxW Cityscapes labelIds.
        moving: bool HxW, True on independently moving road users.
        velocity: float32 HxWx3, world velocity (metres per frame) of the surface seen.
        time: the time rendered (0 = current frame, -1 = previous frame).
    """

    rgb: np.ndarray
    depth: np.ndarray
    label_ids: np.ndarray
    moving: np.ndarray
    velocity: np.ndarray
    time: float = 0.0


def _box_window(
    lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, camera: Camera
) -> tuple[int, int, int, int] | None:
    """Pixel rows/columns that can see the part of the box in front of the camera."""
    rel_lo, rel_hi = lo - origin, hi - origin
    if rel_hi[2] <= NEAR:
        return None
    us, vs = [], []
    for z in (max(rel_lo[2], NEAR), rel_hi[2]):
        for x in (rel_lo[0], rel_hi[0]):
            us.append(camera.u0 + camera.fx * x / z)
        for y in (rel_lo[1], rel_hi[1]):
            vs.append(camera.v0 - camera.fy * y / z)
    c0, c1 = max(0, math.floor(min(us)) - 1), min(camera.width, math.ceil(max(us)) + 2)
    r0, r1 = max(0, math.floor(min(vs)) - 1), min(camera.height, math.ceil(max(vs)) + 2)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _hood_mask(scene: Scene) -> np.ndarray:
    camera = scene.camera
    u = (np.arange(camera.width) - camera.u0) / (camera.width / 2.0)
    top = camera.height * (1.0 - scene.hood_fraction * (1.0 - 0.6 * u**2))
    return np.arange(camera.height)[:, None] >= top[None, :]


def render_view(scene: Scene, time: float) -> View:
    """Renders `scene` at `time` (0 = current frame, -1 = previous frame)."""
    camera = scene.camera
    height, width = camera.height, camera.width
    origin = scene.camera_position(time)
    dir_x = np.broadcast_to(
        ((np.arange(width) - camera.u0) / camera.fx)[None, :], (height, width)
    ).copy()
    dir_y = np.broadcast_to(
        (-(np.arange(height) - camera.v0) / camera.fy)[:, None], (height, width)
    ).copy()
    dir_x[dir_x == 0] = 1e-9
    dir_y[dir_y == 0] = 1e-9

    depth = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int32)  # -1 sky, 0 ground, 1.. primitives
    axis = np.ones((height, width), dtype=np.int8)
    part = np.zeros((height, width), dtype=np.int8)
    down = dir_y < 0
    depth[down] = origin[1] / -dir_y[down]
    owner[down] = 0

    primitives: list[_Box | _Billboard] = [*scene.boxes, *scene.billboards]
    for index, primitive in enumerate(primitives, start=1):
        if isinstance(primitive, _Box):
            lo, hi = primitive.at(time)
            window = _box_window(lo, hi, origin, camera)
            if window is None:
                continue
            r0, r1, c0, c1 = window
            dx, dy = dir_x[r0:r1, c0:c1], dir_y[r0:r1, c0:c1]
            tx1, tx2 = (lo[0] - origin[0]) / dx, (hi[0] - origin[0]) / dx
            ty1, ty2 = (lo[1] - origin[1]) / dy, (hi[1] - origin[1]) / dy
            near_x, near_y = np.minimum(tx1, tx2), np.minimum(ty1, ty2)
            near_z = lo[2] - origin[2]
            t_near = np.maximum(np.maximum(near_x, near_y), near_z)
            t_far = np.minimum(
                np.minimum(np.maximum(tx1, tx2), np.maximum(ty1, ty2)), hi[2] - origin[2]
            )
            hit = (t_near <= t_far) & (t_near > NEAR) & (t_near < depth[r0:r1, c0:c1])
            face = np.where(
                near_z >= np.maximum(near_x, near_y), 2, np.where(near_x >= near_y, 0, 1)
            )
            depth[r0:r1, c0:c1][hit] = t_near[hit]
            owner[r0:r1, c0:c1][hit] = index
            axis[r0:r1, c0:c1][hit] = face[hit]
        else:
            x, z, phase = primitive.at(time)
            t = z - origin[2]
            if t <= NEAR:
                continue
            window = _box_window(
                np.array([x - primitive.half_width, 0.0, z]),
                np.array([x + primitive.half_width, primitive.top, z]),
                origin,
                camera,
            )
            if window is None:
                continue
            r0, r1, c0, c1 = window
            lx = origin[0] + t * dir_x[r0:r1, c0:c1] - x
            ly = origin[1] + t * dir_y[r0:r1, c0:c1]
            parts = _billboard_parts(primitive, lx, ly, phase)
            hit = (parts > 0) & (t < depth[r0:r1, c0:c1])
            depth[r0:r1, c0:c1][hit] = t
            owner[r0:r1, c0:c1][hit] = index
            axis[r0:r1, c0:c1][hit] = 2
            part[r0:r1, c0:c1][hit] = parts[hit]

    # Shading, one primitive at a time over its visible pixels.
    flat_owner = owner.ravel()
    order = np.argsort(flat_owner, kind="stable")
    owners, starts = np.unique(flat_owner[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    albedo = np.zeros((height * width, 3))
    normal = np.zeros((height * width, 3))
    label_ids = np.zeros(height * width, dtype=np.uint8)
    moving = np.zeros(height * width, dtype=bool)
    velocity = np.zeros((height * width, 3))
    flat_depth = depth.ravel()
    flat_dx, flat_dy, flat_axis, flat_part = (
        dir_x.ravel(),
        dir_y.ravel(),
        axis.ravel(),
        part.ravel(),
    )
    ray_norm = np.sqrt(flat_dx**2 + flat_dy**2 + 1.0)
    light = scene.lighting
    gain = scene.texture_gain
    ground_pixels = None
    for owner_id, start, end in zip(owners, starts, ends, strict=True):
        pixels = order[start:end]
        if owner_id < 0:
            continue
        t = flat_depth[pixels]
        dx, dy = flat_dx[pixels], flat_dy[pixels]
        points = np.stack([origin[0] + t * dx, origin[1] + t * dy, origin[2] + t], axis=1)
        base_fp = t / camera.fx
        face_axis = flat_axis[pixels]
        cosine = np.abs(np.choose(face_axis, [dx, dy, np.ones_like(dx)])) / ray_norm[pixels]
        fp = base_fp / np.maximum(cosine, 0.05)
        if owner_id == 0:
            colors, kind = _shade_ground(scene, points[:, 0], points[:, 2], base_fp, fp)
            albedo[pixels] = colors
            label_ids[pixels] = np.array(
                [_ID["road"], _ID["sidewalk"], _ID["terrain"]], dtype=np.uint8
            )[kind]
            normal[pixels] = (0.0, 1.0, 0.0)
            ground_pixels = (pixels, points)
            continue
        primitive = primitives[owner_id - 1]
        moving[pixels] = primitive.moving
        velocity[pixels] = primitive.velocity
        if isinstance(primitive, _Box):
            lo, _ = primitive.at(time)
            albedo[pixels] = _shade_box(primitive, points - lo, face_axis, fp, gain)
            label_ids[pixels] = _ID[primitive.label]
            direction = np.stack([dx, dy, np.ones_like(dx)], axis=1)
            face_normal = np.zeros((len(pixels), 3))
            face_normal[np.arange(len(pixels)), face_axis] = -np.sign(
                direction[np.arange(len(pixels)), face_axis]
            )
            normal[pixels] = face_normal
        else:
            x, _, _ = primitive.at(time)
            parts = flat_part[pixels]
            albedo[pixels] = _shade_billboard(
                primitive, points[:, 0] - x, points[:, 1], parts, fp, gain
            )
            if primitive.kind == "pedestrian":
                label_ids[pixels] = _ID["person"]
            elif primitive.kind == "cyclist":
                label_ids[pixels] = np.where(parts >= _FRAME, _ID["bicycle"], _ID["rider"])
            else:
                label_ids[pixels] = _ID["vegetation"]
            normal[pixels] = (0.0, 0.0, -1.0)

    shade = light["ambient"] + light["sun"] * np.clip(
        np.sum(normal * light["sun_direction"], axis=1), 0.0, None
    )
    if ground_pixels is not None:
        # Soft contact shadows under the road users.
        pixels, points = ground_pixels
        ground_x, ground_z = points[:, 0], points[:, 2]
        occlusion = np.ones(len(pixels))
        for primitive in primitives:
            if isinstance(primitive, _Box):
                if primitive.label not in ("car", "truck", "bus") or primitive.material == "tire":
                    continue
                lo, hi = primitive.at(time)
                centre = 0.5 * (lo + hi)
                half = 0.5 * (hi - lo) + 0.25
            elif primitive.kind != "tree":
                x, z, _ = primitive.at(time)
                centre, half = np.array([x, 0.0, z]), np.array([0.35, 0.0, 0.35])
            else:
                continue
            u = (ground_x - centre[0]) / half[0]
            w = (ground_z - centre[2]) / half[2]
            near = np.flatnonzero((np.abs(u) < 2.5) & (np.abs(w) < 2.5))  # exp(-39) beyond
            occlusion[near] *= 1.0 - 0.55 * np.exp(-(u[near] ** 4 + w[near] ** 4))
        shade[pixels] *= occlusion
    color = albedo * shade[:, None]

    haze = np.exp(-flat_depth / light["haze_distance"])[:, None]
    color = color * haze + light["horizon"][None, :] * (1.0 - haze)
    sky = flat_owner < 0
    elevation = flat_dy[sky] / ray_norm[sky]
    sky_color = _mix(
        np.tile(light["horizon"], (sky.sum(), 1)),
        light["zenith"],
        np.clip(elevation * 3.0, 0.0, 1.0),
    )
    cloud_x = flat_dx[sky] / (flat_dy[sky] + 0.05)
    cloud_y = 1.0 / (flat_dy[sky] + 0.05)
    cloud_fp = cloud_y**2 / camera.fy
    clouds = np.clip(
        (
            0.5
            + _fbm(cloud_x, cloud_y, light["cloud_seed"], (0.5, 1.5, 4.0), cloud_fp)
            - (1.0 - light["clouds"])
        )
        * 3.0,
        0.0,
        1.0,
    )
    label_ids[sky] = _ID["sky"]
    color[sky] = _mix(sky_color, np.array([0.93, 0.93, 0.95]), clouds)

    hood = _hood_mask(scene).ravel()
    if hood.any():
        rows = np.repeat(np.arange(height), width)[hood].astype(np.float64)
        gradient = 0.55 + 0.45 * (rows - rows.min()) / max(1.0, rows.max() - rows.min())
        color[hood] = _tint(scene.ground_style["hood"], gradient) + 0.12 * light["horizon"]
        label_ids[hood] = _ID["ego vehicle"]
        moving[hood] = False
        flat_depth = np.where(hood, 0.0, flat_depth)

    color = color * light["exposure"] * light["white_balance"][None, :]
    out_depth = np.where(np.isfinite(flat_depth) & ~sky, flat_depth, 0.0)
    return View(
        rgb=np.clip(color, 0.0, 1.0).reshape(height, width, 3).astype(np.float32),
        depth=out_depth.reshape(height, width).astype(np.float32),
        label_ids=label_ids.reshape(height, width),
        moving=moving.reshape(height, width),
        velocity=velocity.reshape(height, width, 3).astype(np.float32),
        time=time,
    )


def true_flow(scene: Scene, view: View, previous_time: float | None = None) -> np.ndarray:
    """Exact image motion of `view`'s pixels since `previous_time` (default: one frame earlier).

    Same convention as `data_tools.flow`: a point at (x, y) in `view` was at (x - u, y - v).
    Sky and bonnet (depth 0) have zero flow: they are at infinity or move with the camera.
    Articulated limbs are treated as moving rigidly with their owner.

    Returns:
        float32 HxWx2 (u, v) in pixels.
    """
    camera = scene.camera
    previous_time = view.time - 1.0 if previous_time is None else previous_time
    height, width = view.depth.shape
    u = np.broadcast_to(np.arange(width, dtype=np.float64)[None, :], (height, width))
    v = np.broadcast_to(np.arange(height, dtype=np.float64)[:, None], (height, width))
    depth = view.depth.astype(np.float64)
    origin = scene.camera_position(view.time)
    points = np.stack(
        [
            origin[0] + depth * (u - camera.u0) / camera.fx,
            origin[1] - depth * (v - camera.v0) / camera.fy,
            origin[2] + depth,
        ],
        axis=-1,
    )
    points_before = points - view.velocity.astype(np.float64) * (view.time - previous_time)
    relative = points_before - scene.camera_position(previous_time)
    valid = (depth > 0) & (relative[..., 2] > 1e-6)
    z = np.where(valid, relative[..., 2], 1.0)
    u_before = camera.u0 + camera.fx * relative[..., 0] / z
    v_before = camera.v0 - camera.fy * relative[..., 1] / z
    flow = np.stack([u - u_before, v - v_before], axis=-1)
    return np.where(valid[..., None], flow, 0.0).astype(np.float32)


def _to_uint8(rgb: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    values = rgb.astype(np.float64) * 255.0
    if noise_std > 0:
        values = values + rng.normal(0.0, noise_std, values.shape)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Frames and files


def frame_stem(split: str, index: int) -> tuple[str, str, str]:
    """(city, stem of the annotated frame, stem of its previous frame) of frame `index`."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index:06d}_{ANNOTATED_FRAME:06d}"
    previous = f"{city}_{index:06d}_{ANNOTATED_FRAME - 1:06d}"
    return city, stem, previous


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one frame: depends on (seed, split, index) only."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)])
    )


@dataclass
class Sample:
    """Everything written for one annotated frame."""

    city: str
    stem: str
    previous_stem: str
    camera: Camera
    current_rgb: np.ndarray
    previous_rgb: np.ndarray
    depth: np.ndarray
    label_ids: np.ndarray
    motion: np.ndarray  # uint8 0 / 1
    scene: Scene


def generate_sample(
    seed: int, split: str, index: int, height: int, width: int, difficulty: Difficulty | None = None
) -> Sample:
    """Draws and renders frame `index` of `split` (deterministic in its arguments)."""
    difficulty = difficulty or Difficulty()
    rng = frame_rng(seed, split, index)
    scene = make_scene(rng, height, width, difficulty)
    current = render_view(scene, 0.0)
    previous = render_view(scene, -1.0)
    noise_rng = np.random.default_rng(rng.integers(1 << 62))
    city, stem, previous_stem = frame_stem(split, index)
    return Sample(
        city=city,
        stem=stem,
        previous_stem=previous_stem,
        camera=scene.camera,
        current_rgb=_to_uint8(current.rgb, difficulty.texture_noise, noise_rng),
        previous_rgb=_to_uint8(previous.rgb, difficulty.texture_noise, noise_rng),
        depth=current.depth,
        label_ids=current.label_ids,
        motion=current.moving.astype(np.uint8),
        scene=scene,
    )


def write_sample(root: Path, split: str, sample: Sample, dropped: tuple[str, ...] = ()) -> None:
    """Writes one sample's files under `root` in the Cityscapes layout (atomically).

    Args:
        root: dataset root.
        split: split folder.
        sample: the rendered frame.
        dropped: tasks whose label files are not written (`--drop_labels`).
    """
    city, stem = sample.city, sample.stem
    write_png_atomic(
        root / RGB_DIR / split / city / f"{stem}{RGB_SUFFIX}", sample.current_rgb, rgb=True
    )
    write_png_atomic(
        root / SEQUENCE_DIR / split / city / f"{sample.previous_stem}{RGB_SUFFIX}",
        sample.previous_rgb,
        rgb=True,
    )
    gt = root / GT_DIR / split / city
    if "semantic" not in dropped:
        write_png_atomic(gt / f"{stem}{LABEL_IDS_SUFFIX}", sample.label_ids)
        write_png_atomic(
            gt / f"{stem}{FIVE_CLASS_SUFFIX}", label_ids_to_five_classes(sample.label_ids)
        )
    if "motion" not in dropped:
        write_png_atomic(gt / f"{stem}{MOTION_SUFFIX}", sample.motion * np.uint8(255))
    if "depth" not in dropped:
        write_png_atomic(
            root / DISPARITY_DIR / split / city / f"{stem}{DISPARITY_SUFFIX}",
            depth_to_disparity_png(sample.depth, sample.camera),
        )
    write_json_atomic(
        root / CAMERA_DIR / split / city / f"{stem}{CAMERA_SUFFIX}", sample.camera.to_json()
    )


def _frame_job(job: tuple[str, str, int, int, int, int, dict, tuple]) -> np.ndarray:
    """Generates and writes one frame; returns its histogram (5 classes, ignore, moving)."""
    root, split, index, height, width, seed, knobs, dropped = job
    cv2.setNumThreads(1)  # one frame per process
    sample = generate_sample(seed, split, index, height, width, Difficulty(**knobs))
    write_sample(Path(root), split, sample, tuple(dropped))
    five = label_ids_to_five_classes(sample.label_ids)
    counts = np.bincount(np.where(five == 255, 5, five).ravel(), minlength=6)
    return np.append(counts, int(sample.motion.sum()))


def _check_replaceable(root: Path, manifest: str = MANIFEST, marker: str = IN_PROGRESS) -> None:
    """Refuses a non-empty `--out` that holds no output (finished or not) of this generator
    of the kind `manifest` names (a dataset, or a drive)."""
    if not root.is_dir() or not any(root.iterdir()):
        return
    if not (root / manifest).is_file() and not (root / marker).is_file():
        raise UserError(
            f"--out {root} is not empty and holds no {manifest}: choose a new or empty folder "
            "(the generator only replaces output it wrote itself)"
        )


def _start_output(root: Path, out_dir: str | os.PathLike, manifest: str, marker: str) -> None:
    """Checks `--out`, creates it and marks it in progress before anything is removed."""
    _check_replaceable(root, manifest, marker)
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Marked before anything is removed or written, so that a rerun after an interruption
        # anywhere below may clear the folder again.
        write_json_atomic(root / marker, {"note": "generation started, not finished"})
    except OSError as error:
        raise UserError(
            f"--out {os.fspath(out_dir)!r}: cannot create the folder ({error})"
        ) from error


def _clear_previous_dataset(root: Path) -> None:
    """Removes what an earlier generation wrote in `root` (so no stale frames remain)."""
    (root / MANIFEST).unlink(missing_ok=True)
    flow_dirs = tuple(FLOW_DIRS.values())  # any method's flow folder
    for folder in (RGB_DIR, SEQUENCE_DIR, GT_DIR, DISPARITY_DIR, CAMERA_DIR, *flow_dirs):
        shutil.rmtree(root / folder, ignore_errors=True)


def generate_dataset(
    out_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    height: int,
    width: int,
    seed: int = 0,
    *,
    num_test: int = 0,
    workers: int | None = None,
    flow: bool = True,
    flow_method: str | None = None,
    progress: bool = True,
    drop_labels: dict[str, float] | str | None = None,
    drop_splits: tuple[str, ...] = ("train",),
    **difficulty: float,
) -> dict[str, Any]:
    """Writes a synthetic dataset in the Cityscapes multitask layout, flow included.

    Args:
        out_dir: dataset root to create: a new or empty folder, or one holding a dataset this
            generator wrote (which is deleted first).
        num_train: frames in the train split.
        num_val: frames in the val split.
        height: image height in pixels (>= 32).
        width: image width in pixels (>= 32).
        seed: base seed; frame i of a split depends only on (seed, split, i).
        num_test: frames in the test split.
        workers: processes (None = CPU count, at most 8; 1 = in this process). Workers are
            spawned, so a script calling this with workers > 1 needs the usual
            `if __name__ == "__main__":` guard.
        flow: run `data_tools.flow` on the frames afterwards.
        flow_method: "farneback" or "dis" (None = `data_tools.flow.DEFAULT_METHOD`); the flow
            goes to that method's folder (`layout.flow_dir_for`).
        progress: show tqdm progress bars.
        drop_labels: `{task: rate}` (or the `--drop_labels` text): leave out that task's label
            files on round(rate * frames) frames of each split of `drop_splits` (see the
            module docstring); None = every label written.
        drop_splits: the splits `drop_labels` applies to.
        **difficulty: `Difficulty` knobs (object_count, moving_fraction, object_speed,
            ego_speed, texture_noise, lighting_variation).

    Returns:
        A summary (also written to `<out_dir>/synthetic_dataset.json`): root, sizes, seed,
        difficulty, frames per split, five-class pixel fractions, the moving-pixel fraction,
        the flow method and folder (None without flow), and with `drop_labels` the rates
        (`drop_labels`) and the stems left without each label (`dropped_labels`,
        `{split: {task: [stems]}}`).

    Example:
        >>> summary = generate_dataset("/tmp/synth", 8, 2, 64, 128, seed=0, workers=1)
        >>> summary["splits"]
        {'train': 8, 'val': 2}
    """
    knobs = make_difficulty(**difficulty)
    flow_method = DEFAULT_METHOD if flow_method is None else flow_method
    if flow_method not in FLOW_DIRS:
        raise UserError(f"--flow_method must be one of {', '.join(FLOW_DIRS)}, got {flow_method!r}")
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for name, value in counts.items():
        if int(value) != value or value < 0:
            raise UserError(f"--num_{name} must be a non-negative integer, got {value!r}")
    if sum(counts.values()) == 0:
        raise UserError("nothing to generate: --num_train, --num_val and --num_test are all 0")
    if height < 32 or width < 32:
        raise UserError(f"--height and --width must be at least 32, got {height}x{width}")
    rates = parse_drop_labels(drop_labels) if isinstance(drop_labels, str) else drop_labels
    rates = parse_drop_labels(",".join(f"{t}={r}" for t, r in (rates or {}).items()))
    unknown_splits = [split for split in drop_splits if split not in SPLIT_CODES]
    if unknown_splits:
        raise UserError(
            f"--drop_splits {' '.join(unknown_splits)}: choose among {', '.join(SPLIT_CODES)}"
        )
    dropped: dict[str, dict[str, list[int]]] = {
        split: {
            task: dropped_frames(seed, split, int(counts[split]), task, rate)
            for task, rate in rates.items()
        }
        for split in drop_splits
        if rates and counts[split] > 0
    }
    root = Path(out_dir)
    _start_output(root, out_dir, MANIFEST, IN_PROGRESS)
    _clear_previous_dataset(root)
    jobs = [
        (
            str(root),
            split,
            index,
            int(height),
            int(width),
            int(seed),
            asdict(knobs),
            tuple(t for t, indices in dropped.get(split, {}).items() if index in indices),
        )
        for split, count in counts.items()
        for index in range(int(count))
    ]
    workers = default_workers() if workers is None else max(1, int(workers))
    totals = np.zeros(7, dtype=np.int64)
    frames = map_jobs(_frame_job, jobs, workers=workers, desc="synthetic", progress=progress)
    for histogram in frames:
        totals += histogram
    flow_counts = None
    splits = [split for split, count in counts.items() if count > 0]
    if flow:
        flow_counts = run_flow(
            root,
            splits,
            workers=workers,
            overwrite=True,
            params=default_params(flow_method),
            progress=progress,
        )
    pixels = max(1, int(totals[:6].sum()))
    summary = {
        "root": str(root),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "difficulty": asdict(knobs),
        "splits": {split: int(counts[split]) for split in splits},
        "class_fractions": {
            name: round(float(totals[i]) / pixels, 5) for i, name in enumerate(FIVE_CLASS_NAMES)
        },
        "ignore_fraction": round(float(totals[5]) / pixels, 5),
        "moving_fraction_pixels": round(float(totals[6]) / pixels, 5),
        "flow": flow_counts,
        "flow_method": flow_method if flow else None,
        "flow_dir": flow_dir_for(flow_method) if flow else None,
    }
    if rates:
        summary["drop_labels"] = {"rates": rates, "splits": list(drop_splits)}
        summary["dropped_labels"] = {
            split: {
                task: [frame_stem(split, index)[1] for index in indices]
                for task, indices in tasks.items()
            }
            for split, tasks in dropped.items()
        }
    write_json_atomic(root / MANIFEST, summary)
    (root / IN_PROGRESS).unlink()
    return summary


# --------------------------------------------------------------------------------------------
# Drives: N consecutive frames of one street


def drive_scene(
    seed: int, num_frames: int, height: int, width: int, difficulty: Difficulty | None = None
) -> Scene:
    """The street of drive `seed`, valid for frames 0 .. num_frames - 1.

    Frame k is `render_view(scene, k)`: the camera has driven `k * ego_speed` metres and every
    road user has moved on `k` frames (walking phases included); `true_flow(scene, view)` is
    the motion since frame k - 1. The street is drawn for the drive's length, so the scene
    depends on (seed, num_frames, height, width, difficulty).

    Args:
        seed: the drive's seed (its own stream: a drive never repeats a dataset frame).
        num_frames: frames of the drive (>= 2).
        height: image height (px).
        width: image width (px).
        difficulty: the knobs (None = defaults).

    Example:
        >>> scene = drive_scene(0, 4, 64, 128)
        >>> flow_1 = true_flow(scene, render_view(scene, 1.0))  # frame 0 -> frame 1
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), DRIVE_CODE]))
    times = tuple(float(frame) for frame in range(int(num_frames)))
    return make_scene(rng, height, width, difficulty or Difficulty(), times=times)


def render_drive_frame(
    scene: Scene, seed: int, frame: int, difficulty: Difficulty | None = None
) -> np.ndarray:
    """Frame `frame` of a drive as stored: uint8 HxWx3 RGB with its own sensor noise.

    Args:
        scene: from `drive_scene` with the same seed.
        seed: the drive's seed (draws the frame's noise).
        frame: frame number (0 = first).
        difficulty: gives the noise level (None = defaults).

    Example:
        >>> rgb = render_drive_frame(drive_scene(0, 4, 64, 128), 0, 3)
    """
    difficulty = difficulty or Difficulty()
    view = render_view(scene, float(frame))
    noise_rng = np.random.default_rng(np.random.SeedSequence([int(seed), DRIVE_CODE, int(frame)]))
    return _to_uint8(view.rgb, difficulty.texture_noise, noise_rng)


def drive_frame_path(root: str | os.PathLike, frame: int) -> Path:
    """Where frame `frame` of a drive goes under `root`, Cityscapes sequence style.

    Example:
        >>> drive_frame_path("out", 2).as_posix()
        'out/leftImg8bit_sequence/demo/ellwood/ellwood_000000_000002_leftImg8bit.png'
    """
    name = f"{DRIVE_CITY}_000000_{int(frame):06d}{RGB_SUFFIX}"
    return Path(root) / SEQUENCE_DIR / DRIVE_SPLIT / DRIVE_CITY / name


def _drive_frame_job(job: tuple[str, int, int, int, int, int, dict]) -> str:
    """Renders and writes one frame of a drive; returns its path."""
    root, seed, frame, num_frames, height, width, knobs = job
    cv2.setNumThreads(1)  # one frame per process
    difficulty = Difficulty(**knobs)
    scene = drive_scene(seed, num_frames, height, width, difficulty)  # cheap next to rendering
    path = drive_frame_path(root, frame)
    write_png_atomic(path, render_drive_frame(scene, seed, frame, difficulty), rgb=True)
    return str(path)


def write_mp4(frames: list[str | os.PathLike], path: str | os.PathLike, fps: float) -> None:
    """Writes PNG frames, in order, as an MPEG-4 (mp4v) video, atomically.

    Args:
        frames: PNG files of one size (even height and width).
        path: the `.mp4` to write.
        fps: frames per second.

    Raises:
        UserError: OpenCV here cannot write MP4 (no FFmpeg backend).

    Example:
        >>> write_mp4(sorted(Path("out").rglob("*.png")), "out/drive.mp4", 17.0)
    """
    first = read_png(frames[0])  # OpenCV's BGR order, as VideoWriter wants
    height, width = first.shape[:2]

    def save(temporary: str) -> None:
        writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise UserError(
                f"--mp4 {os.fspath(path)}: this OpenCV cannot write MP4 (mp4v); install "
                "opencv-python-headless from requirements.txt (it ships FFmpeg)"
            )
        try:
            for frame in frames:
                writer.write(read_png(frame))
        finally:
            writer.release()

    save_atomic(save, path)


def generate_sequence(
    out_dir: str | os.PathLike,
    num_frames: int,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    *,
    mp4: str | os.PathLike | None = None,
    fps: float = DRIVE_FPS,
    workers: int | None = None,
    progress: bool = True,
    **difficulty: float,
) -> dict[str, Any]:
    """Renders one drive of `num_frames` consecutive frames, Cityscapes sequence style.

    Frames go to `<out_dir>/leftImg8bit_sequence/demo/ellwood/ellwood_000000_<k:06d>_leftImg8bit.png`
    (k = 0 .. num_frames - 1), optionally also to an MP4. Same world throughout: the camera
    drives `ego_speed` metres per frame and the road users keep moving. Deterministic in the
    arguments, with any number of workers.

    Args:
        out_dir: a new or empty folder, or one holding a drive this function wrote (replaced).
        num_frames: frames (2 .. 1000).
        height: image height in pixels (>= 32; even with `mp4`).
        width: image width in pixels (>= 32; even with `mp4`).
        seed: the drive's seed.
        mp4: also write the frames as an MPEG-4 video here (a `.mp4` path).
        fps: the video's frame rate.
        workers: processes (None = CPU count, at most 8; 1 = in this process).
        progress: show a tqdm progress bar.
        **difficulty: `Difficulty` knobs.

    Returns:
        A summary (also written to `<out_dir>/synthetic_sequence.json`): frames, size, seed,
        difficulty, the frame files (relative to out_dir) and the MP4 path.

    Raises:
        UserError: a bad value, naming its flag.

    Example:
        >>> summary = generate_sequence("/tmp/drive", 30, 128, 256, mp4="/tmp/drive.mp4")
        >>> summary["files"][0]
        'leftImg8bit_sequence/demo/ellwood/ellwood_000000_000000_leftImg8bit.png'
    """
    knobs = make_difficulty(**difficulty)
    if isinstance(num_frames, bool) or int(num_frames) != num_frames:
        raise UserError(f"--sequence must be an integer, got {num_frames!r}")
    if not 2 <= num_frames <= MAX_DRIVE_FRAMES:
        raise UserError(f"--sequence must be from 2 to {MAX_DRIVE_FRAMES} frames, got {num_frames}")
    if height < 32 or width < 32:
        raise UserError(f"--height and --width must be at least 32, got {height}x{width}")
    if mp4 is not None:
        if Path(mp4).suffix.lower() != ".mp4":
            raise UserError(f"--mp4 must name a .mp4 file, got {os.fspath(mp4)!r}")
        if height % 2 or width % 2:
            raise UserError(
                f"--mp4 needs an even --height and --width (MPEG-4 video), got {height}x{width}"
            )
        if not (math.isfinite(fps) and 0 < fps <= 240):
            raise UserError(f"--fps must be in (0, 240], got {fps!r}")
    root = Path(out_dir)
    _start_output(root, out_dir, DRIVE_MANIFEST, DRIVE_IN_PROGRESS)
    (root / DRIVE_MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(root / SEQUENCE_DIR, ignore_errors=True)  # no stale frames of a longer drive
    jobs = [
        (str(root), int(seed), frame, int(num_frames), int(height), int(width), asdict(knobs))
        for frame in range(int(num_frames))
    ]
    workers = default_workers() if workers is None else max(1, int(workers))
    for _ in map_jobs(_drive_frame_job, jobs, workers=workers, desc="drive", progress=progress):
        pass
    frames = [drive_frame_path(root, frame) for frame in range(int(num_frames))]
    if mp4 is not None:
        write_mp4(frames, mp4, float(fps))
    summary = {
        "root": str(root),
        "frames": int(num_frames),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "difficulty": asdict(knobs),
        "files": [path.relative_to(root).as_posix() for path in frames],
        "mp4": None if mp4 is None else os.fspath(mp4),
        "fps": float(fps) if mp4 is not None else None,
    }
    write_json_atomic(root / DRIVE_MANIFEST, summary)
    (root / DRIVE_IN_PROGRESS).unlink()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.synthetic",
        description="Render a synthetic driving dataset in the Cityscapes multitask layout "
        "(frames, previous frames, labels, motion, disparity, camera, optical flow), or with "
        "--sequence N one drive of N consecutive frames (and --mp4 a video of it).",
    )
    parser.add_argument("--out", required=True, help="dataset (or drive) root to write")
    parser.add_argument("--num_train", type=int, default=None, help="default 120")
    parser.add_argument("--num_val", type=int, default=None, help="default 40")
    parser.add_argument("--num_test", type=int, default=None, help="default 0")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: CPUs, max 8)"
    )
    parser.add_argument("--no_flow", action="store_true", help="skip running data_tools.flow")
    parser.add_argument(
        "--flow_method",
        default=None,
        help=f"{' or '.join(FLOW_DIRS)} (default {DEFAULT_METHOD}); see data_tools.flow",
    )
    parser.add_argument(
        "--sequence",
        type=int,
        default=None,
        metavar="N",
        help="render one drive of N consecutive frames instead of a dataset",
    )
    parser.add_argument("--mp4", default=None, metavar="PATH", help="with --sequence: a video")
    parser.add_argument(
        "--drop_labels",
        default=None,
        metavar="TASK=RATE,...",
        help="leave out label files on a fraction of the frames, e.g. motion=0.5,depth=0.1 "
        "(train with --labels partial); default: every label",
    )
    parser.add_argument(
        "--drop_splits",
        nargs="+",
        default=None,
        metavar="SPLIT",
        help="splits --drop_labels applies to (default: train)",
    )
    parser.add_argument(
        "--fps", type=float, default=None, help=f"with --mp4: frame rate (default {DRIVE_FPS:g})"
    )
    defaults = Difficulty()
    for item in fields(Difficulty):
        parser.add_argument(f"--{item.name}", type=float, default=getattr(defaults, item.name))
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    knobs = {item.name: getattr(args, item.name) for item in fields(Difficulty)}
    if args.sequence is not None:
        dataset_flags = [
            "num_train",
            "num_val",
            "num_test",
            "flow_method",
            "drop_labels",
            "drop_splits",
        ]
        given = [f"--{name}" for name in dataset_flags if getattr(args, name) is not None]
        if args.no_flow:
            given.append("--no_flow")
        if given:
            raise UserError(f"{', '.join(given)}: dataset flags, not used with --sequence")
        if args.fps is not None and args.mp4 is None:
            raise UserError("--fps sets the --mp4 video's frame rate; add --mp4 PATH")
        summary = generate_sequence(
            args.out,
            args.sequence,
            args.height,
            args.width,
            args.seed,
            mp4=args.mp4,
            fps=DRIVE_FPS if args.fps is None else args.fps,
            workers=args.workers,
            **knobs,
        )
        video = f" and {summary['mp4']}" if summary["mp4"] else ""
        print(f"wrote {summary['frames']} frames of one drive to {summary['root']}{video}")
        return 0
    if args.mp4 is not None or args.fps is not None:
        raise UserError("--mp4 and --fps need --sequence N (a drive to make a video of)")
    summary = generate_dataset(
        args.out,
        120 if args.num_train is None else args.num_train,
        40 if args.num_val is None else args.num_val,
        args.height,
        args.width,
        args.seed,
        num_test=0 if args.num_test is None else args.num_test,
        workers=args.workers,
        flow=not args.no_flow,
        flow_method=args.flow_method,
        drop_labels=args.drop_labels,
        drop_splits=tuple(args.drop_splits or ("train",)),
        **knobs,
    )
    fractions = ", ".join(
        f"{name} {value:.3f}" for name, value in summary["class_fractions"].items()
    )
    moving = summary["moving_fraction_pixels"]
    flow = f"; flow {summary['flow_method']} in {summary['flow_dir']}" if summary["flow"] else ""
    dropped = ""
    for split, tasks in summary.get("dropped_labels", {}).items():
        dropped += "; " + ", ".join(
            f"{split} {task} labels left out on {len(stems)} frames"
            for task, stems in tasks.items()
        )
    print(
        f"wrote {summary['splits']} to {summary['root']}; classes: {fractions}; "
        f"moving {moving:.3f}{flow}{dropped}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
