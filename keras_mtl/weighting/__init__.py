"""Task-weighting methods behind one interface (`Weighting`), and the registry that builds them.

Adding a method: one new file with a `Weighting` subclass (its `info`, and a
`from_weighting_config` classmethod when it has hyper-parameters) and its line in `METHODS`
below; its hyper-parameters, if any, are fields of `keras_mtl.config.WeightingConfig`. Every
list of methods (`WEIGHTING_NAMES`, aliases, the command line, tuning, benchmarks, tests) is
read from this registry.

Example:

```python
from keras_mtl.config import WeightingConfig
weighting = get_weighting("grad_norm", ["depth", "semantic", "motion"], WeightingConfig(),
                          semantic_classes=5)
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from keras_mtl.config import WeightingConfig
from keras_mtl.errors import UserError
from keras_mtl.tasks import TASK_NAMES
from keras_mtl.weighting.aligned_mtl import AlignedMTLUBWeighting, AlignedMTLWeighting
from keras_mtl.weighting.base import MethodInfo, Weighting
from keras_mtl.weighting.dwa import DynamicWeightAverage
from keras_mtl.weighting.equal import EqualWeighting
from keras_mtl.weighting.famo import FAMOWeighting
from keras_mtl.weighting.grad_norm import GradNormWeighting
from keras_mtl.weighting.imtl import IMTLLWeighting
from keras_mtl.weighting.pcgrad import PCGradWeighting
from keras_mtl.weighting.pseudo_grad_norm import PseudoGradNormWeighting
from keras_mtl.weighting.uncertainty import UncertaintyWeighting

# The registry, in the order tables and the command line list the methods.
METHODS: tuple[type[Weighting], ...] = (
    EqualWeighting,
    GradNormWeighting,
    PseudoGradNormWeighting,
    UncertaintyWeighting,
    DynamicWeightAverage,
    PCGradWeighting,
    FAMOWeighting,
    AlignedMTLWeighting,
    AlignedMTLUBWeighting,
    IMTLLWeighting,
)
WEIGHTINGS: dict[str, type[Weighting]] = {method.info.name: method for method in METHODS}
ALIASES: dict[str, str] = {
    alias: method.info.name for method in METHODS for alias in method.info.aliases
}
WEIGHTING_NAMES: tuple[str, ...] = tuple(WEIGHTINGS)


def resolve_name(name: str) -> str:
    """Canonical method name for `name` (aliases resolved); raises UserError if unknown."""
    canonical = ALIASES.get(name, name)
    if canonical not in WEIGHTINGS:
        aliases = ", ".join(f"{alias} = {target}" for alias, target in ALIASES.items())
        raise UserError(
            f"--multi_task_type {name!r}: unknown weighting method; choose one of "
            f"{', '.join(WEIGHTING_NAMES)} (alias: {aliases})"
        )
    return canonical


def initial_weights_from_config(task_names: Sequence[str], config: WeightingConfig) -> list[float]:
    """The `--task_weights` entries (ordered depth, semantic, motion) of `task_names`."""
    weights = tuple(config.task_weights)
    if len(weights) != len(TASK_NAMES):
        raise UserError(
            f"--task_weights {list(weights)}: give {len(TASK_NAMES)} weights, one per task "
            f"({', '.join(TASK_NAMES)})"
        )
    if not all(isinstance(w, int | float) and math.isfinite(w) and w > 0 for w in weights):
        raise UserError(f"--task_weights {list(weights)}: every weight must be a number > 0")
    return [float(weights[TASK_NAMES.index(name)]) for name in task_names]


def get_weighting(
    name: str,
    task_names: Sequence[str],
    config: WeightingConfig | None = None,
    *,
    semantic_classes: int = 5,
    seed: int = 0,
) -> Weighting:
    """Builds the weighting method `name` for `task_names` from a `WeightingConfig`.

    Args:
        name: one of `WEIGHTING_NAMES` or an alias (`learned` = `pseudo_grad_norm`).
        task_names: the tasks trained, in order (a subset of `keras_mtl.tasks.TASK_NAMES`).
        config: hyper-parameters and `task_weights`; default `WeightingConfig()`.
        semantic_classes: number of semantic classes (GradNorm's theoretical initial loss).
        seed: seed of methods that draw random numbers (PCGrad's projection order).

    Raises:
        UserError: unknown method name or invalid hyper-parameter (naming the flag).
    """
    canonical = resolve_name(name)
    config = config or WeightingConfig()
    unknown = [task for task in task_names if task not in TASK_NAMES]
    if unknown or not task_names:
        raise ValueError(
            f"task_names {list(task_names)}: expected a non-empty subset of {TASK_NAMES}"
        )
    initial_weights = initial_weights_from_config(task_names, config)
    return WEIGHTINGS[canonical].from_weighting_config(
        list(task_names),
        initial_weights,
        config,
        semantic_classes=semantic_classes,
        seed=seed,
    )


__all__ = [
    "ALIASES",
    "METHODS",
    "WEIGHTINGS",
    "WEIGHTING_NAMES",
    "AlignedMTLUBWeighting",
    "AlignedMTLWeighting",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FAMOWeighting",
    "GradNormWeighting",
    "IMTLLWeighting",
    "MethodInfo",
    "PCGradWeighting",
    "PseudoGradNormWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "get_weighting",
    "initial_weights_from_config",
    "resolve_name",
]
