"""One configuration tree: data, model, train, weighting, filled from YAML.

YAML files in `configs/` fill it; command-line flags override it. Each field carries what its
flag shows (help text, metavar, what None means, fixed choices) in its metadata, through
`option(...)`: `keras_mtl.flags` makes exactly one flag of each field (the flag name is the
field name) and validates a resolved config against the registries. Unknown keys are errors.

Example:

```python
config = load_config("configs/synthetic.yaml", overrides={"epochs": 3})
config.train.epochs  # 3
config_fields()["epochs"].metadata["help"]  # "training epochs"
```
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from keras_mtl.data.layout import DEFAULT_DATA_PATH, FLOW_DIR, LABEL_MODES
from keras_mtl.errors import UserError
from keras_mtl.io import write_text_atomic
from keras_mtl.tasks import SEMANTIC_CLASS_CHOICES, TASK_NAMES


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence | None = None,
    metavar: str | tuple[str, ...] | None = None,
    none: str | None = None,
    switch: tuple[Any, Any] | None = None,
) -> Any:
    """A config field with what its flag needs (`dataclasses.field` with metadata).

    Args:
        default: the field's default.
        help: what the field is, for `--help`.
        choices: allowed values, when they are fixed here (values that name registered
            things, weighting methods or backbones, are `keras_mtl.flags.REGISTRY_CHOICES`).
        metavar: how `--help` names the value(s), e.g. `("H", "W")`.
        none: what None means, for fields whose default is None.
        switch: (off, on) for a field that was a true/false switch before it took values:
            YAML `false` / `true` read as these, and the flag also works as the old switch
            (`--name` = on, `--no_name` = off).

    Example:

    ```python
    epochs: int = option(250, "training epochs")
    ```
    """
    metadata = {
        "help": help,
        "choices": choices,
        "metavar": metavar,
        "none": none,
        "switch": switch,
    }
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    data_path: str = option(
        DEFAULT_DATA_PATH, "dataset root in the Cityscapes multitask layout", metavar="DIR"
    )
    flow_dir: str = option(FLOW_DIR, "flow folder under --data_path", metavar="NAME")
    img_resize: tuple[int, int] = option(
        (384, 768), "network input size, multiples of 16", metavar=("H", "W")
    )
    output_size: tuple[int, int] = option(
        (1024, 2048), "evaluation size of targets and predictions", metavar=("H", "W")
    )
    semantic_classes: int = option(
        5,
        "semantic classes: 5 (road, sky, pedestrian, vehicle, background) or 19 (Cityscapes)",
        choices=SEMANTIC_CLASS_CHOICES,
    )
    train_split: str = option("train", "split to train on", metavar="SPLIT")
    val_split: str = option("val", "split to validate on", metavar="SPLIT")
    augment: bool = option(True, "augment training frames: rotate, scale-crop, flip")
    augment_zoom: str = option(
        "isotropic",
        "zoom of the augmentation: isotropic (one factor, depth targets divided by it, "
        "consistent depth) or original (the seed's: a factor per axis, depth unchanged)",
        choices=("isotropic", "original"),
    )
    shuffle: bool = option(True, "shuffle the training split; off: a reproducible order")
    cache: bool = option(False, "cache decoded frames in memory, for small datasets")
    skip_bad_frames: bool = option(
        False,
        "leave out a frame whose PNG does not decode, with a warning naming the file; "
        "off: stop at it with one line naming the file",
    )
    labels: str = option(
        "strict",
        "labels per frame: strict, every frame has every task's label (the original); "
        "partial, a frame needs rgb and flow, each task's label is optional and a task's loss "
        "is taken over the frames that have it (docs/data.md)",
        choices=LABEL_MODES,
    )
    min_labelled_frames: int = option(
        1,
        "with --labels partial: refuse to train when a task has fewer labelled training "
        "frames than this",
        metavar="N",
    )


@dataclass
class ModelConfig:
    backbone: str = option(
        "mobilenetv2_ericsun",
        "MobileNetV2 variant of the streams and the encoder",
    )
    width_mult: float = option(1.0, "MobileNetV2 width multiplier")
    pretrained: str | None = option(
        None,
        "initialise from: imagenet (Keras' ImageNet MobileNetV2 at --width_mult, into both "
        "streams and the encoder); a keras.applications.MobileNetV2 .weights.h5 (the same "
        "mapping); or a .keras file, a run's model_best.keras or checkpoint.keras (by layer "
        "name, where shapes match)",
        metavar="imagenet|FILE",
        none="random initialisation",
    )
    dropout: float = option(0.2, "ASPP channel dropout of every decoder")
    depth_scale: float = option(
        1.0, "metres per unit of the linear depth head; 1 = the original head"
    )
    depth_head: str = option(
        "log",
        "depth head: log, depth = exp(x + b) > 0; linear, the original",
    )
    depth_init: float | None = option(
        None,
        "initial depth of the log head, metres",
        metavar="METRES",
        none="the training split's median depth",
    )


@dataclass
class WeightingConfig:
    multi_task_type: str = option(
        "vanilla",
        "task weighting method, see docs/weighting.md; learned = pseudo_grad_norm",
    )
    task_weights: tuple[float, float, float] = option(
        (1.0, 1.0, 1.0),
        "initial task weights; fixed for vanilla, pcgrad, aligned_mtl and aligned_mtl_ub",
        metavar=("DEPTH", "SEMANTIC", "MOTION"),
    )
    # GradNorm (Chen et al. 2018)
    grad_norm_alpha: float = option(1.5, "GradNorm: asymmetry alpha of the target norms")
    grad_norm_lr: float = option(0.025, "GradNorm: step size of the task weights")
    grad_norm_initial_loss: str = option(
        "measured",
        "GradNorm: L_i(0) measured at the first step, or theoretical: log C",
    )
    # TI's pseudo GradNorm
    pseudo_grad_norm_alpha: float = option(0.75, "pseudo-GradNorm: exponent alpha")
    pseudo_grad_norm_rate: float = option(1e-4, "pseudo-GradNorm: step size of the weights")
    pseudo_grad_norm_ema_short: float = option(
        1e-3, "pseudo-GradNorm: short EMA rate of losses and gradient norms"
    )
    pseudo_grad_norm_ema_long: float = option(1e-6, "pseudo-GradNorm: long EMA rate of the losses")
    # Kendall uncertainty
    uncertainty_depth_likelihood: str = option(
        "laplace",
        "uncertainty: likelihood of the depth loss; laplace for L1-type, gaussian for L2",
    )
    # DWA
    dwa_temperature: float = option(2.0, "DWA: softmax temperature")
    # FAMO (Liu et al. 2023)
    famo_lr: float = option(0.025, "FAMO: Adam learning rate of the task logits")
    famo_gamma: float = option(
        0.01, "FAMO: weight decay of the task logits (paper: 0.01 Cityscapes, 0.001 NYUv2)"
    )
    famo_min_losses: tuple[float, float, float] = option(
        (0.0, 0.0, 0.0),
        "FAMO: lower bounds L* of the task losses, log(L - L*) is balanced",
        metavar=("DEPTH", "SEMANTIC", "MOTION"),
    )


# `--mixed_precision` value -> Keras dtype policy of the network.
MIXED_PRECISION_POLICIES: dict[str, str] = {
    "none": "float32",
    "fp16": "mixed_float16",
    "bf16": "mixed_bfloat16",
}


@dataclass
class TrainConfig:
    save_path: str = option(
        "runs/default",
        "run folder: checkpoint.keras, model_best.keras, history.csv, config.yaml, logs/",
        metavar="DIR",
    )
    epochs: int = option(250, "training epochs")
    steps_per_epoch: int | None = option(
        None, "optimizer steps per epoch", none="one pass over the training split"
    )
    val_steps: int | None = option(
        None, "validation batches per epoch", none="the whole validation split"
    )
    batch_size: int = option(16, "global batch size, over all replicas")
    lr: float = option(1e-4, "learning rate after warm-up, Adam")
    weight_decay: float = option(1e-4, "coupled L2 weight decay, as PyTorch's Adam")
    warmup_epochs: int = option(5, "epochs of linear learning-rate warm-up")
    lr_milestones: tuple[float, ...] = option(
        (0.4, 0.8),
        "fractions of --epochs where the learning rate is multiplied by --lr_gamma; "
        "the original: epochs 100 and 200 of 250",
        metavar="FRACTION",
    )
    lr_gamma: float = option(0.5, "learning-rate factor at each milestone")
    gpus: tuple[int, ...] = option(
        (), "GPU ids: MirroredStrategy over them; one id: that GPU alone", metavar="ID"
    )
    cpu_replicas: int = option(
        0, "logical CPU replicas, to run the distributed path on a CPU; 0: off"
    )
    resume: bool = option(
        False, "continue the run in --save_path from its config.yaml and checkpoint.keras"
    )
    single_task: str | None = option(
        None,
        "train the single-task baseline of this task",
        choices=TASK_NAMES,
        none="all three tasks",
    )
    seed: int = option(0, "random seed of weights, data order and augmentation")
    mixed_precision: str = option(
        "none",
        "mixed precision: fp16 (mixed_float16, with loss scaling) or bf16 (mixed_bfloat16, no "
        "loss scaling: CPUs with AMX, recent GPUs); variables and losses stay float32; "
        "the bare flag is fp16",
        choices=tuple(MIXED_PRECISION_POLICIES),
        switch=("none", "fp16"),
    )
    jit_compile: bool = option(False, "XLA-compile the training step")
    pivot_metric: str = option(
        "motion_miou",
        "validation metric that picks model_best.keras; a single-task run uses its task's",
        metavar="METRIC",
    )
    depth_loss: str = option(
        "log_l1",
        "depth loss: log_l1, silog or smooth_l1 (the original, in metres)",
    )
    class_weights: bool = option(
        False, "the original's class weights for semantic (5 classes) and motion"
    )
    overwrite: bool = option(
        False,
        "write over earlier results: train.py starts anew in a --save_path of an earlier run "
        "(its files stay until the new run has written its first epoch), tune.py discards "
        "the earlier trials, evaluate.py writes into a non-empty --save_predictions",
    )


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Writes the resolved config as YAML, atomically."""
        write_text_atomic(path, yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))


SECTIONS = {f.name: f.type for f in fields(Config)}

RUN_CONFIG_NAME = "config.yaml"  # the resolved config a training run saves in its folder

# What a run trains: a resumed run keeps these from its saved config (the checkpoint's weights,
# weighting state and optimizer slots only fit them).
FIXED_ON_RESUME: tuple[str, ...] = (
    *(f.name for f in fields(ModelConfig) if f.name != "pretrained"),
    *(f.name for f in fields(WeightingConfig)),
    "img_resize",
    "semantic_classes",
    "single_task",
    "mixed_precision",
    "class_weights",
    "depth_loss",
)

# Fields whose default changed: a saved run config that predates a field trained with this value.
LEGACY_VALUES: dict[str, Any] = {
    "depth_head": "linear",
    "depth_loss": "smooth_l1",
    "augment_zoom": "original",
}


def field_section(name: str) -> str:
    """The section ('data', 'model', ...) that holds field `name`; raises UserError if none."""
    for section in fields(Config):
        section_cls = type(getattr(Config(), section.name))
        if name in {f.name for f in fields(section_cls)}:
            return section.name
    raise UserError(f"unknown config key {name!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _coerce(section_obj: Any, name: str, value: Any, where: str) -> Any:
    """`value` in the type of the field's default; raises UserError naming `where` and `name`."""
    default = getattr(section_obj, name)
    switch = next(f for f in fields(section_obj) if f.name == name).metadata.get("switch")
    if switch is not None and isinstance(value, bool):
        return switch[value]  # a config from when the field was a switch
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: {name} must be a list (e.g. {list(default)}), got {value!r}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        # PyYAML reads `1e-4` (no dot) as a string; accept it as the number it spells.
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {name} must be a number, got {value!r}") from None
    if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"{where}: {name} must be an integer, got {value!r}")
    return value


def apply_overrides(config: Config, values: dict[str, Any], where: str = "overrides") -> Config:
    """Returns a copy of `config` with flat `{field: value}` overrides applied (None = keep)."""
    sections = {s.name: dataclasses.replace(getattr(config, s.name)) for s in fields(Config)}
    for name, value in values.items():
        if value is None:
            continue
        section = sections[field_section(name)]
        setattr(section, name, _coerce(section, name, value, where))
    return Config(**sections)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Reads a YAML config (sections `data`, `model`, `train`, `weighting`, or flat keys).

    Args:
        path: YAML file, or None for the defaults.
        overrides: flat `{field: value}` applied after the file (None values are skipped).

    Raises:
        UserError: missing or unreadable file, unknown section or key.
    """
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--config {path}: no such file (see configs/ for examples)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UserError(f"--config {path}: not valid YAML ({error})") from None
        if not isinstance(raw, dict):
            raise UserError(f"--config {path}: expected a mapping of sections or keys")
        flat: dict[str, Any] = {}
        for key, value in raw.items():
            if key in SECTIONS and isinstance(value, dict):
                section_cls = type(getattr(config, key))
                known = {f.name for f in fields(section_cls)}
                for name, item in value.items():
                    if name not in known:
                        raise UserError(
                            f"--config {path}: unknown key {key}.{name}; known keys of {key}: "
                            f"{', '.join(sorted(known))}"
                        )
                    flat[name] = item
            else:
                try:
                    field_section(key)
                except UserError:
                    raise UserError(f"--config {path}: unknown key {key!r}") from None
                flat[key] = value
        config = apply_overrides(config, flat, where=f"--config {path}")
    if overrides:
        config = apply_overrides(config, overrides)
    return config


def _keys_of(path: Path) -> set[str]:
    """Field names a YAML config file sets (sections flattened)."""
    raw = yaml.safe_load(path.read_text()) or {}
    keys: set[str] = set()
    for key, value in raw.items():
        keys |= set(value) if key in SECTIONS and isinstance(value, dict) else {key}
    return keys


def resume_config(config: Config, flags: dict[str, Any]) -> Config:
    """The config of a resumed run: its saved `config.yaml` with the command-line `flags` applied.

    `config` is the one the command line resolved to (it names the run folder). Flags may change
    how training continues (`epochs`, `lr`, `gpus`, `data_path`, ...) but not what is trained.

    Raises:
        UserError: a flag changes a field of `FIXED_ON_RESUME`.
    """
    saved_path = Path(config.train.save_path) / RUN_CONFIG_NAME
    if not saved_path.is_file():
        return config  # nothing saved: the trainer reports that there is nothing to resume
    saved = load_config(saved_path)
    saved_keys = _keys_of(saved_path)
    saved = apply_overrides(
        saved, {k: v for k, v in LEGACY_VALUES.items() if k not in saved_keys}, str(saved_path)
    )
    resumed = apply_overrides(saved, {**flags, "resume": True})
    changed = []
    for name in FIXED_ON_RESUME:
        section = field_section(name)
        before = getattr(getattr(saved, section), name)
        after = getattr(getattr(resumed, section), name)
        if before != after:
            changed.append(f"--{name} {_plain(after)} (the run has {_plain(before)})")
    if changed:
        raise UserError(
            f"--resume: {'; '.join(changed)}: a resumed run keeps what {saved_path} trains; "
            "drop the flag, or start a new run with another --save_path"
        )
    return resumed


def config_fields() -> dict[str, dataclasses.Field]:
    """Every field of the tree by name (names are unique across sections), in section order.

    Example:

    ```python
    config_fields()["lr"].default  # 0.0001
    ```
    """
    return {item.name: item for section in _section_types() for item in fields(section)}


def field_types() -> dict[str, Any]:
    """Every field's annotation, resolved (this module's annotations are strings)."""
    hints: dict[str, Any] = {}
    for section in _section_types():
        hints.update(typing.get_type_hints(section))
    return hints


def _section_types() -> list[type]:
    hints = typing.get_type_hints(Config)
    return [hints[section.name] for section in fields(Config)]
