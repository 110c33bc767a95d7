"""Shared test settings: quiet TensorFlow, no writes to the home directory, tiny data."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault(
    "KERAS_HOME", os.path.join(tempfile.gettempdir(), "keras_mtl_test_keras_home")
)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# --- synthetic data (data_tools.synthetic; imports numpy and OpenCV only, never TensorFlow) ---

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY_DATASET = {"num_train": 4, "num_val": 2, "height": 64, "width": 128, "seed": 7}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root (a `pathlib.Path`) of a tiny synthetic Cityscapes-format dataset, flow included.

    Generated once per session: 64x128 frames, 4 train + 2 val, seed 7 (`TINY_DATASET`); ~2 s.
    All five classes, ignore pixels and both motion classes occur in each split.
    Treat it as read-only: copy it before changing files.
    """
    from data_tools.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny_dataset")
    generate_dataset(root, workers=1, progress=False, **TINY_DATASET)
    return root


def run_module_check(test_file: str, mode: str, timeout: int = 300) -> dict:
    """Runs `python test_file mode` in a fresh process (e.g. to configure logical devices before
    TensorFlow starts) and returns the JSON its last stdout line holds."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, test_file, mode],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
