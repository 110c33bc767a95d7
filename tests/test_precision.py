"""`--mixed_precision none|fp16|bf16`: the config field, old true/false configs, the trainer."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from keras_mtl.config import (
    MIXED_PRECISION_POLICIES,
    RUN_CONFIG_NAME,
    TrainConfig,
    load_config,
    resume_config,
)
from keras_mtl.errors import FlagParser, UserError
from keras_mtl.flags import add_config_flags, config_overrides, field_choices, validate_config

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_choices_and_policies():
    assert TrainConfig().mixed_precision == "none"
    assert field_choices("mixed_precision") == ("none", "fp16", "bf16")
    assert MIXED_PRECISION_POLICIES == {
        "none": "float32",
        "fp16": "mixed_float16",
        "bf16": "mixed_bfloat16",
    }
    with pytest.raises(UserError, match="--mixed_precision: invalid choice 'fp8'"):
        validate_config(load_config(None, {"mixed_precision": "fp8"}))


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        ([], None),  # not given: the config file's value stays
        (["--mixed_precision", "bf16"], "bf16"),
        (["--mixed_precision"], "fp16"),  # the old switch
        (["--mixed_precision", "--epochs", "2"], "fp16"),
        (["--no_mixed_precision"], "none"),
    ],
)
def test_flag_takes_a_value_and_works_as_the_old_switch(argv, value):
    parser = FlagParser(prog="train.py")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    assert args.mixed_precision == value
    config = validate_config(load_config(None, config_overrides(args)))
    assert config.train.mixed_precision == (value or "none")


def test_no_flag_takes_no_value():
    parser = FlagParser(prog="train.py")
    add_config_flags(parser)
    with pytest.raises(UserError, match="--no_mixed_precision: takes no value"):
        parser.parse_args(["--no_mixed_precision", "bf16"])


@pytest.mark.parametrize(
    ("written", "value"), [("true", "fp16"), ("false", "none"), ("bf16", "bf16")]
)
def test_yaml_from_before_the_choice_still_loads(tmp_path: Path, written: str, value: str):
    path = tmp_path / "config.yaml"
    path.write_text(f"train:\n  mixed_precision: {written}\n")
    assert validate_config(load_config(path)).train.mixed_precision == value


def test_resuming_a_run_saved_with_true(tmp_path: Path):
    (tmp_path / RUN_CONFIG_NAME).write_text(
        f"train:\n  save_path: {tmp_path}\n  mixed_precision: true\n"
    )
    config = load_config(None, {"save_path": str(tmp_path)})
    assert resume_config(config, {}).train.mixed_precision == "fp16"
    assert resume_config(config, {"mixed_precision": "fp16"}).train.resume
    with pytest.raises(UserError, match="--mixed_precision bf16 \\(the run has fp16\\)"):
        resume_config(config, {"mixed_precision": "bf16"})


@pytest.mark.parametrize(("precision", "loss_scaling"), [("fp16", True), ("bf16", False)])
def test_trainer_scales_the_loss_for_fp16_only(precision: str, loss_scaling: bool):
    from keras_mtl.training import build_trainer

    config = validate_config(
        load_config(
            None,
            {
                "img_resize": (32, 64),
                "width_mult": 0.25,
                "batch_size": 2,
                "warmup_epochs": 0,
                "mixed_precision": precision,
            },
        )
    )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION_POLICIES[precision])  # as run_training does
    try:
        trainer = build_trainer(config)
    finally:
        keras.config.set_dtype_policy(previous)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaling
    compute = MIXED_PRECISION_POLICIES[precision].removeprefix("mixed_")
    assert trainer.model.get_layer("encoder.block4.expand_bn").compute_dtype == compute
    if precision == "fp16":
        return  # float16 compute on a CPU is emulated and slow; one step of bf16 below
    rng = np.random.default_rng(0)
    inputs = {k: rng.normal(size=(2, 32, 64, 3)).astype("float32") for k in ("flow", "rgb")}
    targets = {
        "depth": rng.uniform(2.0, 40.0, (2, 32, 64, 1)).astype("float32"),
        "semantic": rng.integers(0, 5, (2, 32, 64)).astype("int32"),
        "motion": rng.integers(0, 2, (2, 32, 64)).astype("int32"),
    }
    before = [v.numpy().copy() for v in trainer.model.trainable_variables]
    logs = trainer.train_step((inputs, targets))
    assert np.isfinite(float(logs["loss"]))
    after = trainer.model.trainable_variables
    assert all(v.dtype == "float32" for v in after)
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, after, strict=True))
