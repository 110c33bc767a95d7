"""Initialising a network from another one, layer by layer, where names and shapes match.

The source is a model already in memory; reading it from a file is
`keras_mtl.checkpoints.initialise_from_checkpoint` (`--pretrained`), so this module needs no
file handling and no class registration.

Example:

```python
target = build_multitask_model((384, 768))
report = load_pretrained(target, build_single_task_model("semantic", (384, 768)))
len(report["copied"]), report["skipped"]
```
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import keras

from keras_mtl.models.blocks import SEPARATOR
from keras_mtl.models.multitask import decoder_prefix, stem_prefix, unwrap_model
from keras_mtl.tasks import INPUT_NAMES, TASK_NAMES


def _layers_with_weights(model: keras.Model) -> dict[str, keras.layers.Layer]:
    layers = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.update(_layers_with_weights(layer))
        elif layer.weights:
            layers[layer.name] = layer
    return layers


def _candidate_sources(name: str, source_names: set[str]) -> list[str]:
    """Source layer names to try for target layer `name`, best first."""
    candidates = [name]
    prefix, _, rest = name.partition(SEPARATOR)
    stems = [stem_prefix(input_name) for input_name in INPUT_NAMES]
    decoders = [decoder_prefix(task) for task in TASK_NAMES]
    if prefix in stems:
        # A single-stream model's stem initialises both streams.
        candidates += [f"{other}{SEPARATOR}{rest}" for other in stems if other != prefix]
    elif prefix in decoders:
        # A single decoder initialises every decoder (where shapes match).
        candidates += [f"{other}{SEPARATOR}{rest}" for other in decoders if other != prefix]
    return [candidate for candidate in candidates if candidate in source_names]


def load_pretrained(model: keras.Model, source_model: keras.Model) -> dict[str, Any]:
    """Copies weights from `source_model` into `model` by layer name where the shapes match.

    A layer takes the weights of the source layer of the same name; failing that, a stem
    (`flow_stem.*`/`rgb_stem.*`) takes the other stream's stem and a decoder takes another
    task's decoder (so a single-task RGB model initialises both streams and all decoders, as
    the original did). Layers whose shapes differ (e.g. a classifier with another class count)
    are skipped.

    Args:
        model: the model to initialise (a `MultiTaskNet`, or the trainer holding one).
        source_model: the model to copy from: a functional network, or an object whose
            `.model` is one (the trainer). For a `.keras` file use
            `keras_mtl.checkpoints.initialise_from_checkpoint`.

    Returns:
        `{"source": class name of source_model, "copied": {target layer: source layer},
        "skipped": {target layer: reason}}`.

    Raises:
        TypeError: `source_model` is not a `keras.Model` (e.g. a path).

    Example:

    ```python
    report = load_pretrained(model, keras_mtl.checkpoints.load_model("semantic.keras"))
    report["copied"]["flow_stem.block0"]  # "rgb_stem.block0"
    ```
    """
    if not isinstance(source_model, keras.Model):
        raise TypeError(
            f"load_pretrained takes a keras.Model as the source, got {type(source_model).__name__}"
            "; for a .keras file use keras_mtl.checkpoints.initialise_from_checkpoint"
        )
    target_layers = _layers_with_weights(unwrap_model(model))
    source_layers = _layers_with_weights(unwrap_model(source_model))
    copied: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, layer in target_layers.items():
        candidates = _candidate_sources(name, set(source_layers))
        if not candidates:
            skipped[name] = "not in source"
            continue
        shapes = [tuple(weight.shape) for weight in layer.weights]
        reasons = []
        for candidate in candidates:
            source_weights = source_layers[candidate].get_weights()
            if [tuple(weight.shape) for weight in source_weights] == shapes:
                layer.set_weights(source_weights)
                copied[name] = candidate
                break
            reasons.append(
                f"shape mismatch with {candidate}: "
                f"{[tuple(w.shape) for w in source_weights]} vs {shapes}"
            )
        else:
            skipped[name] = "; ".join(reasons)
    return {"source": type(source_model).__name__, "copied": copied, "skipped": skipped}


def _grouped(names: Iterable[str]) -> str:
    """Layer names grouped by their first level: `encoder.* (42), fuse.* (4)`."""
    counts = Counter(name.partition(SEPARATOR)[0] for name in names)
    return ", ".join(f"{prefix}.* ({count})" for prefix, count in sorted(counts.items()))


def describe_report(report: dict[str, Any]) -> str:
    """A few lines summing up an initialisation report (`load_pretrained`,
    `keras_mtl.checkpoints.initialise_from_checkpoint`) for the console: the source, and per
    outcome (copied, initialised, skipped for each reason) the layers grouped by prefix. The
    full per-layer listing is the report itself (`pretrained.json` in the run folder).

    Example:

    ```python
    print(describe_report(initialise_from_checkpoint(model, "imagenet")))
    # pretrained: imagenet (file ..._1.0_224_no_top.h5, sha256 6d3f...)
    #   copied 104 layers: encoder.* (84), flow_stem.* (10), rgb_stem.* (10)
    #   skipped 4 layers, no counterpart in MobileNetV2: ...: fuse.* (4)
    ```
    """
    source = report["source"]
    if "file" in report:
        source += f" (file {report['file']}, sha256 {report['sha256'][:12]})"
    lines = [f"pretrained: {source}"]
    lines.append(f"  copied {len(report['copied'])} layers: {_grouped(report['copied'])}")
    if report.get("initialised"):
        initialised = report["initialised"]
        reasons = sorted(set(initialised.values()))
        lines.append(
            f"  initialised {len(initialised)} layers ({'; '.join(reasons)}): "
            f"{', '.join(sorted(initialised))}"
        )
    by_reason: dict[str, list[str]] = {}
    for name, reason in report["skipped"].items():
        # Shape mismatches name shapes per layer; one line for all of them.
        key = "shape mismatch" if reason.startswith("shape mismatch") else reason
        by_reason.setdefault(key, []).append(name)
    for reason, names in sorted(by_reason.items()):
        lines.append(f"  skipped {len(names)} layers, {reason}: {_grouped(names)}")
    for line in report.get("conversions", []):
        lines.append(f"  converted: {line}")
    return "\n".join(lines)
