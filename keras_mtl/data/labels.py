"""Cityscapes label tables: labelIds -> 19 trainIds, labelIds -> the five classes, palettes.

The five-class mapping was never published by the original system; this is the project's
documented choice (docs/data.md repeats it):

| five-class id | name       | Cityscapes classes                                               |
|---------------|------------|------------------------------------------------------------------|
| 0             | road       | road                                                             |
| 1             | sky        | sky                                                              |
| 2             | pedestrian | person, rider                                                    |
| 3             | vehicle    | car, truck, bus, caravan, trailer, train, motorcycle, bicycle    |
| 4             | background | every other non-void class (sidewalk, building, vegetation, ...) |
| 255           | ignore     | void classes (unlabeled, ego vehicle, ..., dynamic, ground), license plate |
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE = 255


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int  # standard 19-class trainId, 255 = ignore
    category: str
    color: tuple[int, int, int]


# The official Cityscapes label list (cityscapesScripts' labels.py), without license plate (-1).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, "void", (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, "void", (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, "void", (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, "void", (0, 0, 0)),
    CityscapesLabel("static", 4, 255, "void", (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, "void", (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, "void", (81, 0, 81)),
    CityscapesLabel("road", 7, 0, "flat", (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, "flat", (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, "flat", (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, "flat", (230, 150, 140)),
    CityscapesLabel("building", 11, 2, "construction", (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, "construction", (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, "construction", (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, "construction", (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, "construction", (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, "construction", (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, "object", (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, "object", (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, "object", (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, "object", (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, "nature", (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, "nature", (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, "sky", (70, 130, 180)),
    CityscapesLabel("person", 24, 11, "human", (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, "human", (255, 0, 0)),
    CityscapesLabel("car", 26, 13, "vehicle", (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, "vehicle", (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, "vehicle", (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, "vehicle", (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, "vehicle", (0, 0, 110)),
    CityscapesLabel("train", 31, 16, "vehicle", (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, "vehicle", (119, 11, 32)),
)

LABEL_BY_NAME: dict[str, CityscapesLabel] = {label.name: label for label in CITYSCAPES_LABELS}

FIVE_CLASS_NAMES: tuple[str, ...] = ("road", "sky", "pedestrian", "vehicle", "background")
FIVE_CLASS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),  # road: Cityscapes road purple
    (70, 130, 180),  # sky: Cityscapes sky blue
    (220, 20, 60),  # pedestrian: Cityscapes person red
    (0, 0, 142),  # vehicle: Cityscapes car blue
    (107, 142, 35),  # background: vegetation green
)
NINETEEN_CLASS_NAMES: tuple[str, ...] = tuple(
    label.name
    for label in sorted(CITYSCAPES_LABELS, key=lambda lb: lb.train_id)
    if label.train_id != IGNORE
)
NINETEEN_CLASS_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    label.color
    for label in sorted(CITYSCAPES_LABELS, key=lambda lb: lb.train_id)
    if label.train_id != IGNORE
)
MOTION_CLASS_NAMES: tuple[str, ...] = ("static", "moving")
MOTION_PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 64, 0))

_FIVE_CLASS_OF_NAME = {
    "road": 0,
    "sky": 1,
    "person": 2,
    "rider": 2,
    **{
        name: 3
        for name in ("car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle")
    },
}


def _five_class_id(label: CityscapesLabel) -> int:
    if label.category == "void":
        return IGNORE
    return _FIVE_CLASS_OF_NAME.get(label.name, 4)


def _lookup(values: dict[int, int]) -> np.ndarray:
    table = np.full(256, IGNORE, dtype=np.uint8)
    for label_id, target in values.items():
        table[label_id] = target
    return table


# 256-entry lookup tables: table[labelId] -> class id (255 for void and unknown ids).
LABEL_ID_TO_TRAIN_ID: np.ndarray = _lookup({lb.id: lb.train_id for lb in CITYSCAPES_LABELS})
LABEL_ID_TO_FIVE_CLASS: np.ndarray = _lookup(
    {lb.id: _five_class_id(lb) for lb in CITYSCAPES_LABELS}
)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a Cityscapes labelIds image to the standard 19 trainIds (255 = ignore)."""
    return LABEL_ID_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]


def label_ids_to_five_classes(label_ids: np.ndarray) -> np.ndarray:
    """Maps a Cityscapes labelIds image to the five classes of FIVE_CLASS_NAMES (255 = ignore)."""
    return LABEL_ID_TO_FIVE_CLASS[np.asarray(label_ids, dtype=np.uint8)]


def class_names(semantic_classes: int) -> tuple[str, ...]:
    """Names of the semantic classes for 5 or 19 classes."""
    if semantic_classes == 5:
        return FIVE_CLASS_NAMES
    if semantic_classes == 19:
        return NINETEEN_CLASS_NAMES
    raise ValueError(f"semantic_classes must be 5 or 19, got {semantic_classes}")


def palette(semantic_classes: int) -> np.ndarray:
    """(C, 3) uint8 RGB palette for 5 or 19 classes."""
    colors = FIVE_CLASS_PALETTE if semantic_classes == 5 else NINETEEN_CLASS_PALETTE
    if semantic_classes not in (5, 19):
        raise ValueError(f"semantic_classes must be 5 or 19, got {semantic_classes}")
    return np.asarray(colors, dtype=np.uint8)
