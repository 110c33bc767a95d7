"""Export a trained network for serving: SavedModel, TFLite (fp32, fp16, int8), ONNX.

The exported graph is a *serving model* around the trained functional network in its inference
form (`keras_mtl.models.fold_for_inference`: BatchNorms folded into the convolutions, decoder
tails before their upsampling; the same function, fewer ops):

- inputs `flow` and `rgb`: float32 [B, H, W, 3], RAW pixel values 0..255 as stored on disk
  (flow: u + 128, v + 128, confidence), normalised inside the graph with the same arithmetic as
  `keras_mtl.data.pipeline.normalize_inputs`: `(x - 128) / 64`;
- outputs `depth` (float32 [B, H, W, 1], metres), `semantic` and `motion` (int32 [B, H, W] class
  maps by default, float32 logits [B, H, W, C] with `class_maps=False`).

Clients need TensorFlow (or LiteRT, or onnxruntime) only, no project code. After writing,
`export_model` checks parity (the folded network vs the trained one, SavedModel and ONNX vs the
folded network, TFLite fp32 vs SavedModel) and fails if fp32 parity breaks; it measures int8
agreement, mIoU drop and CPU latencies and writes `export_report.json`.

Example:

```python
report = export_model("runs/x/model_best.keras", "exported", formats=("saved_model", "tflite"))
report["parity"]["tflite"]["semantic_agreement_percent"]  # 100.0
```
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.checkpoints import at_input_size, load_model, model_contract
from keras_mtl.console import add_verbose_flag
from keras_mtl.data.layout import FLOW_DIR
from keras_mtl.data.pipeline import NORMALIZATION_OFFSET, NORMALIZATION_SCALE, normalize_inputs
from keras_mtl.errors import FlagParser, UserError
from keras_mtl.flags import add_config_flags
from keras_mtl.io import write_bytes_atomic, write_json_atomic
from keras_mtl.models import fold_batch_norms, fold_for_inference, unwrap_model
from keras_mtl.models.folding import linear_tails
from keras_mtl.tasks import INPUT_NAMES, MOTION_CLASSES, TASK_NAMES, TASKS

FORMATS: tuple[str, ...] = ("saved_model", "tflite", "tflite_fp16", "tflite_int8", "onnx")
DEFAULT_FORMATS: tuple[str, ...] = ("saved_model", "tflite", "tflite_fp16")
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILES: dict[str, str] = {
    "tflite": "model_fp32.tflite",
    "tflite_fp16": "model_fp16.tflite",
    "tflite_int8": "model_int8.tflite",
}
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
REPORT_FILE = "export_report.json"
SIGNATURE = "serving_default"
CLASS_TASKS: tuple[str, ...] = tuple(t for t in TASK_NAMES if TASKS[t].kind == "classification")

# fp32 parity: the converted graph must reproduce the reference up to float round-off, which
# grows with the output's magnitude (an untrained network's depth reaches 1e4), so the depth
# tolerance is 1 mm + 1e-4 of the largest reference depth (2.6 cm at 255 m). Class maps may
# differ only where two logits (nearly) tie.
FP32_DEPTH_ATOL_M = 1e-3
FP32_DEPTH_RTOL = 1e-4
FP32_MIN_AGREEMENT_PERCENT = 99.9


@keras.saving.register_keras_serializable(package="keras_mtl")
class InputNormalization(keras.layers.Layer):
    """The data pipeline's input normalisation as a layer: `(x - 128) / 64` on raw pixels.

    Calls `keras_mtl.data.pipeline.normalize_inputs` itself, so serving and training can never
    disagree; the exported graph holds only the arithmetic (a SUB and a DIV/MUL per input).

    Example:

    ```python
    layer = InputNormalization()
    layer({"flow": np.full((1, 2, 2, 3), 128.0), "rgb": np.full((1, 2, 2, 3), 192.0)})
    # {"flow": zeros, "rgb": ones}
    ```
    """

    def call(self, inputs):
        flow, rgb = normalize_inputs(inputs["flow"], inputs["rgb"])
        return {"flow": flow, "rgb": rgb}

    def compute_output_spec(self, inputs):
        return {name: keras.KerasTensor(inputs[name].shape, "float32") for name in INPUT_NAMES}


@keras.saving.register_keras_serializable(package="keras_mtl")
class ClassMap(keras.layers.Layer):
    """Argmax over the last axis, as int32: logits [B, H, W, C] -> class map [B, H, W].

    Uses `tf.argmax` rather than `keras.ops.argmax`: the latter adds Bitcast/BitwiseAnd ops
    (to order -0.0 before +0.0) that neither TFLite builtins nor ONNX support.
    """

    def call(self, inputs):
        return tf.argmax(inputs, axis=-1, output_type=tf.int32)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape[:-1], dtype="int32")


def build_serving_model(model: keras.Model, *, class_maps: bool = True) -> keras.Model:
    """Wraps a trained functional network into the serving model (raw pixels in).

    Args:
        model: the functional multi-task network (inputs `flow`, `rgb`; outputs `depth`,
            `semantic`, `motion` as logits), e.g. `trainer.model` or a loaded `.keras` file.
        class_maps: True: int32 argmax maps for `semantic` and `motion`; False: logits.

    Returns:
        A functional `keras.Model` with inputs `{"flow", "rgb"}` (float32 0..255) and outputs
        `{"depth", "semantic", "motion"}`.

    Example:

    ```python
    serving = build_serving_model(build_multitask_model((64, 128), width_mult=0.25))
    serving({"flow": flow_pixels, "rgb": rgb_pixels})["semantic"].dtype  # int32
    ```
    """
    input_specs = _input_specs(model)
    raw = {
        name: keras.Input(shape=shape, name=name, dtype="float32")
        for name, shape in input_specs.items()
    }
    normalized = InputNormalization(name="normalize_inputs")(raw)
    predictions = model(normalized, training=False)
    outputs = {}
    for task in TASK_NAMES:
        if task not in predictions:
            continue
        tensor = predictions[task]
        if task in CLASS_TASKS and class_maps:
            tensor = ClassMap(name=f"{task}_class_map")(tensor)
        outputs[task] = tensor
    return keras.Model(raw, outputs, name="serving_model")


def _input_specs(model: keras.Model) -> dict[str, tuple[int, ...]]:
    inputs = model.input if isinstance(model.input, dict) else None
    if inputs is None:
        inputs = {tensor.name: tensor for tensor in model.inputs}
    return {name: tuple(tensor.shape[1:]) for name, tensor in inputs.items()}


# --------------------------------------------------------------------------------------------
# Writing the formats


def export_saved_model(serving_model: keras.Model, directory: str | os.PathLike) -> Path:
    """Writes `serving_model` as a TF SavedModel with signature `serving_default`, atomically.

    The signature takes `flow`, `rgb` and returns `depth`, `semantic`, `motion`.
    """
    directory = Path(directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        target = tmp / "model"
        serving_model.export(os.fspath(target), format="tf_saved_model", verbose=False)
        _replace_dir(target, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _replace_dir(source: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def convert_tflite(
    saved_model_dir: str | os.PathLike,
    path: str | os.PathLike,
    quantization: str = "fp32",
    representative_inputs: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> Path:
    """Converts a SavedModel to TFLite with builtin ops only and writes it atomically.

    Args:
        saved_model_dir: the SavedModel written by `export_saved_model`.
        path: the `.tflite` file to write.
        quantization: `fp32`; `fp16` (float16 weights, float compute where the runtime likes);
            `int8` (full integer: weights and activations int8, calibrated on
            `representative_inputs`; float32 inputs and outputs at the edges, with a QUANTIZE
            op after each input and DEQUANTIZE before `depth`, so clients feed the same raw
            pixels to every file; class maps come out of an int8 ARG_MAX as int32).
        representative_inputs: raw-pixel input dicts (`flow`, `rgb`: float32 [1, H, W, 3]),
            required for int8.

    Raises:
        UserError: int8 without representative inputs, or the graph needs ops outside the
            TFLite builtins (no Flex/Select TF ops are allowed).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir))
    if quantization == "fp32":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    elif quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    elif quantization == "int8":
        if not representative_inputs:
            raise UserError(
                "tflite_int8 needs calibration frames: pass --data_path with a train or val split"
            )
        frames = list(representative_inputs)

        def representative_dataset() -> Iterable[dict[str, np.ndarray]]:
            for frame in frames:
                yield {name: np.asarray(frame[name], np.float32) for name in INPUT_NAMES}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        raise ValueError(f"unknown quantization {quantization!r}; expected fp32, fp16 or int8")
    try:
        with warnings.catch_warnings():
            # int8 calibration runs TF's own (deprecated) tf.lite.Interpreter internally.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            content = converter.convert()
    except Exception as error:  # noqa: BLE001 - converter errors come in several classes
        message = " ".join(str(error).split())
        hint = ""
        if "flex" in message.lower() or "select" in message.lower() or "not supported" in message:
            hint = " (the graph needs TensorFlow ops outside the TFLite builtins; Flex is not used)"
        raise UserError(f"TFLite {quantization} conversion failed{hint}: {message[:600]}") from None
    path = Path(path)
    write_bytes_atomic(path, content)
    return path


def export_onnx(
    serving_model: keras.Model, path: str | os.PathLike, opset: int = ONNX_OPSET
) -> Path:
    """Writes `serving_model` as ONNX through Keras (`model.export(format="onnx")`, tf2onnx),
    atomically.

    The file takes the serving model's inputs by name (`flow`, `rgb`: float32 [B, H, W, 3] raw
    pixels, any batch) and gives its outputs by name (`depth`, `semantic`, `motion`).

    Args:
        serving_model: from `build_serving_model` (on the folded network).
        path: the `.onnx` file to write.
        opset: ONNX opset.

    Raises:
        UserError: tf2onnx is not installed, or the conversion fails.

    Example:

    ```python
    export_onnx(build_serving_model(fold_for_inference(network)), "exported/model.onnx")
    ```
    """
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        raise UserError(
            "--formats onnx needs tf2onnx and onnxruntime: pip install -r requirements.txt "
            "(see docs/deployment.md)"
        ) from None
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.onnx")
    # A dynamic batch; the named specs name the ONNX inputs.
    signature = [
        {
            name: tf.TensorSpec((None, *shape), tf.float32, name=name)
            for name, shape in _input_specs(serving_model).items()
        }
    ]
    try:
        with warnings.catch_warnings():
            # Keras patches tf2onnx for NumPy 2 and trips NumPy's `np.object` FutureWarning.
            warnings.filterwarnings("ignore", category=FutureWarning)
            serving_model.export(
                os.fspath(tmp),
                format="onnx",
                verbose=False,
                input_signature=signature,
                opset_version=opset,
            )
    except Exception as error:  # noqa: BLE001 - converter errors come in several classes
        tmp.unlink(missing_ok=True)
        message = " ".join(str(error).split())
        raise UserError(f"ONNX conversion failed: {message[:600]}") from None
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# Running the formats


def litert_runner(path: str | os.PathLike, num_threads: int | None = None) -> Callable:
    """A callable `runner(flow=..., rgb=...) -> {"depth", "semantic", "motion"}` on a `.tflite`
    file, through `ai_edge_litert`'s signature runner (inputs and outputs by name)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    return interpreter.get_signature_runner(SIGNATURE)


def saved_model_runner(directory: str | os.PathLike) -> Callable:
    """A callable `runner(flow=..., rgb=...) -> dict of numpy` on the SavedModel's signature."""
    signature = tf.saved_model.load(os.fspath(directory)).signatures[SIGNATURE]

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def onnx_runner(path: str | os.PathLike, num_threads: int | None = None) -> Callable:
    """A callable `runner(flow=..., rgb=...) -> dict` on an ONNX file (onnxruntime's CPU
    provider with `num_threads` intra-op threads; default: onnxruntime's own choice)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            "checking the ONNX file needs onnxruntime: pip install -r requirements.txt"
        ) from None
    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


def keras_runner(serving_model: keras.Model, compiled: bool = False) -> Callable:
    """A callable `runner(flow=..., rgb=...) -> dict of numpy` on the Keras serving model.

    Args:
        serving_model: from `build_serving_model`.
        compiled: False: an eager call (what a Keras user gets from `model(x)`; no tracing, so
            cheap for parity checks); True: Keras' compiled `predict_on_batch` (for latency).
    """

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        if compiled:
            outputs = serving_model.predict_on_batch(inputs)
        else:
            outputs = serving_model(inputs, training=False)
        return {name: np.asarray(value) for name, value in outputs.items()}

    return run


def median_latency_ms(runner: Callable, inputs: Mapping[str, np.ndarray], runs: int) -> float:
    """Median wall time of `runner(**inputs)` over `runs` calls, after one warm-up call."""
    runner(**inputs)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        runner(**inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


# --------------------------------------------------------------------------------------------
# Comparing outputs


def class_map(outputs: Mapping[str, np.ndarray], task: str) -> np.ndarray:
    """The int class map of `task` from serving outputs (maps as they are; logits argmaxed)."""
    value = np.asarray(outputs[task])
    if value.ndim == 4:
        return np.argmax(value, axis=-1).astype(np.int32)
    return value.astype(np.int32)


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]], candidate: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, float]:
    """Differences between two runs over the same frames.

    Returns:
        `depth_max_abs_diff_m`, `depth_mean_abs_diff_m`, `depth_reference_max_abs_m`,
        `<task>_agreement_percent` (pixels with
        the same class) for semantic and motion, and `logits_max_abs_diff` when both are logits.
    """
    depth_ref = np.concatenate([np.asarray(o["depth"], np.float64).ravel() for o in reference])
    depth_new = np.concatenate([np.asarray(o["depth"], np.float64).ravel() for o in candidate])
    result = {
        "depth_max_abs_diff_m": float(np.max(np.abs(depth_ref - depth_new))),
        "depth_mean_abs_diff_m": float(np.mean(np.abs(depth_ref - depth_new))),
        "depth_reference_max_abs_m": float(np.max(np.abs(depth_ref))),
    }
    logits_diff = 0.0
    for task in CLASS_TASKS:
        ref = np.concatenate([class_map(o, task).ravel() for o in reference])
        new = np.concatenate([class_map(o, task).ravel() for o in candidate])
        result[f"{task}_agreement_percent"] = float(100.0 * np.mean(ref == new))
        if all(np.ndim(o[task]) == 4 for o in [*reference, *candidate]):
            for a, b in zip(reference, candidate, strict=True):
                logits_diff = max(logits_diff, float(np.max(np.abs(a[task] - b[task]))))
            result["logits_max_abs_diff"] = logits_diff
    return result


def fp32_parity_ok(diff: Mapping[str, float]) -> bool:
    """True when a float32 conversion reproduces its reference (see the FP32_* thresholds)."""
    tolerance = FP32_DEPTH_ATOL_M + FP32_DEPTH_RTOL * diff["depth_reference_max_abs_m"]
    return diff["depth_max_abs_diff_m"] <= tolerance and all(
        diff[f"{task}_agreement_percent"] >= FP32_MIN_AGREEMENT_PERCENT for task in CLASS_TASKS
    )


def task_scores(
    outputs: Sequence[Mapping[str, np.ndarray]],
    targets: Sequence[Mapping[str, np.ndarray]],
    semantic_classes: int,
) -> dict[str, float]:
    """Validation metrics of serving outputs against ground truth, with `keras_mtl.metrics`:
    `depth_ard_percent`, `semantic_miou`, `motion_miou` (percent; targets at the output size)."""
    from keras_mtl import metrics as mtl_metrics

    ard = mtl_metrics.DepthARD()
    ious = {
        "semantic": mtl_metrics.MeanIoU(num_classes=semantic_classes),
        "motion": mtl_metrics.MeanIoU(num_classes=MOTION_CLASSES),
    }
    for out, target in zip(outputs, targets, strict=True):
        ard.update_state(np.asarray(target["depth"], np.float32), np.asarray(out["depth"]))
        for task, metric in ious.items():
            metric.update_state(np.asarray(target[task]), class_map(out, task))
    scores = {TASKS["depth"].metric: float(ard.result())}
    scores.update({TASKS[task].metric: float(metric.result()) for task, metric in ious.items()})
    return scores


# --------------------------------------------------------------------------------------------
# Frames


def load_frames(
    data_path: str,
    split: str,
    img_size: Sequence[int],
    count: int,
    semantic_classes: int,
    flow_dir: str = FLOW_DIR,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The first `count` frames of a split through the data pipeline, as raw pixels.

    Returns:
        (inputs, targets): inputs `{"flow", "rgb"}` float32 [1, H, W, 3] with the pipeline's
        normalisation undone (exact: 64 is a power of two), targets at `img_size`.
    """
    from keras_mtl.data.pipeline import make_dataset

    dataset = make_dataset(
        data_path,
        split,
        img_resize=tuple(img_size),
        batch_size=1,
        training=False,
        output_size=tuple(img_size),
        semantic_classes=semantic_classes,
        flow_dir=flow_dir,
        shuffle=False,
        repeat=False,
    )
    inputs, targets = [], []
    for features, labels in dataset.take(count):
        inputs.append(
            {
                name: (features[name].numpy() * NORMALIZATION_SCALE + NORMALIZATION_OFFSET).astype(
                    np.float32
                )
                for name in INPUT_NAMES
            }
        )
        targets.append({name: value.numpy() for name, value in labels.items()})
    if not inputs:
        raise UserError(f"--data_path {data_path}: split {split!r} has no frames")
    return inputs, targets


def random_frames(
    img_size: Sequence[int], count: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Deterministic raw-pixel inputs for parity checks without data: a smooth random scene
    (RGB) and small flow around the stored zero (128), with random confidence."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in img_size)
    frames = []
    for _ in range(count):
        # Low-frequency noise upsampled: closer to images than white noise, same for all formats.
        coarse = rng.uniform(0.0, 255.0, size=(1, height // 8, width // 8, 6)).astype(np.float32)
        smooth = tf.image.resize(coarse, (height, width), method="bilinear").numpy()
        flow = smooth[..., 3:].copy()
        flow[..., :2] = 128.0 + (flow[..., :2] - 128.0) / 16.0
        frames.append({"flow": np.round(flow), "rgb": np.round(smooth[..., :3])})
    return frames


# --------------------------------------------------------------------------------------------
# The whole export


def export_model(
    checkpoint: str | os.PathLike | keras.Model,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = DEFAULT_FORMATS,
    *,
    img_resize: Sequence[int] | None = None,
    data_path: str | None = None,
    flow_dir: str = FLOW_DIR,
    num_calibration: int = 32,
    num_eval: int = 4,
    calibration_split: str = "train",
    eval_split: str = "val",
    class_maps: bool = True,
    latency_runs: int = 10,
    num_threads: int | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Exports a trained network to `formats` under `out_dir`, checks parity, writes the report.

    Args:
        checkpoint: a `.keras` file (`model_best.keras` or a trainer `checkpoint.keras`), or the
            functional network itself.
        out_dir: output folder (created): `saved_model/`, `model_fp32.tflite`,
            `model_fp16.tflite`, `model_int8.tflite`, `model.onnx`, `export_report.json`.
        formats: a subset of `FORMATS`. Every format is made from the network's inference
            form (`fold_for_inference`); TFLite is converted from a SavedModel (kept only when
            `saved_model` is asked for), ONNX from the folded Keras network.
        img_resize: export at this (H, W) (the network is rebuilt with the same weights);
            default the network's own input size.
        data_path: dataset root; required for `tflite_int8` (calibration). With it, parity and
            metrics use real frames, otherwise deterministic synthetic pixels.
        flow_dir: name of the flow folder under `data_path`.
        num_calibration: calibration frames for int8 (from `calibration_split`).
        num_eval: frames (from `eval_split`) for parity, metrics and the int8 mIoU drop.
        class_maps: True: argmax maps for semantic and motion; False: logits.
        latency_runs: timed calls per format (median reported), batch 1; 0 = no timing.
        num_threads: LiteRT interpreter and onnxruntime threads (default: all CPU cores).
        verbose: print progress and the final table.

    Returns:
        The report (also written to `out_dir/export_report.json`).

    Raises:
        UserError: bad input (formats, missing calibration data, unwritable folder, a file that
            is not a keras-mtl model), or fp32 parity broken (after the report is written).
    """
    formats = _check_arguments(formats, data_path, num_calibration, num_eval, latency_runs)
    out = _prepare_out_dir(out_dir)
    say = print if verbose else (lambda *args, **kwargs: None)

    if isinstance(checkpoint, keras.Model):
        source = type(checkpoint).__name__
        model_contract(checkpoint, where=source, multitask=True)
        network = unwrap_model(checkpoint)
    else:
        source = os.fspath(checkpoint)
        network = load_model(checkpoint, multitask=True)
    if img_resize is not None:
        network = at_input_size(network, img_resize, source=source)
    input_shape = _input_specs(network)["rgb"]
    img_size = (int(input_shape[0]), int(input_shape[1]))
    semantic_classes = int(network.output["semantic"].shape[-1])
    folded = fold_for_inference(network)
    serving = build_serving_model(folded, class_maps=class_maps)
    trained_serving = build_serving_model(network, class_maps=class_maps)
    threads = num_threads or os.cpu_count() or 1

    if data_path:
        say(f"reading {num_eval} {eval_split} frames from {data_path}")
        eval_inputs, eval_targets = load_frames(
            data_path, eval_split, img_size, num_eval, semantic_classes, flow_dir
        )
    else:
        eval_inputs, eval_targets = random_frames(img_size, num_eval), None

    report: dict[str, Any] = {
        "source": source,
        "img_size": list(img_size),
        "semantic_classes": semantic_classes,
        "outputs": "class_maps" if class_maps else "logits",
        "inputs": "float32 raw pixels 0..255 (flow: u+128, v+128, confidence); "
        f"normalised in-graph as (x - {NORMALIZATION_OFFSET:g}) / {NORMALIZATION_SCALE:g}",
        "eval_frames": {
            "source": f"{data_path}:{eval_split}" if data_path else "synthetic",
            "count": len(eval_inputs),
            "size": list(img_size),
        },
        "thresholds": {
            "fp32_depth_atol_m": FP32_DEPTH_ATOL_M,
            "fp32_depth_rtol_of_max": FP32_DEPTH_RTOL,
            "fp32_min_agreement_percent": FP32_MIN_AGREEMENT_PERCENT,
        },
        "folding": {
            "batch_norms_folded": _count_batch_norms(network) - _count_batch_norms(folded),
            "batch_norms_kept": _count_batch_norms(folded),
            "linear_tails_folded": len(linear_tails(fold_batch_norms(network))),
            "note": "every format is made from the network's inference form (BatchNorms folded "
            "into the convolutions, decoder tails before their upsampling); parity 'folded' "
            "compares it with the trained network ('keras')",
        },
        "files": {},
        "parity": {},
        "metrics": {},
        "latency_ms": {},
        "num_threads": threads,
    }

    # "keras" is the trained network as loaded (the reference), "folded" what is exported.
    runners: dict[str, Callable] = {
        "keras": keras_runner(trained_serving),
        "folded": keras_runner(serving),
    }
    outputs = {"keras": [runners["keras"](**frame) for frame in eval_inputs]}
    failures = []

    def check(name: str, reference: str, fp32: bool) -> None:
        outputs[name] = [runners[name](**frame) for frame in eval_inputs]
        diff = compare_outputs(outputs[reference], outputs[name])
        diff["reference"] = reference
        if fp32:
            diff["passed"] = fp32_parity_ok(diff)
            if not diff["passed"]:
                failures.append(f"{name} vs {reference}")
        report["parity"][name] = diff
        say(f"  {name} vs {reference}: " + _format_diff(diff))

    check("folded", "keras", fp32=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as scratch:
        saved_dir = out / SAVED_MODEL_DIR if "saved_model" in formats else Path(scratch) / "sm"
        say(f"writing SavedModel to {saved_dir}")
        export_saved_model(serving, saved_dir)
        if "saved_model" in formats:
            report["files"]["saved_model"] = _file_entry(saved_dir)
        runners["saved_model"] = saved_model_runner(saved_dir)
        check("saved_model", "folded", fp32=True)

        calibration = None
        if "tflite_int8" in formats:
            say(f"reading {num_calibration} {calibration_split} calibration frames")
            calibration, _ = load_frames(
                data_path, calibration_split, img_size, num_calibration, semantic_classes, flow_dir
            )
        for fmt, quantization in (
            ("tflite", "fp32"),
            ("tflite_fp16", "fp16"),
            ("tflite_int8", "int8"),
        ):
            if fmt not in formats:
                continue
            path = out / TFLITE_FILES[fmt]
            say(f"converting {fmt} -> {path}")
            convert_tflite(saved_dir, path, quantization, calibration)
            report["files"][fmt] = _file_entry(path)
            runners[fmt] = litert_runner(path, num_threads=threads)
            check(fmt, "saved_model", fp32=quantization == "fp32")
        if "onnx" in formats:
            path = out / ONNX_FILE
            say(f"converting onnx -> {path}")
            export_onnx(serving, path)
            report["files"]["onnx"] = _file_entry(path)
            runners["onnx"] = onnx_runner(path, num_threads=threads)
            check("onnx", "folded", fp32=True)

        if eval_targets is not None:
            report["metrics_scope"] = metrics_scope(
                len(eval_inputs), data_path, eval_split, img_size
            )
            for name, values in outputs.items():
                report["metrics"][name] = task_scores(values, eval_targets, semantic_classes)
            if "tflite_int8" in report["metrics"]:
                reference = report["metrics"]["saved_model"]
                int8 = report["metrics"]["tflite_int8"]
                report["int8_drop"] = {
                    key: reference[key] - int8[key]
                    for key in (TASKS["semantic"].metric, TASKS["motion"].metric)
                }
                report["int8_drop"]["depth_ard_percent_increase"] = (
                    int8["depth_ard_percent"] - reference["depth_ard_percent"]
                )
        if latency_runs > 0:
            say(f"timing {latency_runs} calls per format (batch 1, {threads} LiteRT threads)")
            runners["keras"] = keras_runner(trained_serving, compiled=True)
            runners["folded"] = keras_runner(serving, compiled=True)
            for name, runner in runners.items():
                report["latency_ms"][name] = median_latency_ms(runner, eval_inputs[0], latency_runs)

    report["flow"] = _write_flow_record(checkpoint, out)
    say(f"flow record: {report['flow']['note']}")
    report["parity_passed"] = not failures
    write_json_atomic(out / REPORT_FILE, report)
    say(format_report_table(report))
    if failures:
        raise UserError(
            f"fp32 parity broken ({', '.join(failures)}): see {out / REPORT_FILE}; the exported "
            "files do not reproduce the Keras model"
        )
    return report


def _write_flow_record(checkpoint: str | os.PathLike | keras.Model, out: Path) -> dict[str, Any]:
    """Writes the training flow's `flow_method.json` beside the exports, when it is known.

    predict.py reads it there (`keras_mtl.prediction.trained_flow`), so footage fed to an
    exported model gets the flow the network was trained on, not a default guess.
    """
    # Imported here: the flow tools (OpenCV) are needed by this step only.
    from data_tools.flow import flow_record
    from keras_mtl.data.layout import FLOW_METHOD_FILE
    from keras_mtl.prediction import trained_flow

    if isinstance(checkpoint, keras.Model):
        return {"file": None, "note": "no record: exported from an in-memory network"}
    try:
        params, where = trained_flow(checkpoint)
    except UserError as error:  # an unreadable run config must not cost the exports' report
        return {"file": None, "note": f"no record: {error}"}
    if params is None:
        return {"file": None, "note": f"no record ({where}); predict.py will say so"}
    record = {**flow_record(params), "recorded_from": where}
    write_json_atomic(out / FLOW_METHOD_FILE, record)
    return {"file": FLOW_METHOD_FILE, "method": record["method"], "note": f"from {where}"}


def _count_batch_norms(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def metrics_scope(count: int, data_path: str, split: str, img_size: Sequence[int]) -> str:
    """What the report's metrics are computed on, said beside them: they compare the formats,
    they are not the model's score (evaluate.py: the whole split at `--output_size`)."""
    return (
        f"{count} frames of {data_path}:{split}, truth resized to the export size "
        f"{img_size[0]}x{img_size[1]}; they compare the formats: the model's score is "
        "evaluate.py's (the whole split at --output_size)"
    )


def _check_arguments(
    formats: Sequence[str],
    data_path: str | None,
    num_calibration: int,
    num_eval: int,
    latency_runs: int,
) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if not formats or unknown:
        raise UserError(f"--formats {' '.join(formats)}: choose from {' '.join(FORMATS)}")
    if "tflite_int8" in formats and not data_path:
        raise UserError(
            "--formats tflite_int8 needs calibration frames: pass --data_path DIR (a dataset "
            "in the Cityscapes multitask layout)"
        )
    if data_path and not os.path.isdir(data_path):
        raise UserError(f"--data_path {data_path}: no such folder")
    if num_calibration < 1:
        raise UserError(f"--num_calibration {num_calibration}: must be at least 1")
    if num_eval < 1:
        raise UserError(f"--num_eval {num_eval}: must be at least 1")
    if latency_runs < 0:
        raise UserError(f"--latency_runs {latency_runs}: must be 0 (no timing) or more")
    return formats


def _prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UserError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    return out


def _file_entry(path: Path) -> dict[str, Any]:
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        size = path.stat().st_size
    return {"path": os.fspath(path), "size_bytes": int(size)}


def _format_diff(diff: Mapping[str, Any]) -> str:
    parts = [f"depth max |diff| {diff['depth_max_abs_diff_m']:.2e} m"]
    parts += [f"{task} agree {diff[f'{task}_agreement_percent']:.3f}%" for task in CLASS_TASKS]
    if "passed" in diff:
        parts.append("ok" if diff["passed"] else "FAILED")
    return ", ".join(parts)


def format_report_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of the report: size, latency, parity and metrics per format."""
    header = ["format", "size MB", "latency ms", "depth max|d| m", "sem agree %", "mot agree %"]
    with_metrics = bool(report.get("metrics"))
    if with_metrics:
        header += ["ARD %", "sem mIoU", "mot mIoU"]
    rows = []
    for name in outputs_in_order(report):
        entry = report["files"].get(name)
        size = f"{entry['size_bytes'] / 2**20:.2f}" if entry else "-"
        parity = report["parity"].get(name)
        latency = report["latency_ms"].get(name)
        row = [name, size, f"{latency:.1f}" if latency is not None else "-"]
        if parity:
            row += [f"{parity['depth_max_abs_diff_m']:.2e}"]
            row += [f"{parity[f'{task}_agreement_percent']:.3f}" for task in CLASS_TASKS]
        else:
            row += ["(ref)", "(ref)", "(ref)"]
        if with_metrics:
            scores = report["metrics"].get(name, {})
            row += [f"{scores[key]:.2f}" if key in scores else "-" for key in _METRIC_KEYS]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if with_metrics and report.get("metrics_scope"):
        lines.append(f"metrics: {report['metrics_scope']}")
    return "\n".join(lines)


_METRIC_KEYS = ("depth_ard_percent", "semantic_miou", "motion_miou")


def outputs_in_order(report: Mapping[str, Any]) -> list[str]:
    """Names of what the report compares, in export order: keras first, then each format."""
    return ["keras", *report["parity"]]


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The `export.py` argument parser (every flag with its help and default)."""
    parser = FlagParser(
        prog="export.py",
        description="Export a trained keras-mtl model (SavedModel, TFLite fp32/fp16/int8, ONNX) "
        "and check that every file reproduces the Keras model.",
    )
    add = parser.add_argument
    add(
        "--checkpoint",
        required=True,
        metavar="FILE.keras",
        help="model_best.keras or checkpoint.keras (required)",
    )
    add("--out", required=True, metavar="DIR", help="output folder (required)")
    add(
        "--formats",
        nargs="+",
        default=list(DEFAULT_FORMATS),
        metavar="FORMAT",
        help=f"any of {' '.join(FORMATS)} (default: {' '.join(DEFAULT_FORMATS)})",
    )
    add_config_flags(
        parser,
        ("img_resize", "data_path", "flow_dir"),
        defaults={},
        default_help={
            "img_resize": "the checkpoint's own size",
            "data_path": "none: parity on synthetic pixels, no metrics, no int8",
        },
    )
    add(
        "--num_calibration",
        type=int,
        default=32,
        metavar="N",
        help="int8 calibration frames (default: 32)",
    )
    add(
        "--num_eval",
        type=int,
        default=4,
        metavar="N",
        help="frames of --eval_split for parity and the formats' metrics (default: 4)",
    )
    add(
        "--calibration_split",
        default="train",
        metavar="SPLIT",
        help="split of the int8 calibration frames (default: train)",
    )
    add(
        "--eval_split",
        default="val",
        metavar="SPLIT",
        help="split of the parity frames (default: val)",
    )
    outputs = parser.add_mutually_exclusive_group()
    outputs.add_argument(
        "--argmax",
        dest="class_maps",
        action="store_true",
        default=True,
        help="semantic and motion as int32 class maps (the default)",
    )
    outputs.add_argument(
        "--logits",
        dest="class_maps",
        action="store_false",
        help="semantic and motion as float32 logits",
    )
    add(
        "--latency_runs",
        type=int,
        default=10,
        metavar="N",
        help="timed calls per format (default: 10)",
    )
    add(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="LiteRT threads (default: all CPU cores)",
    )
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python export.py ...`; returns 0, raises UserError on bad input or broken parity."""
    args = build_parser().parse_args(argv)
    export_model(
        args.checkpoint,
        args.out,
        args.formats,
        img_resize=args.img_resize,
        data_path=args.data_path,
        flow_dir=args.flow_dir,
        num_calibration=args.num_calibration,
        num_eval=args.num_eval,
        calibration_split=args.calibration_split,
        eval_split=args.eval_split,
        class_maps=args.class_maps,
        latency_runs=args.latency_runs,
        num_threads=args.threads,
    )
    return 0
