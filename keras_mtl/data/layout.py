"""Folder names and file suffixes of the Cityscapes multitask layout.

Owned by the data reader; the discovery and validation functions live here too.
Folder names are matched case-insensitively (the seed writes `leftimg8bit`, Cityscapes
unpacks as `leftImg8bit`). Files are matched by stem `<city>_<seq>_<frame>`, never by order.
"""

from __future__ import annotations

DEFAULT_DATA_PATH = "./data/datasets/cityscapes/data"

RGB_DIR = "leftImg8bit"
RGB_SUFFIX = "_leftImg8bit.png"
# Previous frames: real Cityscapes keeps 30-frame snippets in leftImg8bit_sequence, where the
# previous frame of <city>_<seq>_<frame> is <city>_<seq>_<frame - 1>; leftImg8bit_previous is a
# flat alternative holding the previous frame under the current frame's own stem.
SEQUENCE_DIR = "leftImg8bit_sequence"
PREVIOUS_DIR = "leftImg8bit_previous"
FLOW_DIR = "leftImg8bit_flow_farneback_confidence"
GT_DIR = "gtFine"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
FIVE_CLASS_SUFFIX = "_gtFine_labelTrainIds.png"
MOTION_SUFFIX = "_gtFine_labelTrainIds_motion.png"
DISPARITY_DIR = "disparity"
DISPARITY_SUFFIX = "_disparity.png"
CAMERA_DIR = "camera"
CAMERA_SUFFIX = "_camera.json"
SPLITS = ("train", "val", "test")

# Depth from disparity: depth = fx * baseline / ((p - 1) / 256), clipped to this range (metres).
MIN_DEPTH = 1.0
MAX_DEPTH = 255.0
