"""One configuration tree: data, model, train, weighting.

YAML files in `configs/` fill it, command-line flags override it. Every flag of `train.py`
maps to exactly one field here (the flag name is the field name). Unknown keys are errors.

Example:

```python
config = load_config("configs/synthetic.yaml", overrides={"epochs": 3})
config.train.epochs  # 3
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from keras_mtl.data.layout import DEFAULT_DATA_PATH, FLOW_DIR
from keras_mtl.errors import UserError
from keras_mtl.io import write_text_atomic


@dataclass
class DataConfig:
    data_path: str = DEFAULT_DATA_PATH
    flow_dir: str = FLOW_DIR
    img_resize: tuple[int, int] = (384, 768)  # network input size (H, W), divisible by 16
    output_size: tuple[int, int] = (1024, 2048)  # evaluation size of targets (H, W)
    semantic_classes: int = 5
    train_split: str = "train"
    val_split: str = "val"
    augment: bool = True
    augment_zoom: str = "isotropic"  # "isotropic": depth-consistent zoom; "original": the seed's
    shuffle: bool = True  # shuffle the training split (off: reproducible order, e.g. tests)
    cache: bool = False  # cache decoded frames in memory (small datasets)


@dataclass
class ModelConfig:
    backbone: str = "mobilenetv2_ericsun"
    width_mult: float = 1.0
    pretrained: str | None = None  # checkpoint to initialise from (by layer name)
    dropout: float = 0.2  # ASPP channel dropout of every decoder
    depth_scale: float = 1.0  # metres per unit of the linear depth head (1 = the original head)
    depth_head: str = "log"  # "log": depth = exp(x + b), positive; "linear": the original head
    depth_init: float | None = None  # log head's initial metres; None = train split's median


@dataclass
class WeightingConfig:
    multi_task_type: str = "vanilla"
    task_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # depth, semantic, motion
    # GradNorm (Chen et al. 2018)
    grad_norm_alpha: float = 1.5
    grad_norm_lr: float = 0.025
    grad_norm_initial_loss: str = "measured"  # "measured" (first step) or "theoretical" (log C)
    # TI's pseudo GradNorm
    pseudo_grad_norm_alpha: float = 0.75
    pseudo_grad_norm_rate: float = 1e-4
    pseudo_grad_norm_ema_short: float = 1e-3
    pseudo_grad_norm_ema_long: float = 1e-6
    # Kendall uncertainty: likelihood of the depth loss ("laplace" for L1-type, "gaussian" for L2)
    uncertainty_depth_likelihood: str = "laplace"
    # DWA
    dwa_temperature: float = 2.0


@dataclass
class TrainConfig:
    save_path: str = "runs/default"
    epochs: int = 250
    steps_per_epoch: int | None = None  # None = one pass over the training split
    val_steps: int | None = None  # None = the whole validation split
    batch_size: int = 16  # global, over all replicas
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    lr_milestones: tuple[float, ...] = (0.4, 0.8)  # fractions of epochs (original: 100, 200 of 250)
    lr_gamma: float = 0.5
    gpus: tuple[int, ...] = ()
    cpu_replicas: int = 0
    resume: bool = False
    single_task: str | None = None
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    pivot_metric: str = "motion_miou"  # model_best.keras is chosen by this validation metric
    depth_loss: str = "log_l1"  # "log_l1", "silog" or "smooth_l1" (the original, in metres)
    class_weights: bool = False  # the original's class weights for semantic (5-class) and motion


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
