"""Dense optical flow (Farneback or DIS) with a forward-backward confidence, in the Cityscapes
multitask layout.

Direction: the flow is defined on the CURRENT frame's pixel grid and is the image motion since
the previous frame: a point seen at `(x, y)` in the current frame was at `(x - u, y - v)` in the
previous frame (`u > 0`: the content moved right). It is computed as the negated flow from the
current frame to the previous one (`previous(x - u, y - v) ~ current(x, y)`).

Methods (`--method`; the confidence and the stored form are the same for all):

- `farneback`: `cv2.calcOpticalFlowFarneback` with `FarnebackParams` (the seed's setting);
- `dis`: OpenCV's Dense Inverse Search (`cv2.DISOpticalFlow`, Kroeger et al. 2016) with
  `DISParams` (OpenCV's "medium" preset).

Confidence: with `b(x)` the current -> previous flow and `f` the previous -> current flow (same
method), the round-trip error is `e = |b(x) + f(x + b(x))|` (f sampled bilinearly) and

    confidence = 255 * exp(-e^2 / (2 * s^2)),   s^2 = 0.25 + 0.01 * (|b(x)|^2 + |f(x + b(x))|^2)

(pixels, as in Sundaram et al. 2010: tolerance grows with the motion); 0 where `x + b(x)` falls
outside the previous frame.

Stored form: a 3-channel uint8 PNG whose channels, in RGB order, are `u + 128`, `v + 128`
(rounded, clipped to 0..255) and the confidence; see `encode_flow` / `decode_flow`. Each flow
folder holds `flow_method.json`, the method and parameters of its flow (`read_flow_method`).

Command line:
    python -m data_tools.flow --data_path DIR [--method {farneback,dis}] [--flow_dir NAME]
        [--splits train val] [--workers K] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_tools import (
    find_child_dir,
    map_jobs,
    read_png,
    require_data_path,
    write_json_atomic,
    write_png_atomic,
)
from keras_mtl.data.layout import (
    FLOW_DIR,
    FLOW_DIRS,
    FLOW_METHOD_FILE,
    FLOW_OFFSET,
    PREVIOUS_DIR,
    RGB_DIR,
    RGB_SUFFIX,
    SEQUENCE_DIR,
    flow_dir_for,
)
from keras_mtl.errors import UserError, run_cli

STEM_PATTERN = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)$")
FLOW_METHODS: tuple[str, ...] = tuple(FLOW_DIRS)


@dataclass(frozen=True)
class FarnebackParams:
    """Parameters of `cv2.calcOpticalFlowFarneback` (OpenCV's names).

    Args:
        pyr_scale: ratio between pyramid levels.
        levels: pyramid levels including the full-size image. OpenCV stops adding levels
            before the short side falls under 32 px, so small images get fewer (64 px: 2).
        winsize: averaging window (px); larger is smoother and more robust to noise.
        iterations: iterations per pyramid level.
        poly_n: neighbourhood of the per-pixel polynomial expansion (px).
        poly_sigma: Gaussian sigma of that expansion (1.1-1.2 for poly_n 5).
        gaussian_window: Gaussian instead of box averaging window (more accurate, slower).

    Example:
        >>> flow = compute_flow(current, previous, FarnebackParams(winsize=15))
    """

    pyr_scale: float = 0.5
    levels: int = 5
    winsize: int = 21
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    gaussian_window: bool = True


# OpenCV's DIS presets (modules/video/src/dis_flow.cpp, DISOpticalFlowImpl::setPreset);
# the other parameters keep the defaults of DISParams in every preset.
_DIS_PRESETS: dict[str, dict[str, int]] = {
    "ultrafast": {
        "finest_scale": 2,
        "patch_stride": 4,
        "gradient_descent_iterations": 12,
        "variational_refinement_iterations": 0,
    },
    "fast": {
        "finest_scale": 2,
        "patch_stride": 4,
        "gradient_descent_iterations": 16,
        "variational_refinement_iterations": 5,
    },
    "medium": {
        "finest_scale": 1,
        "patch_stride": 3,
        "gradient_descent_iterations": 25,
        "variational_refinement_iterations": 5,
    },
}


@dataclass(frozen=True)
class DISParams:
    """Parameters of `cv2.DISOpticalFlow` (OpenCV's setter names in snake case).

    The defaults are OpenCV's "medium" preset (`cv2.DISOPTICAL_FLOW_PRESET_MEDIUM`); every
    parameter is set explicitly, so the flow does not depend on a preset's definition in a
    later OpenCV. `DISParams.from_preset("fast")` gives the other presets.

    Args:
        finest_scale: finest pyramid level searched (0 = full size, 1 = half size); the flow
            is upsampled from it and refined. 0 is ~4x slower and a little more accurate.
        coarsest_scale: coarsest level (-1 = automatic from the image size).
        patch_size: side of the matched patches (px).
        patch_stride: distance between neighbouring patches (px); smaller is denser, slower.
        gradient_descent_iterations: inverse-search iterations per patch.
        variational_refinement_iterations: fixed-point iterations of the variational
            refinement at each level (0 = none).
        variational_refinement_alpha: smoothness weight of the refinement.
        variational_refinement_delta: colour-constancy weight.
        variational_refinement_gamma: gradient-constancy weight.
        variational_refinement_epsilon: robust-penalty epsilon.
        use_mean_normalization: match patches after removing their mean (robust to
            illumination change).
        use_spatial_propagation: propagate good matches to neighbouring patches.

    Example:
        >>> flow = compute_flow(current, previous, DISParams())
        >>> DISParams.from_preset("fast").finest_scale
        2
    """

    finest_scale: int = 1
    coarsest_scale: int = -1
    patch_size: int = 8
    patch_stride: int = 3
    gradient_descent_iterations: int = 25
    variational_refinement_iterations: int = 5
    variational_refinement_alpha: float = 20.0
    variational_refinement_delta: float = 5.0
    variational_refinement_gamma: float = 10.0
    variational_refinement_epsilon: float = 0.01
    use_mean_normalization: bool = True
    use_spatial_propagation: bool = True

    @classmethod
    def from_preset(cls, preset: str) -> DISParams:
        """The parameters of one of OpenCV's presets: "ultrafast", "fast" or "medium".

        Raises:
            UserError: unknown preset.
        """
        if preset not in _DIS_PRESETS:
            raise UserError(f"unknown DIS preset {preset!r}; known: {', '.join(_DIS_PRESETS)}")
        return cls(**_DIS_PRESETS[preset])


FlowParams = FarnebackParams | DISParams
_PARAMS_CLASS: dict[str, type[FarnebackParams] | type[DISParams]] = {
    "farneback": FarnebackParams,
    "dis": DISParams,
}


def default_params(method: str) -> FlowParams:
    """The documented parameters of a flow method.

    Args:
        method: "farneback" or "dis".

    Raises:
        UserError: unknown method.

    Example:
        >>> default_params("dis") == DISParams()
        True
    """
    if method not in _PARAMS_CLASS:
        raise UserError(f"--method must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
    return _PARAMS_CLASS[method]()


def method_of(params: FlowParams) -> str:
    """The method name ("farneback" or "dis") of a parameter object.

    Example:
        >>> method_of(DISParams())
        'dis'
    """
    for method, params_class in _PARAMS_CLASS.items():
        if type(params) is params_class:
            return method
    raise TypeError(f"not flow parameters: {params!r}")


def method_for_flow_dir(flow_dir: str) -> str | None:
    """The method whose default flow folder is `flow_dir` (case-insensitive), else None.

    Example:
        >>> method_for_flow_dir("leftImg8bit_flow_dis_confidence")
        'dis'
    """
    for method, folder in FLOW_DIRS.items():
        if folder.lower() == flow_dir.lower():
            return method
    return None


# The default method is the one whose folder training reads by default (layout.FLOW_DIR), so
# that the flow tool, the synthetic generator and train.py agree without a flag.
_default_method = method_for_flow_dir(FLOW_DIR)
if _default_method is None:
    raise RuntimeError(f"layout.FLOW_DIR {FLOW_DIR!r} is not one of layout.FLOW_DIRS")
DEFAULT_METHOD: str = _default_method
DEFAULT_PARAMS: FlowParams = default_params(DEFAULT_METHOD)


def _farneback(from_gray: np.ndarray, to_gray: np.ndarray, params: FarnebackParams) -> np.ndarray:
    """Farneback flow d on `from_gray`'s grid with to_gray(x + d(x)) ~ from_gray(x)."""
    flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if params.gaussian_window else 0
    return cv2.calcOpticalFlowFarneback(
        from_gray,
        to_gray,
        None,
        params.pyr_scale,
        params.levels,
        params.winsize,
        params.iterations,
        params.poly_n,
        params.poly_sigma,
        flags,
    )


def _dis(from_gray: np.ndarray, to_gray: np.ndarray, params: DISParams) -> np.ndarray:
    """DIS flow d on `from_gray`'s grid with to_gray(x + d(x)) ~ from_gray(x)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(params.finest_scale)
    dis.setCoarsestScale(params.coarsest_scale)
    dis.setPatchSize(params.patch_size)
    dis.setPatchStride(params.patch_stride)
    dis.setGradientDescentIterations(params.gradient_descent_iterations)
    dis.setVariationalRefinementIterations(params.variational_refinement_iterations)
    dis.setVariationalRefinementAlpha(params.variational_refinement_alpha)
    dis.setVariationalRefinementDelta(params.variational_refinement_delta)
    dis.setVariationalRefinementGamma(params.variational_refinement_gamma)
    dis.setVariationalRefinementEpsilon(params.variational_refinement_epsilon)
    dis.setUseMeanNormalization(params.use_mean_normalization)
    dis.setUseSpatialPropagation(params.use_spatial_propagation)
    return dis.calc(from_gray, to_gray, None)


def one_way_flow(from_gray: np.ndarray, to_gray: np.ndarray, params: FlowParams) -> np.ndarray:
    """Raw OpenCV flow d (HxWx2 float32) on `from_gray`'s grid: to_gray(x + d(x)) ~ from_gray(x).

    No confidence and no sign change; `compute_flow` is what the tools store.

    Args:
        from_gray: HxW uint8 image whose grid the flow lives on.
        to_gray: HxW uint8 image it is matched into.
        params: `FarnebackParams` or `DISParams`.

    Example:
        >>> d = one_way_flow(current_gray, previous_gray, DISParams())  # = -compute_flow(...)[..., :2]
    """
    if isinstance(params, DISParams):
        return _dis(from_gray, to_gray, params)
    if isinstance(params, FarnebackParams):
        return _farneback(from_gray, to_gray, params)
    raise TypeError(f"not flow parameters: {params!r}")


def _to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {image.dtype}")
    return np.ascontiguousarray(image)


def compute_flow(
    current_rgb: np.ndarray, previous_rgb: np.ndarray, params: FlowParams | None = None
) -> np.ndarray:
    """Flow of the current frame since the previous one, with a confidence.

    Args:
        current_rgb: HxWx3 (or HxW) uint8 current frame.
        previous_rgb: the previous frame, same shape.
        params: `FarnebackParams` or `DISParams` (the method follows the type); None =
            `DEFAULT_PARAMS`, the default method's.

    Returns:
        float32 HxWx3: `u`, `v` in pixels (motion since the previous frame, see the module
        docstring for the direction) and the confidence in 0..255.

    Example:
        >>> flow = compute_flow(current, previous, DISParams())
        >>> u, v, confidence = flow[..., 0], flow[..., 1], flow[..., 2]
    """
    params = DEFAULT_PARAMS if params is None else params
    current = _to_gray(current_rgb)
    previous = _to_gray(previous_rgb)
    if current.shape != previous.shape:
        raise ValueError(f"frame shapes differ: {current.shape} vs {previous.shape}")
    height, width = current.shape
    backward = one_way_flow(current, previous, params)  # current grid -> previous frame
    forward = one_way_flow(previous, current, params)  # previous grid -> current frame

    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    target_x = grid_x + backward[..., 0]
    target_y = grid_y + backward[..., 1]
    forward_at_target = cv2.remap(
        forward, target_x, target_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    round_trip = backward + forward_at_target
    error_sq = np.sum(round_trip**2, axis=-1)
    tolerance_sq = 0.25 + 0.01 * (
        np.sum(backward**2, axis=-1) + np.sum(forward_at_target**2, axis=-1)
    )
    confidence = 255.0 * np.exp(-error_sq / (2.0 * tolerance_sq))
    inside = (target_x >= 0) & (target_x <= width - 1) & (target_y >= 0) & (target_y <= height - 1)
    confidence = np.where(inside, confidence, 0.0)
    return np.dstack([-backward[..., 0], -backward[..., 1], confidence]).astype(np.float32)


def encode_flow(flow: np.ndarray) -> np.ndarray:
    """Stored form of a flow: uint8 HxWx3 (u + 128, v + 128, confidence), rounded and clipped.

    Args:
        flow: float HxWx3 (u, v in pixels, confidence 0..255), as `compute_flow` returns.
    """
    flow = np.asarray(flow, dtype=np.float32)
    encoded = np.empty(flow.shape, dtype=np.float32)
    encoded[..., 0:2] = flow[..., 0:2] + FLOW_OFFSET
    encoded[..., 2] = flow[..., 2]
    return np.clip(np.rint(encoded), 0, 255).astype(np.uint8)


def decode_flow(encoded: np.ndarray) -> np.ndarray:
    """Inverse of `encode_flow`: float32 HxWx3 (u, v in pixels, confidence 0..255)."""
    flow = np.asarray(encoded, dtype=np.float32).copy()
    flow[..., 0:2] -= FLOW_OFFSET
    return flow


# ---------------------------------------------------------------------------------------------
# The record of a flow folder's method: <data_path>/<flow_dir>/flow_method.json

FLOW_FORMAT = "uint8 PNG, RGB = (u + 128, v + 128, confidence 0..255); see data_tools/flow.py"


def flow_record(params: FlowParams, *, finished: bool = True) -> dict[str, Any]:
    """The JSON record `run_flow` writes into a flow folder.

    Args:
        params: the parameters the folder's flow was computed with.
        finished: False while a run is writing the folder (an interrupted run leaves it so).

    Returns:
        `{"method", "params", "opencv_version", "format", "finished"}`.

    Example:
        >>> flow_record(DISParams())["method"]
        'dis'
    """
    return {
        "method": method_of(params),
        "params": asdict(params),
        "opencv_version": cv2.__version__,
        "format": FLOW_FORMAT,
        "finished": finished,
    }


def params_from_record(record: dict[str, Any], source: str = "flow record") -> FlowParams:
    """The parameters a record describes (to compute flow for new frames the same way).

    Args:
        record: as `read_flow_method` returns.
        source: how to name the record in errors (its path).

    Raises:
        UserError: unknown method or parameter names.

    Example:
        >>> params = params_from_record(read_flow_method("data/synthetic"))
        >>> flow = compute_flow(current, previous, params)
    """
    method = record.get("method") if isinstance(record, dict) else None
    if method not in _PARAMS_CLASS:
        raise UserError(f"{source}: unknown flow method {method!r}; known: {FLOW_METHODS}")
    params_class = _PARAMS_CLASS[method]
    values = record.get("params", {})
    known = {item.name for item in fields(params_class)}
    if not isinstance(values, dict) or set(values) - known:
        raise UserError(
            f"{source}: {method} parameters {values!r} are not a subset of {sorted(known)}"
        )
    return params_class(**values)


def read_flow_method(
    data_path: str | os.PathLike, flow_dir: str = FLOW_DIR
) -> dict[str, Any] | None:
    """The method record of a dataset's flow folder, or None when the folder has none.

    A flow folder without `flow_method.json` was written before records existed, by the
    Farneback-only flow tool (`FarnebackParams()`).

    Args:
        data_path: dataset root.
        flow_dir: flow folder name under it (matched case-insensitively).

    Returns:
        The record (`flow_record`): method, params, opencv_version, format, finished.

    Raises:
        UserError: the flow folder is missing, or its record is unreadable or unknown.

    Example:
        >>> read_flow_method("data/synthetic", "leftImg8bit_flow_dis_confidence")["method"]
        'dis'
    """
    root = require_data_path(data_path)
    folder = find_child_dir(root, flow_dir)
    if folder is None:
        raise UserError(f"--flow_dir {flow_dir!r}: no such folder under {root}")
    return _read_record(folder)


def _read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / FLOW_METHOD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a readable flow record ({error}); delete it") from None
    params_from_record(record, str(path))  # validates method and parameter names
    return record


def find_flow_dirs(data_path: str | os.PathLike) -> dict[str, dict[str, Any] | None]:
    """Every flow folder of a dataset with its method record (None: written before records).

    A flow folder is a sub-folder of the root whose name starts with `leftImg8bit_flow`
    (any case) or that holds `flow_method.json`.

    Example:
        >>> find_flow_dirs("data/synthetic")
        {'leftImg8bit_flow_dis_confidence': {'method': 'dis', ...}}
    """
    root = require_data_path(data_path)
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (
            folder.name.lower().startswith("leftimg8bit_flow")
            or (folder / FLOW_METHOD_FILE).is_file()
        ):
            found[folder.name] = _read_record(folder)
    return found


def _same_flow(record: dict[str, Any], params: FlowParams) -> bool:
    return record.get("method") == method_of(params) and record.get("params") == asdict(params)


def _describe(record: dict[str, Any]) -> str:
    return f"{record.get('method')} flow (parameters {record.get('params')})"


def _prepare_flow_folder(
    flow_root: Path, params: FlowParams, splits: Sequence[str], overwrite: bool
) -> None:
    """Refuses to mix methods in one flow folder, then marks it as being written.

    Raises:
        UserError: the folder holds flow of other parameters and --overwrite was not given,
            or it holds splits that this run would leave with the other parameters.
    """
    record = _read_record(flow_root) if flow_root.is_dir() else None
    if record is None and flow_root.is_dir() and next(flow_root.glob("*/*/*.png"), None):
        # Files without a record were written by the Farneback-only tool.
        record = flow_record(FarnebackParams())
    replacing = record.get("replacing") if record else None
    if record is not None and (not _same_flow(record, params) or replacing):
        if not overwrite:
            what = (
                f"flow of an interrupted --overwrite run (some of it {_describe(replacing)})"
                if replacing and _same_flow(record, params)
                else _describe(record)
            )
            raise UserError(
                f"--method {method_of(params)}: {flow_root} holds {what}; pass --overwrite to "
                "recompute it, or write to another folder with --flow_dir"
            )
        wanted = {split.lower() for split in splits}
        others = sorted(
            p.name for p in flow_root.iterdir() if p.is_dir() and p.name.lower() not in wanted
        )
        if others:
            raise UserError(
                f"--overwrite: {flow_root} also holds {others} with {_describe(record)}; add "
                "them to --splits, or delete them, so that the folder has one method"
            )
        replacing = replacing or {"method": record["method"], "params": record["params"]}
    marker = flow_record(params, finished=False)
    if replacing:
        marker["replacing"] = replacing  # until finished: the folder may hold both
    write_json_atomic(flow_root / FLOW_METHOD_FILE, marker)


# ---------------------------------------------------------------------------------------------
# The flow tool over a dataset


def previous_frame_candidates(data_path: Path, split: str, city: str, stem: str) -> list[Path]:
    """Where the previous frame of `stem` may be, in the order they are tried.

    `leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame - 1>_leftImg8bit.png` (as in
    Cityscapes' sequence package), then
    `leftImg8bit_previous/<split>/<city>/<stem>_leftImg8bit.png`.
    """
    candidates = []
    match = STEM_PATTERN.match(stem)
    if match and int(match["frame"]) > 0:
        frame_width = len(match["frame"])
        previous_stem = f"{match['city']}_{match['seq']}_{int(match['frame']) - 1:0{frame_width}d}"
        folder = find_child_dir(data_path, SEQUENCE_DIR) or data_path / SEQUENCE_DIR
        candidates.append(folder / split / city / f"{previous_stem}{RGB_SUFFIX}")
    folder = find_child_dir(data_path, PREVIOUS_DIR) or data_path / PREVIOUS_DIR
    candidates.append(folder / split / city / f"{stem}{RGB_SUFFIX}")
    return candidates


@dataclass(frozen=True)
class _FlowJob:
    current: str
    previous: str
    output: str
    method: str
    params: dict


def _run_job(job: _FlowJob) -> str:
    cv2.setNumThreads(1)  # one frame per process; avoid oversubscribing the cores
    current = read_png(job.current, rgb=True)
    previous = read_png(job.previous, rgb=True)
    if current.shape != previous.shape:
        raise UserError(
            f"{job.previous} has shape {previous.shape} but {job.current} has {current.shape}; "
            "the previous frame must have the current frame's size"
        )
    flow = compute_flow(current, previous, _PARAMS_CLASS[job.method](**job.params))
    write_png_atomic(job.output, encode_flow(flow), rgb=True)
    return job.output


def _plan_jobs(
    data_path: Path,
    flow_root: Path,
    splits: Sequence[str],
    overwrite: bool,
    params: FlowParams,
    strict: bool,
) -> tuple[list[_FlowJob], int, list[str]]:
    """Jobs of the frames to compute, the count of existing ones skipped, the splits found."""
    rgb_root = find_child_dir(data_path, RGB_DIR)
    if rgb_root is None:
        raise UserError(f"{data_path / RGB_DIR} does not exist; --data_path must hold {RGB_DIR}/")
    jobs, skipped, frames, found = [], 0, 0, []
    for split in splits:
        split_dir = rgb_root / split
        if not split_dir.is_dir():
            if strict:
                raise UserError(f"--splits: {split_dir} does not exist")
            continue
        found.append(split)
        for current in sorted(split_dir.glob(f"*/*{RGB_SUFFIX}")):
            frames += 1
            city = current.parent.name
            stem = current.name[: -len(RGB_SUFFIX)]
            output = flow_root / split / city / current.name
            if output.exists() and not overwrite:
                skipped += 1
                continue
            candidates = previous_frame_candidates(data_path, split, city, stem)
            previous = next((path for path in candidates if path.is_file()), None)
            if previous is None:
                looked = " or ".join(str(path) for path in candidates)
                raise UserError(
                    f"no previous frame for {stem} ({split}): looked for {looked}; add the "
                    "previous frame there (e.g. from Cityscapes' leftImg8bit_sequence package)"
                )
            method = method_of(params)
            jobs.append(_FlowJob(str(current), str(previous), str(output), method, asdict(params)))
    if frames == 0:
        raise UserError(
            f"no *{RGB_SUFFIX} frames under {rgb_root} for splits {list(splits)}; "
            "check --data_path and --splits"
        )
    return jobs, skipped, found


def _check_flow_dir_name(flow_dir: str) -> str:
    if not flow_dir or flow_dir in (".", "..") or Path(flow_dir).name != flow_dir:
        raise UserError(f"--flow_dir must be a folder name under --data_path, got {flow_dir!r}")
    return flow_dir


def run_flow(
    data_path: str | os.PathLike,
    splits: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    params: FlowParams | None = None,
    flow_dir: str | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Writes the flow PNG of every frame of `splits` under `data_path`, and the folder's record.

    Args:
        data_path: dataset root (holding leftImg8bit/ and the previous frames).
        splits: splits to process; None = train and val, skipping those that do not exist.
        workers: processes (None = CPU count, at most 8; 1 = in this process).
        overwrite: recompute flows that already exist.
        params: `FarnebackParams` or `DISParams`; None = `DEFAULT_PARAMS`.
        flow_dir: flow folder name under `data_path`; None = the method's (`flow_dir_for`).
        progress: show a tqdm progress bar.

    Returns:
        `{"written": n, "skipped": m}` (skipped: already present).

    Raises:
        UserError: missing folders, no frames, a frame without a previous frame, or a flow
            folder holding flow of another method or parameters (without `overwrite`).

    Example:
        >>> run_flow("data/synthetic", params=DISParams(), workers=2)
        {'written': 160, 'skipped': 0}
    """
    params = DEFAULT_PARAMS if params is None else params
    method = method_of(params)
    flow_dir = _check_flow_dir_name(flow_dir_for(method) if flow_dir is None else flow_dir)
    root = require_data_path(data_path)
    flow_root = find_child_dir(root, flow_dir) or root / flow_dir
    strict = splits is not None
    jobs, skipped, found = _plan_jobs(
        root, flow_root, splits or ("train", "val"), overwrite, params, strict
    )
    _prepare_flow_folder(flow_root, params, found, overwrite)
    for _ in map_jobs(_run_job, jobs, workers=workers, desc=f"flow ({method})", progress=progress):
        pass
    write_json_atomic(flow_root / FLOW_METHOD_FILE, flow_record(params, finished=True))
    return {"written": len(jobs), "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.flow",
        description="Optical flow + forward-backward confidence for every frame of a "
        "Cityscapes-format dataset, written to the method's flow folder "
        f"({', '.join(f'{m}: {d}' for m, d in FLOW_DIRS.items())}) with flow_method.json.",
    )
    parser.add_argument("--data_path", required=True, help="dataset root")
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"{' or '.join(FLOW_METHODS)} (default {DEFAULT_METHOD}; see docs/data.md)",
    )
    parser.add_argument(
        "--flow_dir", default=None, help="flow folder name (default: the method's folder)"
    )
    parser.add_argument("--splits", nargs="+", default=None, help="default: train val")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="recompute existing flows")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    params = default_params(args.method)
    counts = run_flow(
        args.data_path,
        args.splits,
        workers=args.workers,
        overwrite=args.overwrite,
        params=params,
        flow_dir=args.flow_dir,
    )
    flow_dir = args.flow_dir or flow_dir_for(args.method)
    print(
        f"flow ({args.method}): wrote {counts['written']} files to {flow_dir}, skipped "
        f"{counts['skipped']} existing"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
