"""keras-mtl: one network, three dense tasks (depth, semantic, motion) from RGB + optical flow."""

__version__ = "0.1.0"
