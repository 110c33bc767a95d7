"""Tuning: objective arithmetic, search space, a 2-trial search with resume, CLI wiring."""

from __future__ import annotations

import json
from pathlib import Path

import keras_tuner as kt
import pytest
import yaml

from keras_mtl import tuning
from keras_mtl.config import load_config
from keras_mtl.errors import UserError, run_cli

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed"),
    # keras-tuner 1.4.8 calls threading.currentThread().getName().
    pytest.mark.filterwarnings("ignore:currentThread\\(\\) is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:getName\\(\\) is deprecated:DeprecationWarning"),
    pytest.mark.xdist_group("tuning"),
]

TINY = {
    "img_resize": (64, 128),
    "output_size": (64, 128),
    "width_mult": 0.25,
    "epochs": 1,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "warmup_epochs": 0,
    "augment": False,
}


def test_mean_task_score_and_objective_callback_by_hand():
    metrics = {"depth_ard_percent": 20.0, "semantic_miou": 40.0, "motion_miou": 60.0}
    assert tuning.mean_task_score(metrics) == pytest.approx((80.0 + 40.0 + 60.0) / 3)

    logs = {f"val_{k}": v for k, v in metrics.items()}
    tuning.ValidationObjective().on_epoch_end(0, logs)
    assert logs[tuning.MEAN_TASK_SCORE] == pytest.approx(60.0)

    single = {"depth_ard_percent": 10.0, "semantic_miou": 50.0, "motion_miou": 60.0}
    logs = {f"val_{k}": v for k, v in metrics.items()}
    tuning.ValidationObjective(single).on_epoch_end(0, logs)
    # depth: (20 - 10) / 10 = +1 (worse); semantic: -(40 - 50) / 50 = +0.2; motion: 0.
    assert logs[tuning.DELTA_M] == pytest.approx(100.0 * (1.0 + 0.2 + 0.0) / 3)
    assert tuning.objective_for(single).direction == "min"
    assert tuning.objective_for(None).name == tuning.MEAN_TASK_SCORE

    with pytest.raises(ValueError, match="val_motion_miou"):
        tuning.ValidationObjective().on_epoch_end(0, {"val_depth_ard_percent": 1.0})


def test_trial_config_puts_weights_on_the_simplex_and_leaves_the_base_alone():
    base = load_config(None, {"lr": 3e-4})
    hp = kt.HyperParameters()
    tuning.trial_config(base, hp, "weights")  # registers the space
    assert sorted(hp.values) == ["motion_ratio", "semantic_ratio"]
    hp.values.update({"semantic_ratio": 2.0, "motion_ratio": 0.5})
    config = tuning.trial_config(base, hp, "weights")
    expected = [3 * r / 3.5 for r in (1.0, 2.0, 0.5)]
    assert config.weighting.task_weights == pytest.approx(expected)
    assert sum(config.weighting.task_weights) == pytest.approx(3.0)
    assert config.train.lr == 3e-4
    assert base.weighting.task_weights == (1.0, 1.0, 1.0)

    hp = kt.HyperParameters()
    tuning.trial_config(base, hp, "weights+lr")
    hp.values["lr"] = 1e-3
    assert tuning.trial_config(base, hp, "weights+lr").train.lr == pytest.approx(1e-3)


def test_method_search_activates_only_the_chosen_methods_parameter():
    base = load_config(None)
    hp = kt.HyperParameters()
    hp.values["multi_task_type"] = "dwa"
    hp.values["dwa_temperature"] = 4.0
    config = tuning.trial_config(base, hp, "method")
    assert config.weighting.multi_task_type == "dwa"
    assert config.weighting.dwa_temperature == 4.0
    assert config.weighting.grad_norm_alpha == base.weighting.grad_norm_alpha
    assert "grad_norm_alpha" not in hp.values or not hp.is_active("grad_norm_alpha")
    assert set(tuning.METHODS) == set(hp._hps["multi_task_type"][0].values)


@pytest.fixture(scope="module")
def search(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    config = load_config(None, {**TINY, "data_path": str(tiny_dataset)})
    save_path = tmp_path_factory.mktemp("tune")
    summary = tuning.run_search(
        config, save_path, max_trials=2, run_eagerly=True, export_best=True, verbose=0
    )
    return config, save_path, summary


def test_search_writes_summary_with_documented_keys(search):
    config, save_path, summary = search
    on_disk = json.loads((save_path / tuning.SUMMARY_FILE).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["objective"] == tuning.MEAN_TASK_SCORE
    assert [t["trial_id"] for t in on_disk["trials"]] == ["0", "1"]
    for trial in on_disk["trials"]:
        assert set(trial["hyperparameters"]) == {"semantic_ratio", "motion_ratio"}
        ratios = [
            1.0,
            trial["hyperparameters"]["semantic_ratio"],
            trial["hyperparameters"]["motion_ratio"],
        ]
        weights = [trial["task_weights"][t] for t in ("depth", "semantic", "motion")]
        assert weights == pytest.approx([3 * r / sum(ratios) for r in ratios])
        # The score is the objective of the logged validation metrics, not a loss.
        assert trial["score"] == pytest.approx(tuning.mean_task_score(trial["metrics"]), rel=1e-5)
        assert trial["best_epoch"] == 1
    best = max(on_disk["trials"], key=lambda t: t["score"])
    assert on_disk["best"]["trial_id"] == best["trial_id"]
    table = (save_path / tuning.SUMMARY_TABLE_FILE).read_text()
    assert tuning.MEAN_TASK_SCORE in table and len(table.splitlines()) == 5


def test_export_best_writes_a_loadable_model_and_config(search):
    from keras_mtl.checkpoints import load_model

    _, save_path, summary = search
    network = load_model(save_path / tuning.BEST_MODEL_FILE, multitask=True)
    assert tuple(network.input["rgb"].shape[1:3]) == TINY["img_resize"]
    best_config = yaml.safe_load((save_path / tuning.BEST_CONFIG_FILE).read_text())
    weights = summary["best"]["task_weights"]
    assert best_config["weighting"]["task_weights"] == pytest.approx(
        [weights[t] for t in ("depth", "semantic", "motion")]
    )


def test_rerunning_on_the_same_folder_resumes_without_new_trials(search):
    config, save_path, summary = search
    again = tuning.run_search(config, save_path, max_trials=2, run_eagerly=True, verbose=0)
    assert [t["trial_id"] for t in again["trials"]] == ["0", "1"]
    assert [t["score"] for t in again["trials"]] == [t["score"] for t in summary["trials"]]


def test_bad_arguments_are_user_errors(tiny_dataset: Path, tmp_path: Path):
    config = load_config(None, {**TINY, "data_path": str(tiny_dataset)})
    with pytest.raises(UserError, match="--max_trials"):
        tuning.run_search(config, tmp_path, max_trials=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="--save_path"):
        tuning.run_search(config, blocker / "sub", max_trials=1)
    with pytest.raises(UserError, match="--search"):
        tuning.run_search(config, tmp_path, max_trials=1, search="everything")


def _cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    import tune

    with pytest.raises(SystemExit) as exit_info:
        run_cli(tune.main, argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_bad_input_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    base = ["--data_path", str(tmp_path), "--save_path", str(tmp_path / "t")]
    for argv, flag in (
        ([*base, "--max_trials", "0"], "--max_trials"),
        ([*base, "--max_trials", "2", "--resume"], "--resume"),
        ([*base, "--max_trials", "2", "--tuner", "grid"], "--tuner"),
        (["--data_path", str(tmp_path), "--max_trials", "2"], "--save_path"),
    ):
        code, err = _cli(argv, capsys)
        assert code == 2 and len(err) == 1 and flag in err[0], (argv, err)


def test_cli_passes_training_and_search_flags_through(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    seen = {}

    def fake_search(config, save_path, **kwargs):
        seen.update(config=config, save_path=save_path, **kwargs)
        trial = {
            "trial_id": "0",
            "multi_task_type": "vanilla",
            "hyperparameters": {"lr": 1e-3},
            "task_weights": {"depth": 1.0, "semantic": 1.0, "motion": 1.0},
            "score": 50.0,
            "metrics": {},
            "best_epoch": 1,
        }
        return {
            "objective": tuning.MEAN_TASK_SCORE,
            "objective_direction": "max",
            "objective_definition": "d",
            "trials": [trial],
            "best": trial,
        }

    monkeypatch.setattr(tuning, "run_search", fake_search)
    import tune

    status = tune.main(
        [
            "--data_path", str(tmp_path), "--save_path", str(tmp_path / "t"),
            "--max_trials", "3", "--tuner", "bayesian", "--search", "weights+lr",
            "--width_mult", "0.5", "--epochs", "2", "--cpu_replicas", "2", "--batch_size", "4",
            "--export_best",
        ]
    )  # fmt: skip
    assert status == 0
    assert seen["max_trials"] == 3 and seen["tuner"] == "bayesian"
    assert seen["search"] == "weights+lr" and seen["export_best"] and not seen["overwrite"]
    assert seen["config"].model.width_mult == 0.5 and seen["config"].train.epochs == 2
    assert seen["config"].train.cpu_replicas == 2
    assert "val_mean_task_score" in capsys.readouterr().out
