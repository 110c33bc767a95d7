"""train.py: flag parsing, flag -> config mapping, bad input as one clear line (no training)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from keras_mtl.config import config_fields, field_section  # noqa: E402
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


def test_every_flag_is_a_config_field_and_every_field_a_flag():
    parser = train.build_parser()
    flags = [a.dest for a in parser._actions if a.dest not in ("help", "config", "verbose")]
    for flag in flags:
        field_section(flag)  # raises UserError for a flag without a field
    assert sorted(flags) == sorted(config_fields())  # each field exactly once


def test_flags_override_the_config_file():
    config = train.config_from_args(
        ["--config", str(ROOT / "configs/synthetic.yaml"), "--epochs", "7"]
        + ["--img_resize", "64", "128", "--multi_task_type", "learned", "--mixed_precision"]
    )
    assert config.train.epochs == 7 and config.train.mixed_precision is True
    assert config.data.img_resize == (64, 128)
    assert config.weighting.multi_task_type == "pseudo_grad_norm"
    assert config.data.data_path == "data/synthetic" and config.model.width_mult == 0.35


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


def test_yaml_values_are_checked_against_the_field_types(tmp_path):
    from keras_mtl.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 1e-4\n  epochs: 3\n")  # PyYAML reads 1e-4 as a string
    assert load_config(path).train.lr == 1e-4
    for text, message in (
        ("data:\n  img_resize: 384\n", r"img_resize must be a list \(e.g. \[384, 768\]\)"),
        ("train:\n  lr: fast\n", r"lr must be a number, got 'fast'"),
        ("train:\n  epochs: 2.5\n", r"epochs must be an integer, got 2.5"),
        ("data:\n  augment: 1\n", r"augment must be true or false"),
    ):
        path.write_text(text)
        with pytest.raises(UserError, match=rf"--config {re.escape(str(path))}: {message}"):
            load_config(path)


def test_resume_continues_the_saved_config_and_refuses_changes_to_it(tmp_path):
    run = tmp_path / "run"
    first = train.config_from_args(
        ["--config", str(ROOT / "configs/synthetic.yaml"), "--save_path", str(run)]
        + ["--multi_task_type", "uncertainty", "--width_mult", "0.25", "--epochs", "3"]
    )
    run.mkdir()
    first.save(run / "config.yaml")
    # The shipped config says vanilla and width 0.35; the run folder's config wins.
    resumed = train.config_from_args(
        ["--config", str(ROOT / "configs/synthetic.yaml"), "--save_path", str(run)]
        + ["--resume", "--epochs", "6", "--lr", "0.001"]
    )
    assert resumed.weighting.multi_task_type == "uncertainty"
    assert resumed.model.width_mult == 0.25
    assert resumed.train.epochs == 6 and resumed.train.lr == 0.001 and resumed.train.resume
    same = train.config_from_args(["--save_path", str(run), "--resume", "--width_mult", "0.25"])
    assert same.model.width_mult == 0.25 and same.data.data_path == first.data.data_path
    with pytest.raises(UserError, match=r"--multi_task_type grad_norm \(the run has uncertainty\)"):
        train.config_from_args(
            ["--save_path", str(run), "--resume", "--multi_task_type", "grad_norm"]
        )
    with pytest.raises(UserError, match=r"--img_resize \[64, 128\] \(the run has \[96, 192\]\)"):
        train.config_from_args(["--save_path", str(run), "--resume", "--img_resize", "64", "128"])


def test_resume_with_nothing_to_resume(tmp_path):
    argv = ["--resume", "--save_path", str(tmp_path / "run"), "--data_path", str(tmp_path)]
    with pytest.raises(UserError, match=r"--resume: nothing to resume"):
        train.main(argv)


def test_unknown_gpu_ids_fail_with_one_line_and_no_tensorflow_noise():
    # No TF_CPP_MIN_LOG_LEVEL from the caller: train.py itself keeps TensorFlow's start-up
    # lines (absl, oneDNN, CUDA drivers, cuInit when the GPUs are listed) off the console.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *SEED_COMMAND],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --gpus 0 1: no GPU with id 0, 1; available GPU ids: none")


def test_switches_and_optional_fields_from_the_command_line(tmp_path):
    config = train.config_from_args(
        ["--config", str(ROOT / "configs/synthetic.yaml"), "--no_augment", "--cache"]
        + ["--steps_per_epoch", "7", "--depth_init", "12.5", "--lr_milestones", "0.5"]
        + ["--grad_norm_alpha", "0.5", "--pretrained", str(tmp_path / "x.keras")]
    )
    assert config.data.augment is False and config.data.cache is True
    assert config.train.steps_per_epoch == 7 and config.model.depth_init == 12.5
    assert config.train.lr_milestones == (0.5,)
    assert config.weighting.grad_norm_alpha == 0.5
    assert config.model.pretrained == str(tmp_path / "x.keras")
    assert train.config_from_args(["--lr_milestones"]).train.lr_milestones == ()


def test_yaml_values_outside_their_choices_name_the_flag(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  depth_head: cubic\n")
    with pytest.raises(UserError, match=r"--depth_head: invalid choice 'cubic'; choose one of"):
        train.config_from_args(["--config", str(path)])
    path.write_text("weighting:\n  multi_task_type: magic\n")
    with pytest.raises(UserError, match=r"--multi_task_type 'magic': unknown weighting"):
        train.config_from_args(["--config", str(path)])
