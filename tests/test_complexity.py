"""Conv MAC counter: hand-computed small cases and the seed's complexity column at 384x768."""

from __future__ import annotations

import json

import keras
import pytest

from keras_mtl.complexity import count_macs, main
from keras_mtl.errors import UserError
from keras_mtl.models import build_multitask_model, build_single_task_model

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SEED_SIZE = (384, 768)


def test_count_macs_hand_computed():
    inputs = keras.Input((16, 20, 4))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)  # 8x10 out
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)  # 16 ch
    x = keras.layers.Conv2D(6, 1, groups=2)(x)  # 16/2 in per group
    x = keras.layers.BatchNormalization()(x)  # not counted
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)  # not counted
    x = keras.layers.SeparableConv2D(5, 3, padding="same")(x)  # 16x20 out
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    expected = (
        8 * 4 * 3 * 3 * 8 * 10
        + 3 * 3 * 8 * 2 * 8 * 10
        + 6 * (16 // 2) * 1 * 1 * 8 * 10
        + (3 * 3 * 6 + 6 * 5) * 16 * 20
        + 5 * 3
    )
    assert count_macs(model) == expected
    # Nested models are walked too.
    outer_inputs = keras.Input((16, 20, 4))
    outer = keras.Model(outer_inputs, keras.layers.Dense(2)(model(outer_inputs)))
    assert count_macs(outer) == expected + 3 * 2


# (builder kwargs, GMACs of the original's analytic count at 384x768); the CLI test below checks
# the 5-class figures (multitask 5.632, depth 3.444, semantic 3.467, motion 3.925).
SEED_FIGURES = {
    "multitask ericsun 19": (dict(semantic_classes=19, backbone="mobilenetv2_ericsun"), 5.710),
    "multitask torchvision 19": (dict(semantic_classes=19, backbone="mobilenetv2"), 5.559),
    "semantic 19": (dict(task="semantic", semantic_classes=19), 3.545),
}


@pytest.mark.parametrize("name", list(SEED_FIGURES))
def test_seed_complexity_column(name):
    kwargs, expected = SEED_FIGURES[name]
    if "task" in kwargs:
        model = build_single_task_model(img_size=SEED_SIZE, backbone="mobilenetv2", **kwargs)
    else:
        model = build_multitask_model(SEED_SIZE, **kwargs)
    gmacs = count_macs(model) / 1e9
    keras.backend.clear_session()
    assert gmacs == pytest.approx(expected, rel=5e-3)
    assert round(gmacs, 3) == expected  # in fact exact to the published digits


def test_cli_seed_figures_and_errors(capsys):
    # Defaults: 384x768, 5 classes, ericsun multitask, torchvision single-task baselines.
    assert main(["--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    expected = {"multitask": 5.632, "depth": 3.444, "semantic": 3.467, "motion": 3.925}
    assert list(figures) == list(expected)
    for name, gmacs in expected.items():
        assert figures[name] == pytest.approx(gmacs, rel=5e-3), name
        assert round(figures[name], 3) == gmacs, name
    assert any(line.startswith("multitask") and "5.632" in line for line in lines)
    with pytest.raises(UserError, match="--img_resize"):
        main(["--img_resize", "100", "200"])
    with pytest.raises(UserError, match="--width_mult"):
        main(["--width_mult", "0"])
    with pytest.raises(SystemExit):
        main(["--backbone", "resnet"])
