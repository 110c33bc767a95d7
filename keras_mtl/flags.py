"""The configuration on the command line: one flag per config field, and validation.

`add_config_flags` makes exactly one flag of each field of `keras_mtl.config.Config` (flag name
= field name; switches also take `--no_<name>`), with the help text the field carries and its
default shown; the annotation types the value and the choices of fields that name registered
things come from the registries (`REGISTRY_CHOICES`). train.py and tune.py take every field,
evaluate.py and export.py the few they share. `validate_config` checks a resolved config (from
flags or YAML alike) and names the flag in one line.

This sits above both the config and the registries: the weighting package imports the config
(`WeightingConfig`), so the config cannot read the registries without a cycle.

Example:

```python
parser = FlagParser(prog="train.py")
add_config_flags(parser)  # --data_path ... --dwa_temperature, with help and defaults
config = validate_config(load_config("configs/synthetic.yaml", config_overrides(args)))
```
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from keras_mtl.config import SECTIONS, Config, config_fields, field_section, field_types
from keras_mtl.errors import UserError
from keras_mtl.losses import DEPTH_LOSSES
from keras_mtl.models import BACKBONES, DEPTH_HEADS, OUTPUT_STRIDE
from keras_mtl.weighting import ALIASES, WEIGHTING_NAMES, resolve_name
from keras_mtl.weighting.grad_norm import INITIAL_LOSS_CHOICES
from keras_mtl.weighting.uncertainty import LIKELIHOOD_CHOICES

# The allowed values of the fields that name registered things.
REGISTRY_CHOICES: dict[str, tuple] = {
    "multi_task_type": (*WEIGHTING_NAMES, *ALIASES),
    "backbone": BACKBONES,
    "depth_head": DEPTH_HEADS,
    "depth_loss": DEPTH_LOSSES,
    "grad_norm_initial_loss": INITIAL_LOSS_CHOICES,
    "uncertainty_depth_likelihood": LIKELIHOOD_CHOICES,
}


def field_choices(name: str) -> tuple | None:
    """The allowed values of field `name`, None when any value goes.

    Example:

    ```python
    field_choices("depth_head")  # ("linear", "log")
    ```
    """
    if name in REGISTRY_CHOICES:
        return tuple(REGISTRY_CHOICES[name])
    choices = config_fields()[name].metadata.get("choices")
    return tuple(choices) if choices is not None else None


class _Switch(argparse.Action):
    """`--name` sets True, `--no_name` sets False (the project spells flags with underscores)."""

    def __init__(self, option_strings, dest, default=None, required=False, help=None):
        name = option_strings[0][2:]
        super().__init__(
            [f"--{name}", f"--no_{name}"],
            dest,
            nargs=0,
            default=default,
            required=required,
            help=help,
        )

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


class _ValueOrSwitch(argparse.Action):
    """`--name VALUE`, and the switch the field was before it took values (`option(switch=(off,
    on))`): `--name` alone sets `on`, `--no_name` sets `off`."""

    def __init__(self, option_strings, dest, switch, **kwargs):
        name = option_strings[0][2:]
        self.switch = tuple(switch)
        super().__init__([f"--{name}", f"--no_{name}"], dest, nargs="?", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no_"):
            if values is not None:
                parser.error(f"argument {option_string}: takes no value")
            values = self.switch[0]
        setattr(namespace, self.dest, self.switch[1] if values is None else values)


def _shown(value: Any) -> str:
    """A default as one types it on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return " ".join(_shown(item) for item in value) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value_kwargs(hint: Any) -> dict[str, Any]:
    """argparse `type`/`nargs`/`action` of a field annotation."""
    if hint is bool:
        return {"action": _Switch}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # `X | None`: a flag takes an X
        return _value_kwargs(next(arg for arg in args if arg is not type(None)))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": args[0], "nargs": "*"}
        return {"type": args[0], "nargs": len(args)}
    return {"type": hint}


_TYPE_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _names_of(selection: Iterable[str] | None) -> list[str]:
    """Field names from field and section names (None: every field)."""
    every = config_fields()
    if selection is None:
        return list(every)
    names = []
    for item in selection:
        if item in SECTIONS:
            names += [f.name for f in fields(typing.get_type_hints(Config)[item])]
        elif item in every:
            names.append(item)
        else:
            raise ValueError(f"{item!r} is neither a config field nor a section ({list(SECTIONS)})")
    return names


def add_config_flags(
    parser: argparse.ArgumentParser,
    names: Iterable[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    default_help: Mapping[str, str] | None = None,
    required: Iterable[str] = (),
) -> tuple[str, ...]:
    """Adds one flag per config field to `parser`, with the field's help and default shown.

    Flag name = field name. The annotation sets the value: a number or a string; a fixed tuple
    takes that many values (`--img_resize H W`), a `tuple[X, ...]` any number; a bool is a
    switch, `--name` / `--no_name`; `X | None` takes an X; a field declared with
    `option(switch=(off, on))` takes a value and works as a switch too. Choices (registries included) are
    listed in `--help` and checked by `validate_config`.

    Args:
        parser: the parser to extend.
        names: fields and/or sections (`data`, `model`, `train`, `weighting`); None = all.
        defaults: None (train.py, tune.py): a flag not given parses to None, so it overrides
            only what the command line names and `--help` shows the field's default. A mapping
            (tools without a config file): flags parse to the field's default, or to the
            mapping's value for its keys.
        default_help: text shown as the default of these fields instead of a value, for
            defaults the tool resolves itself (e.g. `"the model's own"`); they parse to None.
        required: fields the tool cannot do without.

    Returns:
        The names of the flags added (their argparse `dest`).

    Example:

    ```python
    parser = FlagParser(prog="evaluate.py")
    add_config_flags(parser, ["data_path", "img_resize"], defaults={}, required=["img_resize"])
    parser.parse_args(["--img_resize", "64", "128"]).img_resize  # [64, 128]
    ```
    """
    every, hints = config_fields(), field_types()
    default_help = dict(default_help or {})
    required = set(required)
    groups: dict[str, Any] = {}  # every field: one --help group per section
    added = []
    for name in _names_of(names):
        item = every[name]
        meta = item.metadata
        kwargs = _value_kwargs(hints[name])
        if meta.get("switch") is not None:
            kwargs.update(action=_ValueOrSwitch, switch=meta["switch"])
        choices = field_choices(name)
        if name in default_help:
            default, shown = None, default_help[name]
        elif defaults is not None:
            default = defaults.get(name, item.default)
            shown = meta["none"] if default is None and meta["none"] else _shown(default)
        else:
            default = None
            shown = meta["none"] if item.default is None and meta["none"] else _shown(item.default)
        metavar = meta["metavar"] or _TYPE_METAVARS.get(kwargs.get("type"))
        if choices is not None:
            metavar = "{" + ",".join(map(str, choices)) + "}"
        if metavar is not None and kwargs.get("action") is not _Switch:
            kwargs["metavar"] = metavar
        if isinstance(default, tuple):
            default = list(default)  # what argparse gives for the same values typed
        kwargs["help"] = (
            f"{meta['help']} ({'required' if name in required else f'default: {shown}'})"
        )
        target = parser
        if names is None:
            section = field_section(name)
            if section not in groups:
                groups[section] = parser.add_argument_group(
                    f"{section} (config section {section}:)"
                )
            target = groups[section]
        target.add_argument(f"--{name}", default=default, required=name in required, **kwargs)
        added.append(name)
    return tuple(added)


def config_overrides(args: argparse.Namespace, names: Iterable[str] | None = None) -> dict:
    """The config fields a parsed command line sets: `{field: value}` for flags given.

    Example:

    ```python
    config = load_config(args.config, config_overrides(args))
    ```
    """
    return {
        name: getattr(args, name)
        for name in _names_of(names)
        if getattr(args, name, None) is not None
    }


# --------------------------------------------------------------------------------------------
# Validation


def _check_size(flag: str, size: Sequence[int] | None, multiple: int = 1) -> None:
    if size is None:
        return
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        what = f"positive multiples of {multiple}" if multiple > 1 else "positive"
        raise UserError(
            f"{flag} {height} {width}: height and width must be {what} (e.g. {flag} 384 768)"
        )


def _check_choices(config: Config) -> None:
    for name in config_fields():
        if name == "multi_task_type":
            continue  # resolve_name says more: the aliases
        choices = field_choices(name)
        value = getattr(getattr(config, field_section(name)), name)
        if choices is not None and value is not None and value not in choices:
            raise UserError(
                f"--{name}: invalid choice {value!r}; choose one of {', '.join(map(str, choices))}"
            )


def validate_config(config: Config) -> Config:
    """Checks what needs no data or device; returns `config` with aliases resolved.

    Raises:
        UserError: one line naming the flag (values from a YAML file are named by their flag
            too): a value outside its choices, a size not a multiple of 16, a non-positive
            count or rate, GPUs and CPU replicas together, a batch that does not divide evenly
            over the replicas.

    Example:

    ```python
    validate_config(load_config(None, {"multi_task_type": "learned"})).weighting.multi_task_type
    # "pseudo_grad_norm"
    ```
    """
    _check_choices(config)
    weighting = dataclasses.replace(
        config.weighting, multi_task_type=resolve_name(config.weighting.multi_task_type)
    )
    _check_size("--img_resize", config.data.img_resize, OUTPUT_STRIDE)
    _check_size("--output_size", config.data.output_size)
    train = config.train
    for flag, value in (("--epochs", train.epochs), ("--batch_size", train.batch_size)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if train.steps_per_epoch is not None and train.steps_per_epoch < 1:
        raise UserError(f"--steps_per_epoch {train.steps_per_epoch}: must be >= 1")
    if train.lr <= 0:
        raise UserError(f"--lr {train.lr}: must be > 0")
    if train.weight_decay < 0:
        raise UserError(f"--weight_decay {train.weight_decay}: must be >= 0")
    if train.cpu_replicas and train.cpu_replicas < 0:
        raise UserError(f"--cpu_replicas {train.cpu_replicas}: must be >= 0")
    if train.gpus and train.cpu_replicas:
        raise UserError("--gpus and --cpu_replicas: give one of them, not both")
    replicas = len(train.gpus) or train.cpu_replicas or 1
    if train.batch_size % replicas:
        raise UserError(
            f"--batch_size {train.batch_size}: the global batch must divide evenly over "
            f"{replicas} replicas"
        )
    return dataclasses.replace(config, weighting=weighting)
