"""keras_mtl.config and keras_mtl.flags: flags generated from the config fields (one each, help
and default shown, types and choices from the annotations and the registries) and validation."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

import pytest

from keras_mtl.config import Config, config_fields, load_config
from keras_mtl.errors import FlagParser, UserError
from keras_mtl.flags import add_config_flags, config_overrides, field_choices, validate_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _parser(names=None, **options) -> argparse.ArgumentParser:
    parser = FlagParser(prog="test")
    add_config_flags(parser, names, **options)
    return parser


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def test_every_field_is_one_flag_with_help_and_its_default():
    actions = _actions(_parser())
    assert sorted(actions) == sorted(config_fields())
    defaults = {
        item.name: getattr(getattr(Config(), section.name), item.name)
        for section in dataclasses.fields(Config)
        for item in dataclasses.fields(getattr(Config(), section.name))
    }
    for name, action in actions.items():
        assert action.option_strings[0] == f"--{name}"
        help_text, shown = re.fullmatch(r"(.+) \(default: (.+)\)", action.help).groups()
        assert help_text and help_text == config_fields()[name].metadata["help"]
        value = defaults[name]
        if value is None:
            assert shown == config_fields()[name].metadata["none"], name  # what None means
        elif isinstance(value, bool):
            assert shown == ("on" if value else "off")
        elif isinstance(value, tuple) and value:
            assert shown.split() == [f"{v:g}" if isinstance(v, float) else str(v) for v in value]
        elif not isinstance(value, tuple):
            assert shown == (f"{value:g}" if isinstance(value, float) else str(value)), name


def test_values_are_typed_from_the_annotations():
    parser = _parser()
    args = parser.parse_args(
        ["--img_resize", "64", "128", "--lr_milestones", "0.3", "0.6", "0.9", "--gpus"]
        + ["--steps_per_epoch", "5", "--depth_init", "7.5", "--no_augment", "--cache"]
        + ["--task_weights", "1", "2", "3", "--lr", "1e-3"]
    )
    assert args.img_resize == [64, 128] and args.lr_milestones == [0.3, 0.6, 0.9]
    assert args.gpus == [] and args.steps_per_epoch == 5 and args.depth_init == 7.5
    assert args.augment is False and args.cache is True and args.shuffle is None
    assert args.task_weights == [1.0, 2.0, 3.0] and args.lr == 1e-3
    with pytest.raises(UserError, match=r"argument --img_resize: expected 2 arguments"):
        parser.parse_args(["--img_resize", "64"])
    with pytest.raises(UserError, match=r"argument --epochs: invalid int value: '2.5'"):
        parser.parse_args(["--epochs", "2.5"])


def test_choices_come_from_the_registries():
    from keras_mtl.losses import DEPTH_LOSSES
    from keras_mtl.models import BACKBONES, DEPTH_HEADS
    from keras_mtl.tasks import SEMANTIC_CLASS_CHOICES
    from keras_mtl.weighting import ALIASES, WEIGHTING_NAMES
    from keras_mtl.weighting.grad_norm import INITIAL_LOSS_CHOICES

    assert field_choices("grad_norm_initial_loss") == INITIAL_LOSS_CHOICES
    assert field_choices("multi_task_type") == (*WEIGHTING_NAMES, *ALIASES)
    assert field_choices("backbone") == BACKBONES
    assert field_choices("depth_head") == DEPTH_HEADS
    assert field_choices("depth_loss") == DEPTH_LOSSES
    assert field_choices("semantic_classes") == SEMANTIC_CLASS_CHOICES
    assert field_choices("epochs") is None
    metavar = _actions(_parser(["multi_task_type"]))["multi_task_type"].metavar
    assert metavar == "{" + ",".join((*WEIGHTING_NAMES, *ALIASES)) + "}"


def test_overrides_hold_only_the_flags_given():
    parser = _parser()
    args = parser.parse_args(["--epochs", "3", "--no_shuffle"])
    assert config_overrides(args) == {"epochs": 3, "shuffle": False}
    config = load_config(ROOT / "configs/synthetic.yaml", config_overrides(args))
    assert config.train.epochs == 3 and config.data.shuffle is False
    assert config.data.data_path == "data/synthetic"  # from the file, untouched by the parser


def test_tools_without_a_config_file_get_defaults_and_required_flags():
    parser = _parser(
        ["data_path", "flow_dir", "batch_size", "semantic_classes"],
        defaults={"batch_size": 4},
        default_help={"semantic_classes": "the model's own"},
        required=["data_path"],
    )
    args = parser.parse_args(["--data_path", "d"])
    assert args.batch_size == 4 and args.semantic_classes is None
    assert args.flow_dir == config_fields()["flow_dir"].default
    actions = _actions(parser)
    assert actions["batch_size"].help.endswith("(default: 4)")
    assert actions["semantic_classes"].help.endswith("(default: the model's own)")
    assert actions["data_path"].required and actions["data_path"].help.endswith("(required)")
    with pytest.raises(UserError, match=r"required: --data_path"):
        parser.parse_args([])
    with pytest.raises(ValueError, match="'datapath' is neither a config field nor a section"):
        _parser(["datapath"])
    assert sorted(_actions(_parser(["weighting"]))) == sorted(
        f.name for f in dataclasses.fields(Config().weighting)
    )


def test_validate_resolves_aliases_without_changing_its_argument():
    config = load_config(None, {"multi_task_type": "learned"})
    valid = validate_config(config)
    assert valid.weighting.multi_task_type == "pseudo_grad_norm"
    assert config.weighting.multi_task_type == "learned"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbone": "resnet"}, r"--backbone: invalid choice 'resnet'; choose one of mobilenetv2"),
        ({"semantic_classes": 7}, r"--semantic_classes: invalid choice 7; choose one of 5, 19"),
        ({"single_task": "flow"}, r"--single_task: invalid choice 'flow'"),
        ({"img_resize": (100, 200)}, r"--img_resize 100 200: .*multiples of 16"),
        ({"output_size": (0, 8)}, r"--output_size 0 8: height and width must be positive"),
        ({"epochs": 0}, r"--epochs 0: must be a positive integer"),
        ({"lr": 0.0}, r"--lr 0.0: must be > 0"),
        ({"gpus": (0,), "cpu_replicas": 2}, r"--gpus and --cpu_replicas"),
        ({"cpu_replicas": 3, "batch_size": 4}, r"--batch_size 4: .* evenly over 3 replicas"),
    ],
)
def test_validate_names_the_flag(overrides, message):
    with pytest.raises(UserError, match=message):
        validate_config(load_config(None, overrides))


def test_the_tools_share_the_config_flags():
    import evaluate
    import train
    import tune
    from keras_mtl import export

    reference = _actions(train.build_parser())
    for tool in (evaluate, export, tune):
        actions = _actions(tool.build_parser())
        shared = set(actions) & set(config_fields())
        assert {"img_resize", "data_path", "flow_dir"} <= shared, tool.__name__
        for name in shared:
            help_text = reference[name].help.rsplit(" (", 1)[0]
            assert actions[name].help.startswith(help_text), (tool.__name__, name)
        assert "verbose" in actions, tool.__name__
