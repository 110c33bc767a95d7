"""Shared test settings: quiet TensorFlow, no writes to the home directory, tiny data."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", os.path.join(tempfile.gettempdir(), "keras_mtl_test_keras_home"))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
