"""Folder names and file suffixes of the Cityscapes multitask layout.

Owned by the data reader; the discovery and validation functions live here too.
Folder names are matched case-insensitively (the seed writes `leftimg8bit`, Cityscapes
unpacks as `leftImg8bit`). Files are matched by stem `<city>_<seq>_<frame>`, never by order.
"""

from __future__ import annotations

import difflib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from keras_mtl.errors import UserError

DEFAULT_DATA_PATH = "./data/datasets/cityscapes/data"

RGB_DIR = "leftImg8bit"
RGB_SUFFIX = "_leftImg8bit.png"
# Previous frames: real Cityscapes keeps 30-frame snippets in leftImg8bit_sequence, where the
# previous frame of <city>_<seq>_<frame> is <city>_<seq>_<frame - 1>; leftImg8bit_previous is a
# flat alternative holding the previous frame under the current frame's own stem.
SEQUENCE_DIR = "leftImg8bit_sequence"
PREVIOUS_DIR = "leftImg8bit_previous"
# DIS by default: a tenth of Farneback's end-point error on a real pair (docs/data.md).
FLOW_DIR = "leftImg8bit_flow_dis_confidence"
# Flow folder of each method of `data_tools.flow --method` (the flow file format is the same).
# FLOW_DIR above is the folder training reads by default; data_tools' default method follows it.
FLOW_DIRS = {
    "farneback": "leftImg8bit_flow_farneback_confidence",
    "dis": "leftImg8bit_flow_dis_confidence",
}
# Written by data_tools.flow in the flow folder: the method and parameters of its flow.
FLOW_METHOD_FILE = "flow_method.json"
FLOW_OFFSET = 128.0  # flow PNGs store u + 128, v + 128 (and a confidence)
GT_DIR = "gtFine"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
FIVE_CLASS_SUFFIX = "_gtFine_labelTrainIds.png"
MOTION_SUFFIX = "_gtFine_labelTrainIds_motion.png"
DISPARITY_DIR = "disparity"
DISPARITY_SUFFIX = "_disparity.png"
CAMERA_DIR = "camera"
CAMERA_SUFFIX = "_camera.json"
# Depth from disparity: depth = fx * baseline / ((p - 1) / 256), clipped to this range (metres).
MIN_DEPTH = 1.0
MAX_DEPTH = 255.0


def flow_dir_for(method: str) -> str:
    """The flow folder name of a flow method (`data_tools.flow --method`).

    Args:
        method: "farneback" or "dis".

    Raises:
        UserError: unknown method, naming the known ones.

    Example:
        >>> flow_dir_for("dis")
        'leftImg8bit_flow_dis_confidence'
    """
    if method not in FLOW_DIRS:
        raise UserError(f"unknown flow method {method!r}; known: {', '.join(FLOW_DIRS)}")
    return FLOW_DIRS[method]


# ---------------------------------------------------------------------------------------------
# Discovery and validation.

# The modalities one training frame needs, in the order errors list them.
MODALITIES: tuple[str, ...] = ("rgb", "flow", "semantic", "motion", "disparity", "camera")

# Label modes (`--labels`): `strict` needs every modality of every frame (the original's rule);
# `partial` needs only the inputs, each task's label files being optional per frame.
LABEL_MODES: tuple[str, ...] = ("strict", "partial")
# The inputs every frame needs in both modes.
INPUT_MODALITIES: tuple[str, ...] = ("rgb", "flow")
# The label file of each task (depth also reads the camera, which then must exist too).
TASK_LABEL_MODALITY: dict[str, str] = {
    "depth": "disparity",
    "semantic": "semantic",
    "motion": "motion",
}


def check_label_mode(labels: str) -> str:
    """Returns `labels`; UserError naming `--labels` unless it is one of `LABEL_MODES`.

    Example:
        >>> check_label_mode("partial")
        'partial'
    """
    if labels not in LABEL_MODES:
        raise UserError(f"--labels {labels!r}: choose one of {', '.join(LABEL_MODES)}")
    return labels


_MAX_NAMED = 10  # how many stems/files an error message spells out before "and N more"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> channels
_PNG_COLOUR_NAMES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


def modality_locations(
    semantic_classes: int = 5, flow_dir: str = FLOW_DIR
) -> dict[str, tuple[str, str | None]]:
    """Folder and file suffix of every modality (suffix None = any name starting with the stem).

    Args:
        semantic_classes: 5 reads `*_gtFine_labelTrainIds.png`, 19 reads `*_gtFine_labelIds.png`.
        flow_dir: name of the flow folder under the root.
    """
    if semantic_classes not in (5, 19):
        raise UserError(f"--semantic_classes must be 5 or 19, got {semantic_classes}")
    return {
        "rgb": (RGB_DIR, RGB_SUFFIX),
        "flow": (flow_dir, None),
        "semantic": (GT_DIR, FIVE_CLASS_SUFFIX if semantic_classes == 5 else LABEL_IDS_SUFFIX),
        "motion": (GT_DIR, MOTION_SUFFIX),
        "disparity": (DISPARITY_DIR, DISPARITY_SUFFIX),
        "camera": (CAMERA_DIR, CAMERA_SUFFIX),
    }


def _name_some(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    if len(items) > _MAX_NAMED:
        shown += f" and {len(items) - _MAX_NAMED} more"
    return shown


def find_child_dir(parent: Path, name: str, what: str) -> Path:
    """The sub-folder of `parent` called `name`, matched case-insensitively.

    Args:
        parent: folder to look in.
        name: wanted folder name (`leftImg8bit` also finds `leftimg8bit`).
        what: how to name the folder in the error (e.g. "--data_path", "flow folder").

    Raises:
        UserError: no such folder; the message suggests the closest existing name.
    """
    exact = parent / name
    if exact.is_dir():
        return exact
    children = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    for child in children:
        if child.lower() == name.lower():
            return parent / child
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in children], n=1, cutoff=0.5)
    hint = ""
    if close:
        hint = f"; did you mean {next(c for c in children if c.lower() == close[0])!r}?"
    elif children:
        hint = f"; it holds {_name_some(children)}"
    raise UserError(f"{what}: no folder {name!r} in {parent}{hint}")


def resolve_root(data_path: str | Path) -> Path:
    """Checks that the dataset root exists and returns it as a Path.

    Raises:
        UserError: the folder does not exist; the message suggests the closest existing name of
            the first missing path component (e.g. the seed's misspelt `datatsets`).
    """
    root = Path(data_path)
    if root.is_dir():
        return root
    existing = Path(root.anchor) if root.is_absolute() else Path(".")
    for part in root.parts[len(existing.parts) if root.is_absolute() else 0 :]:
        if not (existing / part).is_dir():
            children = sorted(p.name for p in existing.iterdir() if p.is_dir())
            close = difflib.get_close_matches(part, children, n=1, cutoff=0.6)
            if close:
                raise UserError(
                    f"--data_path {root}: no such folder ({existing / part} is missing); "
                    f"did you mean {str(existing / close[0])!r}?"
                )
            break
        existing = existing / part
    raise UserError(
        f"--data_path {root}: no such folder; point it at the dataset root that holds "
        f"{RGB_DIR}/, {GT_DIR}/, {DISPARITY_DIR}/, {CAMERA_DIR}/ and the flow folder "
        f"(python -m data_tools.synthetic writes one)"
    )


def list_splits(data_path: str | Path) -> list[str]:
    """Splits (sub-folders of the RGB folder) present in the dataset, sorted."""
    rgb_root = find_child_dir(resolve_root(data_path), RGB_DIR, "--data_path")
    return sorted(p.name for p in rgb_root.iterdir() if p.is_dir())


def splits_with_flow(data_path: str | Path, flow_dir: str = FLOW_DIR) -> list[str]:
    """Splits that have frames and a flow folder, sorted (Cityscapes' `test` usually has no flow).

    Empty when the flow folder itself is missing.
    """
    root = resolve_root(data_path)
    try:
        flow_root = find_child_dir(root, flow_dir, "flow folder")
    except UserError:
        return []
    with_flow = {p.name.lower() for p in flow_root.iterdir() if p.is_dir()}
    return [split for split in list_splits(root) if split.lower() in with_flow]


def _split_dir(root: Path, folder: str, split: str) -> Path:
    modality_dir = find_child_dir(root, folder, "--data_path")
    return find_child_dir(modality_dir, split, f"split {split!r}")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@dataclass
class FrameFiles:
    """The files of one frame, found by stem.

    Under `--labels partial` a task's label files may be missing: `semantic`, `motion`,
    `disparity` and `camera` are then None (`has_label` says which tasks a frame has). Under
    `--labels strict` (the default) every file is present.
    """

    stem: str
    rgb: Path
    flow: Path
    semantic: Path | None = None
    motion: Path | None = None
    disparity: Path | None = None
    camera: Path | None = None

    def has_label(self, task: str) -> bool:
        """Whether the frame has `task`'s label (`depth`: disparity and camera).

        Example:
            >>> FrameFiles("a_1_2", Path("a.png"), Path("f.png")).has_label("motion")
            False
        """
        return getattr(self, TASK_LABEL_MODALITY[task]) is not None


@dataclass
class SplitScan:
    """What discovery found in one split: complete frames and the problems.

    Attributes:
        frames: stem -> {modality: path} for the usable frames: with `labels="strict"` those
            that have every modality; with `labels="partial"` those that have the inputs (rgb,
            flow), their label files being whatever exists.
        missing: stem -> names of the modalities it lacks that the mode needs (frames are
            anchored on RGB files).
        duplicates: messages about stems with more than one candidate file for a modality.
        inputs: frames that have both inputs (rgb and flow), whatever the mode.
        coverage: task -> how many of those `inputs` frames have the task's label (depth:
            disparity and camera), whatever the mode; `data_tools.check` reports it.
    """

    split: str
    frames: dict[str, dict[str, Path]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    inputs: int = 0
    coverage: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """One line per frame with a missing modality, then one per duplicate."""
        lines = [
            f"{self.split}: frame {stem} has no {', '.join(mods)}"
            for stem, mods in sorted(self.missing.items())
        ]
        return lines + [f"{self.split}: {message}" for message in self.duplicates]


def _index_by_suffix(files: list[Path], suffix: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    suffix_lower = suffix.lower()
    for path in files:
        if path.name.lower().endswith(suffix_lower):
            found.setdefault(path.name[: -len(suffix)], []).append(path)
    return found


def _index_by_prefix(files: list[Path], stems: set[str]) -> dict[str, list[Path]]:
    """Maps each stem to the files whose name is the stem followed by '_' or '.'."""
    found: dict[str, list[Path]] = {}
    for path in files:
        name = path.name
        # The longest prefix that ends just before a separator and is a known stem.
        for end in range(len(name) - 1, 0, -1):
            if name[end] in "_." and name[:end] in stems:
                found.setdefault(name[:end], []).append(path)
                break
    return found


def _pick_flow(stem: str, candidates: list[Path]) -> Path | None:
    if len(candidates) == 1:
        return candidates[0]
    preferred = [p for p in candidates if p.name.lower() == (stem + RGB_SUFFIX).lower()]
    return preferred[0] if len(preferred) == 1 else None


def _label_missing(missing: list[str], paths: dict[str, Path]) -> tuple[list[str], list[str]]:
    """Splits a partial frame's missing modalities into (needed, absent labels).

    Inputs are always needed; a camera is needed only beside a disparity (depth needs both),
    and a disparity without its camera is reported rather than silently unlabelled.
    """
    needed = [m for m in missing if m in INPUT_MODALITIES]
    if "camera" in missing and "disparity" in paths:
        needed.append("camera")
    labels = [m for m in missing if m not in needed]
    return needed, labels


def scan_split(
    data_path: str | Path,
    split: str,
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
    labels: str = "strict",
) -> SplitScan:
    """Finds every frame of `split` by stem and records what is missing, without raising on it.

    Frames are anchored on the RGB files (`<stem>_leftImg8bit.png`); files of other modalities
    without an RGB frame are ignored, as are unrelated files (colour labels, polygons, ...).

    Args:
        data_path: dataset root.
        split: split folder name.
        semantic_classes: 5 reads `*_gtFine_labelTrainIds.png`, 19 `*_gtFine_labelIds.png`.
        flow_dir: flow folder name.
        labels: `strict` (every modality needed) or `partial` (rgb and flow needed; label
            files optional per frame, a camera needed beside a disparity). Under `partial` a
            label folder (gtFine/, disparity/, camera/) may be missing altogether.

    Raises:
        UserError: missing root, input folder or split folder (label folders too, `strict`).

    Example:
        >>> scan = scan_split("data/synthetic", "train", labels="partial")  # doctest: +SKIP
        >>> scan.coverage  # doctest: +SKIP
        {'depth': 120, 'semantic': 120, 'motion': 60}
    """
    partial = check_label_mode(labels) == "partial"
    root = resolve_root(data_path)
    locations = modality_locations(semantic_classes, flow_dir)
    scan = SplitScan(split=split)
    files_by_folder: dict[str, list[Path]] = {}
    input_folders = {locations[m][0] for m in INPUT_MODALITIES}
    for folder, _ in locations.values():
        if folder not in files_by_folder:
            try:
                split_dir = _split_dir(root, folder, split)
            except UserError as error:
                if partial and folder not in input_folders:
                    # A dataset without any file of a label kind: every frame lacks it.
                    files_by_folder[folder] = []
                    continue
                if folder != flow_dir:
                    raise
                raise UserError(
                    f"{error} (the flow folder: compute flow with `python -m data_tools.flow "
                    f"--data_path {data_path}`, or name another flow folder with --flow_dir)"
                ) from None
            files_by_folder[folder] = _files(split_dir)
    rgb_index = _index_by_suffix(files_by_folder[RGB_DIR], RGB_SUFFIX)
    stems = set(rgb_index)
    indexes: dict[str, dict[str, list[Path]]] = {"rgb": rgb_index}
    for modality, (folder, suffix) in locations.items():
        if modality == "rgb":
            continue
        if suffix is None:
            pngs = [p for p in files_by_folder[folder] if p.name.lower().endswith(".png")]
            indexes[modality] = _index_by_prefix(pngs, stems)
        else:
            indexes[modality] = _index_by_suffix(files_by_folder[folder], suffix)
    for stem in sorted(stems):
        paths: dict[str, Path] = {}
        missing = []
        for modality in MODALITIES:
            candidates = indexes[modality].get(stem, [])
            if not candidates:
                missing.append(modality)
                continue
            chosen = _pick_flow(stem, candidates) if modality == "flow" else None
            if chosen is None and len(candidates) == 1:
                chosen = candidates[0]
            if chosen is None:
                scan.duplicates.append(
                    f"frame {stem} has several {modality} files: "
                    f"{_name_some([str(p) for p in candidates])}; remove all but one"
                )
                continue
            paths[modality] = chosen
        if all(m in paths for m in INPUT_MODALITIES):
            scan.inputs += 1
            for task, modality in TASK_LABEL_MODALITY.items():
                labelled = modality in paths and (task != "depth" or "camera" in paths)
                scan.coverage[task] = scan.coverage.get(task, 0) + int(labelled)
        if partial:
            needed, _ = _label_missing(missing, paths)
            if needed:
                scan.missing[stem] = needed
            elif all(m in paths for m in INPUT_MODALITIES) and len(paths) + len(missing) == len(
                MODALITIES
            ):
                # (no duplicates): the frame with whatever labels it has; a camera without
                # disparity labels nothing, so it is dropped.
                if "disparity" not in paths:
                    paths.pop("camera", None)
                scan.frames[stem] = paths
            continue
        if missing:
            scan.missing[stem] = missing
        elif len(paths) == len(MODALITIES):
            scan.frames[stem] = paths
    for task in TASK_LABEL_MODALITY:
        scan.coverage.setdefault(task, 0)
    return scan


def discover_frames(
    data_path: str | Path,
    split: str,
    semantic_classes: int = 5,
    flow_dir: str = FLOW_DIR,
    labels: str = "strict",
) -> list[FrameFiles]:
    """Every frame of `split`, sorted by stem, each with all its files (see `scan_split`).

    Args:
        labels: `strict`: every frame must have every modality; `partial`: rgb and flow,
            label files optional (None in the `FrameFiles`).

    Raises:
        UserError: missing root/folder, frames with a missing modality (named), duplicate
            candidates, or an empty split.
    """
    scan = scan_split(data_path, split, semantic_classes, flow_dir, labels)
    if scan.missing:
        by_modality: dict[str, list[str]] = {}
        for stem, mods in sorted(scan.missing.items()):
            for mod in mods:
                by_modality.setdefault(mod, []).append(stem)
        details = "; ".join(
            f"no {mod} ({locations_hint(mod, semantic_classes, flow_dir)}) for {_name_some(stems)}"
            for mod, stems in by_modality.items()
        )
        hint = ""
        if labels == "strict" and all(
            mod not in INPUT_MODALITIES for mods in scan.missing.values() for mod in mods
        ):
            hint = "; or train with --labels partial, where each task's labels are optional"
        raise UserError(
            f"--data_path {data_path}, split {split!r}: {len(scan.missing)} frame(s) lack a "
            f"modality: {details}. Run `python -m data_tools.check --data_path {data_path}` "
            f"for the full list{hint}"
        )
    if scan.duplicates:
        raise UserError(f"--data_path {data_path}, split {split!r}: {scan.duplicates[0]}")
    if not scan.frames:
        raise UserError(
            f"--data_path {data_path}, split {split!r}: no frames (no *{RGB_SUFFIX} files under "
            f"{RGB_DIR}/{split}/); check the split name or generate data"
        )
    return [FrameFiles(stem=stem, **paths) for stem, paths in sorted(scan.frames.items())]


def locations_hint(modality: str, semantic_classes: int = 5, flow_dir: str = FLOW_DIR) -> str:
    """Where a modality's files are expected, for error messages."""
    folder, suffix = modality_locations(semantic_classes, flow_dir)[modality]
    return f"{folder}/<split>/<city>/<stem>{suffix or '*.png'}"


# ---------------------------------------------------------------------------------------------
# Cheap file checks that run before any decoding, so bad files get a named error.


@dataclass(frozen=True)
class PngInfo:
    """Header facts of one PNG file."""

    height: int
    width: int
    bit_depth: int
    channels: int
    colour_type: int


def read_png_info(path: str | Path) -> PngInfo:
    """Reads a PNG header and checks that the file is not truncated (ends with IEND).

    Raises:
        UserError: not a PNG, or truncated.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(33)
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 12))
            tail = handle.read(12)
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise UserError(f"{path}: not a PNG file (corrupt or wrong format); regenerate it")
    if b"IEND" not in tail:
        raise UserError(f"{path}: truncated PNG (no IEND chunk at the end); regenerate it")
    width, height = struct.unpack(">II", head[16:24])
    bit_depth, colour_type = head[24], head[25]
    if colour_type not in _PNG_CHANNELS:
        raise UserError(f"{path}: corrupt PNG header (colour type {colour_type}); regenerate it")
    return PngInfo(height, width, bit_depth, _PNG_CHANNELS[colour_type], colour_type)


# modality -> (allowed bit depths, allowed colour types, what the file should be)
_EXPECTED_PNG = {
    "rgb": ({8}, {0, 2, 3, 6}, "an 8-bit colour image"),
    "flow": ({8}, {2, 6}, "an 8-bit 3-channel flow image (u + 128, v + 128, confidence)"),
    "semantic": ({8}, {0}, "an 8-bit single-channel label image"),
    "motion": ({8}, {0}, "an 8-bit single-channel mask (0 static, 255 moving)"),
    "disparity": ({16}, {0}, "a 16-bit single-channel Cityscapes disparity (p = d * 256 + 1)"),
}


def check_png(path: str | Path, modality: str) -> PngInfo:
    """Checks one modality's PNG header (format, bit depth, channels) and returns it.

    Raises:
        UserError: naming the file, what it is and what it should be.
    """
    info = read_png_info(path)
    depths, colour_types, expected = _EXPECTED_PNG[modality]
    if info.bit_depth not in depths or info.colour_type not in colour_types:
        raise UserError(
            f"{path}: {modality} must be {expected}, found a {info.bit_depth}-bit "
            f"{_PNG_COLOUR_NAMES[info.colour_type]} PNG; regenerate or convert it"
        )
    return info


def check_frame_files(frame: FrameFiles) -> tuple[int, int]:
    """Checks every PNG header of a frame and that images and labels have one size.

    Returns:
        (height, width) of the RGB frame.

    Raises:
        UserError: naming the bad file, or the two files whose sizes differ.
    """
    # A frame of `--labels partial` may lack label files (None): only those present are read.
    infos = {m: check_png(getattr(frame, m), m) for m in _EXPECTED_PNG if getattr(frame, m)}
    size = (infos["rgb"].height, infos["rgb"].width)
    for modality in ("semantic", "motion", "disparity"):
        if modality not in infos:
            continue
        other = (infos[modality].height, infos[modality].width)
        if other != size:
            raise UserError(
                f"{getattr(frame, modality)}: size {other[0]}x{other[1]} differs from the RGB "
                f"frame {frame.rgb} ({size[0]}x{size[1]}); images and labels must match"
            )
    return size


def read_camera(path: str | Path) -> float:
    """fx * baseline (pixel metres) from a Cityscapes camera JSON.

    Raises:
        UserError: unreadable JSON, missing keys, or a non-positive product.
    """
    path = Path(path)
    try:
        camera = json.loads(path.read_text())
        fx = float(camera["intrinsic"]["fx"])
        baseline = float(camera["extrinsic"]["baseline"])
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a readable camera JSON ({error})") from None
    except (KeyError, TypeError):
        raise UserError(
            f"{path}: camera JSON needs intrinsic.fx and extrinsic.baseline (Cityscapes format)"
        ) from None
    if not fx > 0 or not baseline > 0:
        raise UserError(f"{path}: fx ({fx}) and baseline ({baseline}) must be positive")
    return fx * baseline
