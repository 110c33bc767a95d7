"""benchmarks/reproduce_table.py and benchmarks/run.py: aggregation against hand-computed values,
and both scripts end to end in their tiny modes (the shape of their outputs, not timings)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import reproduce_table, run  # noqa: E402
from keras_mtl.errors import UserError  # noqa: E402

METRICS = ("depth_ard_percent", "semantic_miou", "motion_miou")


def _result(row, seed, metrics, task=None, seconds=10.0, gmacs=0.5):
    return {
        "name": reproduce_table.run_name(row, seed, task),
        "row": row,
        "task": task,
        "seed": seed,
        "final": dict(metrics),
        "train_seconds": seconds,
        "gmacs": gmacs,
        "history": "/nonexistent/history.csv",
    }


def _fake_results():
    """Single-task and two methods over 2 seeds, with metric values chosen by hand."""
    singles = {
        0: {"depth_ard_percent": 10.0, "semantic_miou": 80.0, "motion_miou": 70.0},
        1: {"depth_ard_percent": 12.0, "semantic_miou": 82.0, "motion_miou": 74.0},
    }
    results = []
    for seed, values in singles.items():
        for task, metric in zip(("depth", "semantic", "motion"), METRICS, strict=True):
            results.append(
                _result(
                    "single_task",
                    seed,
                    {metric: values[metric], "loss": 1.0},
                    task=task,
                    seconds=5.0 + seed,
                    gmacs={"depth": 0.1, "semantic": 0.2, "motion": 0.3}[task],
                )
            )
    vanilla = {
        0: {"depth_ard_percent": 12.0, "semantic_miou": 70.0, "motion_miou": 60.0},
        1: {"depth_ard_percent": 12.0, "semantic_miou": 73.0, "motion_miou": 62.0},
    }
    better = {
        0: {"depth_ard_percent": 11.0, "semantic_miou": 81.0, "motion_miou": 72.0},
        1: {"depth_ard_percent": 11.5, "semantic_miou": 80.0, "motion_miou": 71.0},
    }
    for seed in (0, 1):
        results.append(_result("vanilla", seed, vanilla[seed], seconds=20.0 + seed))
        results.append(_result("uncertainty", seed, better[seed], seconds=22.0))
    return singles, vanilla, better, results


def _numpy_delta_m(values, reference):
    signs = {"depth_ard_percent": 1.0, "semantic_miou": -1.0, "motion_miou": -1.0}
    changes = [signs[m] * (values[m] - reference[m]) / reference[m] for m in METRICS]
    return 100.0 * float(np.mean(changes))


def test_aggregate_matches_hand_computed_values():
    singles, vanilla, better, results = _fake_results()
    summary = reproduce_table.aggregate(results, ["single_task", "vanilla", "uncertainty"])
    reference = {m: np.mean([singles[s][m] for s in (0, 1)]) for m in METRICS}
    assert summary["reference_single_task"] == pytest.approx(reference)

    rows = summary["rows"]
    for row, values in (("vanilla", vanilla), ("uncertainty", better)):
        for metric in METRICS:
            column = [values[s][metric] for s in (0, 1)]
            assert rows[row][metric]["mean"] == pytest.approx(np.mean(column))
            assert rows[row][metric]["std"] == pytest.approx(np.std(column, ddof=1))
        deltas = [_numpy_delta_m(values[s], reference) for s in (0, 1)]
        assert rows[row]["delta_m"]["mean"] == pytest.approx(np.mean(deltas))
        assert rows[row]["delta_m"]["std"] == pytest.approx(np.std(deltas, ddof=1))
        assert rows[row]["gmacs_total"] == pytest.approx(0.5)
    # Single-task: three networks, so GMACs and training time are sums over the tasks.
    assert rows["single_task"]["gmacs_total"] == pytest.approx(0.6)
    assert rows["single_task"]["train_seconds"]["values"] == pytest.approx([15.0, 18.0])
    # Vanilla is clearly worse than single-task (positive = worse).
    assert rows["vanilla"]["delta_m"]["mean"] > 10


def test_checks_flag_significant_and_noisy_differences():
    _, _, _, results = _fake_results()
    summary = reproduce_table.aggregate(results, ["single_task", "vanilla", "uncertainty"])
    found = summary["checks"]
    # Paired over seeds. semantic: single - vanilla = 10, 9 -> mean 9.5, stdev 0.707,
    # SE 0.5 -> 2 SE 1.0 < 9.5 (the unpaired SE would be 2 * sqrt(2 / 2 + 4.5 / 2) = 3.6).
    semantic = found["single_vs_vanilla"]["semantic"]
    assert semantic["single_better_by"] == pytest.approx(9.5)
    assert semantic["two_standard_errors"] == pytest.approx(2 * math.sqrt(0.5) / math.sqrt(2))
    assert semantic["significant"]
    # depth (lower is better): vanilla - single = 2, 0 -> mean 1, 2 SE 2 * 1.414 / 1.414 = 2.
    depth = found["single_vs_vanilla"]["depth"]
    assert depth["single_better_by"] == pytest.approx(1.0)
    assert depth["two_standard_errors"] == pytest.approx(2.0)
    assert not depth["significant"]
    assert found["single_better_than_vanilla_on_some_task"]
    assert found["methods_vs_vanilla"]["uncertainty"]["delta_m_minus_vanilla"] < 0
    # Per task, paired: "better" - vanilla on semantic = 81 - 70, 80 - 73 -> mean 9, stdev
    # 2.83, 2 SE 4.0 -> significant; on depth (lower is better) 12 - 11, 12 - 11.5 -> 0.75.
    per_task = found["methods_vs_vanilla"]["uncertainty"]["per_task"]
    assert per_task["semantic"]["better_by"] == pytest.approx(9.0)
    assert per_task["semantic"]["two_standard_errors"] == pytest.approx(4.0)
    assert per_task["semantic"]["significant"]
    assert per_task["depth"]["better_by"] == pytest.approx(0.75)
    assert found["some_method_differs_from_vanilla_on_a_task"]
    assert found["ordering"][-1] == "vanilla"


def test_checks_tell_which_side_is_better():
    _, _, _, results = _fake_results()
    # Swap roles: the "vanilla" rows now beat single-task clearly on semantic and motion.
    swapped = []
    for result in results:
        if result["row"] == "vanilla":
            final = dict(result["final"])
            final["semantic_miou"] += 20.0
            final["motion_miou"] += 20.0
            result = {**result, "final": final}
        swapped.append(result)
    found = reproduce_table.aggregate(swapped, ["single_task", "vanilla"])["checks"]
    semantic = found["single_vs_vanilla"]["semantic"]
    assert semantic["single_better_by"] == pytest.approx(81.0 - 91.5)
    assert semantic["significant"]
    assert not found["single_better_than_vanilla_on_some_task"]
    text = reproduce_table.markdown_checks({"checks": found})
    assert "semantic -10.50" in text and "vanilla better" in text


def test_one_seed_is_never_significant():
    _, _, _, results = _fake_results()
    one_seed = [r for r in results if r["seed"] == 0]
    summary = reproduce_table.aggregate(one_seed, ["single_task", "vanilla", "uncertainty"])
    assert summary["rows"]["vanilla"]["delta_m"]["std"] == 0.0
    assert not summary["checks"]["single_better_than_vanilla_on_some_task"]
    assert not summary["checks"]["some_method_differs_from_vanilla"]


def test_incomplete_single_task_seed_is_left_out():
    _, _, _, results = _fake_results()
    results = [
        r
        for r in results
        if not (r["row"] == "single_task" and r["seed"] == 1 and r["task"] == "motion")
    ]
    summary = reproduce_table.aggregate(results, ["single_task", "vanilla"])
    assert summary["rows"]["single_task"]["seeds"] == [0]
    assert summary["reference_single_task"]["motion_miou"] == pytest.approx(70.0)


def test_plan_is_seed_major_and_single_task_runs_vanilla():
    preset = reproduce_table.PRESETS["tiny"]
    specs = reproduce_table.plan_runs(preset, ["single_task", "pcgrad"], [3, 4], "/data")
    assert [s["name"] for s in specs] == [
        "single_depth_s3",
        "single_semantic_s3",
        "single_motion_s3",
        "pcgrad_s3",
        "single_depth_s4",
        "single_semantic_s4",
        "single_motion_s4",
        "pcgrad_s4",
    ]
    assert specs[0]["overrides"]["single_task"] == "depth"
    assert specs[0]["overrides"]["multi_task_type"] == "vanilla"
    assert specs[3]["overrides"]["multi_task_type"] == "pcgrad"
    assert specs[3]["overrides"]["single_task"] is None
    assert {s["overrides"]["epochs"] for s in specs} == {preset.epochs}
    assert specs[7]["overrides"]["seed"] == 4


def test_markdown_keeps_hand_written_text(tmp_path):
    path = tmp_path / "results.md"
    path.write_text(
        "# Title\n\nintro\n\n"
        + reproduce_table.MARK_BEGIN
        + "\nold table\n"
        + reproduce_table.MARK_END
        + "\n\n## Analysis\nkept\n"
    )
    block = f"{reproduce_table.MARK_BEGIN}\nnew table\n{reproduce_table.MARK_END}"
    reproduce_table.write_markdown(path, block)
    text = path.read_text()
    assert "new table" in text and "old table" not in text
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith("## Analysis\nkept\n")


def test_dataset_with_other_settings_is_refused(tmp_path):
    (tmp_path / "synthetic_dataset.json").write_text(
        json.dumps({"height": 32, "width": 64, "seed": 1, "difficulty": {}, "splits": {}})
    )
    with pytest.raises(UserError, match="--data_path"):
        reproduce_table.ensure_dataset(reproduce_table.PRESETS["tiny"].dataset, tmp_path, 1)


def test_unknown_method_and_bad_budget_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--methods"):
        reproduce_table.main(["--preset", "tiny", "--methods", "nash_mtl", "--dry_run"])
    with pytest.raises(UserError, match="--img_resize"):
        reproduce_table.main(["--preset", "tiny", "--img_resize", "60", "128", "--dry_run"])


@pytest.mark.slow
def test_reproduce_table_tiny_end_to_end(tmp_path, capsys):
    work = tmp_path / "table"
    argv = [
        "--preset", "tiny", "--seeds", "0", "--methods", "vanilla", "uncertainty",
        "--in_process", "--workers", "1", "--work_dir", str(work),
        "--out_md", str(work / "results.md"),
        "--out_json", str(work / "results.json"), "--figure", str(work / "weights.png"),
    ]  # fmt: skip
    assert reproduce_table.main(argv) == 0
    report = json.loads((work / "results.json").read_text())
    assert report["preset"] == "tiny" and report["seeds"] == [0]
    assert {r["name"] for r in report["runs"]} == {"vanilla_s0", "uncertainty_s0"}
    for row in ("vanilla", "uncertainty"):
        entry = report["summary"]["rows"][row]
        for metric in (*METRICS, "train_seconds"):
            assert entry[metric]["n"] == 1 and math.isfinite(entry[metric]["mean"])
        assert 0 <= entry["semantic_miou"]["mean"] <= 100
        assert entry["gmacs_total"] > 0
    for run_result in report["runs"]:
        assert run_result["history_rows"] == reproduce_table.PRESETS["tiny"].epochs
    text = (work / "results.md").read_text()
    assert reproduce_table.MARK_BEGIN in text and "| Vanilla (equal weights) |" in text
    assert (work / "weights.png").stat().st_size > 0

    # Resumable: a second call trains nothing and rewrites the same rows.
    stamp = (work / "runs" / "vanilla_s0" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert reproduce_table.main(argv) == 0
    assert "2 of 2 runs already have results" in capsys.readouterr().out
    assert (work / "runs" / "vanilla_s0" / "result.json").stat().st_mtime_ns == stamp


def test_run_summary_against_hand_computed_figures():
    details = {
        "training_step": {
            "batch_size": 4,
            "results": [
                {"method": "vanilla", "median_step_s": 0.5, "ratio_vs_vanilla": 1.0},
                {"method": "grad_norm", "median_step_s": 0.6, "ratio_vs_vanilla": 1.2},
                {"method": "pcgrad", "median_step_s": 0.9, "ratio_vs_vanilla": 1.8},
            ],
            "variants": [
                {"variant": "stock_fp32", "ratio_vs_stock_fp32": 1.0},
                {"variant": "fused_fp32", "ratio_vs_stock_fp32": 0.66},
                {"variant": "fused_bf16", "ratio_vs_stock_fp32": 0.9},
            ],
        },
        "inference": {
            "latency_ratio": 0.6,
            "latency_ratio_stock": 0.58,
            "forms": {
                "stock_fp32": {"median_ms": 10.0, "ratio_vs_stock_fp32": 1.0},
                "folded_fp32": {"median_ms": 7.0, "ratio_vs_stock_fp32": 0.7},
                "onnx": {"median_ms": 5.0, "ratio_vs_stock_fp32": 0.5},
            },
            "numerics": {
                "onnx": {
                    "reference": "folded_fp32",
                    "depth_relative_error_mean": 1e-6,
                    "depth_relative_error_max": 1e-5,
                    "semantic_agreement_percent": 100.0,
                    "motion_agreement_percent": 99.99,
                }
            },
        },
        "input_pipeline": {
            "results": [{"train": 30.0, "train_pre_resized": 90.0}, {"train": 20.0}]
        },
    }
    summary = run.summarize(details)
    assert summary["step_time_ratio"]["grad_norm"] == pytest.approx(1.2)
    assert summary["step_time_ratio"]["dwa"] is None
    # training: 4 / 0.5 = 8 samples/s; pipeline: the slower source, 20 -> headroom 2.5.
    assert summary["training_samples_per_s"] == pytest.approx(8.0)
    assert summary["pipeline_headroom"] == pytest.approx(2.5)
    assert summary["pipeline_headroom_pre_resized"] == pytest.approx(90.0 / 8.0)
    # Ratios to the stock float32 network, in the same run; the reference itself is left out.
    assert summary["train_step_ratio"] == {"fused_fp32": 0.66, "fused_bf16": 0.9}
    assert summary["inference_ratio"] == {"folded_fp32": 0.7, "onnx": 0.5}
    assert summary["mtl_vs_single_latency_ratio_stock"] == pytest.approx(0.58)
    assert summary["pass"] == {
        "step_time_ratio.grad_norm": False,
        "step_time_ratio.pseudo_grad_norm": None,
        "step_time_ratio.uncertainty": None,
        "step_time_ratio.dwa": None,
        "step_time_ratio.pcgrad": True,
        "step_time_ratio.famo": None,
        "step_time_ratio.aligned_mtl": None,
        "step_time_ratio.aligned_mtl_ub": None,
        "step_time_ratio.imtl_l": None,
        "train_step_ratio.fused_fp32": True,  # 0.66 <= 0.70
        "inference_ratio.folded_fp32": False,  # 0.70 > 0.65
        "mtl_vs_single_latency_ratio": False,  # 0.60 > 0.50
        "pipeline_headroom": True,
    }
    table = run.format_table(summary)
    assert "MISS" in table and "pass" in table and "n/a" in table
    assert "train_step_ratio.fused_bf16" in table and "inference_ratio.onnx" in table
    assert "onnx vs folded_fp32" in table


def test_run_shares_settings_between_benchmarks():
    for mode, settings in run.MODES.items():
        size = [str(v) for v in settings["img_resize"]]
        step = run.benchmark_argv("training_step", mode, "x.json")
        pipeline = run.benchmark_argv("input_pipeline", mode, "x.json")
        for argv in (step, pipeline):
            index = argv.index("--img_resize")
            assert argv[index + 1 : index + 3] == size
            assert argv[argv.index("--batch_size") + 1] == str(settings["batch_size"])
            assert argv[-2:] == ["--json", "x.json"]


@pytest.mark.slow
def test_run_tiny_end_to_end(tmp_path):
    out = tmp_path / "figures.json"
    assert run.main(["--tiny", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["train_step_ratio"]) == {"fused_fp32"}
    assert set(report["inference_ratio"]) == {"folded_fp32"}
    assert report["numerics"]["folded_fp32"]["semantic_agreement_percent"] > 99.0
    assert report["machine"]["load_average_start"] is not None
    assert set(report["step_time_ratio"]) == set(run.STEP_RATIO_GOALS)
    assert report["step_time_ratio"] == dict.fromkeys(run.STEP_RATIO_GOALS)  # vanilla only
    assert report["training_samples_per_s"] > 0 and report["pipeline_samples_per_s"] > 0
    assert report["mtl_vs_single_latency_ratio"] > 0
    assert report["pipeline_headroom"] > 0
    assert report["pipeline_headroom_pre_resized"] > 0
    assert report["errors"] == {}
    assert set(report["details"]) == {"input_pipeline", "inference", "training_step"}
    assert report["pass"]["step_time_ratio.pcgrad"] is None  # not run in the tiny mode
    assert report["pass"]["pipeline_headroom"] is not None


def test_loss_shares_are_weighted_task_losses_of_the_last_epoch(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,loss_depth,loss_semantic,loss_motion,weight_depth,weight_semantic,weight_motion\n"
        "0,9,9,9,1,1,1\n"
        "1,2.0,1.0,1.0,0.5,2.0,1.0\n"
    )
    shares = reproduce_table.loss_shares(history)
    # weighted: 1.0, 2.0, 1.0 of 4.0
    assert shares == pytest.approx({"depth": 0.25, "semantic": 0.5, "motion": 0.25})
    assert reproduce_table.loss_shares(tmp_path / "missing.csv") is None

    _, _, _, results = _fake_results()
    for result in results:
        if result["row"] == "vanilla":
            result["history"] = str(history)
    summary = reproduce_table.aggregate(results, ["single_task", "vanilla", "uncertainty"])
    assert summary["rows"]["vanilla"]["loss_share"]["semantic"]["mean"] == pytest.approx(0.5)
    assert "loss_share" not in summary["rows"]["uncertainty"]  # its history does not exist
    text = reproduce_table.markdown_loss_shares(summary)
    assert "| Vanilla" in text.splitlines()[-1] and "50%" in text


def test_a_result_matches_its_spec_whatever_the_dataset_path_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    # (the options added after the first results, with their values of that time)
    spec = {"overrides": {**reproduce_table.OVERRIDES_BEFORE_OPTIONS, "epochs": 2}}
    spec["overrides"]["data_path"] = str(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stored = {"overrides": {"data_path": "data", "epochs": 2}}  # written with a relative path
    (run_dir / reproduce_table.RESULT_NAME).write_text(json.dumps(stored))
    assert reproduce_table.has_result(run_dir, spec)
    assert not reproduce_table.has_result(
        run_dir, {"overrides": {**spec["overrides"], "epochs": 3}}
    )
    other = {"overrides": {**spec["overrides"], "data_path": str(tmp_path / "elsewhere")}}
    assert not reproduce_table.has_result(run_dir, other)
