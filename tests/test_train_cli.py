"""train.py: flag parsing, flag -> config mapping, bad input as one clear line (no training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from keras_mtl.config import field_section  # noqa: E402
from keras_mtl.errors import UserError  # noqa: E402

SEED_COMMAND = [
    "--multi_task_type",
    "uncertainty",
    "--img_resize",
    "384",
    "768",
    "--output_size",
    "1024",
    "2048",
    "--gpus",
    "0",
    "1",
]


def test_every_flag_is_a_config_field():
    parser = train.build_parser()
    flags = [a.dest for a in parser._actions if a.dest not in ("help", "config")]
    assert len(flags) >= 22
    for flag in flags:
        field_section(flag)  # raises UserError for a flag without a field


def test_flags_override_the_config_file():
    config = train.config_from_args(
        ["--config", str(ROOT / "configs/synthetic.yaml"), "--epochs", "7"]
        + ["--img_resize", "64", "128", "--multi_task_type", "learned", "--resume"]
    )
    assert config.train.epochs == 7 and config.train.resume is True
    assert config.data.img_resize == (64, 128)
    assert config.weighting.multi_task_type == "pseudo_grad_norm"
    assert config.data.data_path == "data/synthetic" and config.model.width_mult == 0.5


def test_seed_command_parses():
    config = train.config_from_args(SEED_COMMAND)
    assert config.weighting.multi_task_type == "uncertainty"
    assert config.data.img_resize == (384, 768) and config.data.output_size == (1024, 2048)
    assert config.train.gpus == (0, 1)


def test_all_shipped_configs_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = train.config_from_args(["--config", str(path)])
        assert config.data.img_resize[0] % 16 == 0, path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--multi_task_type", "magic"], r"--multi_task_type 'magic': unknown weighting"),
        (["--img_resize", "100", "200"], r"--img_resize 100 200: .*multiples of 16"),
        (["--img_resize", "64"], r"--img_resize: expected 2 arguments"),
        (["--single_task", "flow"], r"--single_task: invalid choice"),
        (["--batch_size", "0"], r"--batch_size 0: must be a positive integer"),
        (["--gpus", "0", "--cpu_replicas", "2"], r"--gpus and --cpu_replicas"),
    ],
)
def test_bad_flags(argv, message):
    with pytest.raises(UserError, match=message):
        train.config_from_args(argv)


def test_unknown_config_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(UserError, match=r"unknown key train.epochz"):
        train.config_from_args(["--config", str(path)])


def test_missing_data_path(tmp_path):
    argv = ["--data_path", str(tmp_path / "nowhere"), "--save_path", str(tmp_path / "run")]
    with pytest.raises(UserError, match=r"--data_path .*nowhere: no such folder"):
        train.main(argv)


def test_resume_with_nothing_to_resume(tmp_path):
    argv = ["--resume", "--save_path", str(tmp_path / "run"), "--data_path", str(tmp_path)]
    with pytest.raises(UserError, match=r"--resume: nothing to resume"):
        train.main(argv)


def test_unknown_gpu_ids_fail_with_one_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *SEED_COMMAND],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --gpus 0 1: no GPU with id 0, 1; available GPU ids: none")
