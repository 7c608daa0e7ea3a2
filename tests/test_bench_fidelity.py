"""tools/bench_fidelity.py: its statistics, the mixed-arm guard, and that --quick runs with a fair
baseline."""

from __future__ import annotations

import json
import math

import pytest
from conftest import load_tool
import torch

bench = load_tool("bench_fidelity")


def test_paired_interval_closed_form():
    # differences 1, 2, 3: mean 2, sample std 1, t(0.975, 2) = 4.303
    mean, lo, hi = bench.paired_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    one = bench.paired_interval([1.0], [0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):
        bench.paired_interval([1.0, 2.0], [1.0])


def test_teacher_options_reach_the_teacher_run():
    default = bench.teacher_settings(bench._parse_args([]))
    assert (default["batch_size"], default["base_lr"], default["epochs"]) == (16, 0.032, 20)
    strong = bench.teacher_settings(bench._parse_args(
        ["--teacher-batch", "8", "--teacher-lr", "0.064", "--teacher-epochs", "24"]))
    assert (strong["batch_size"], strong["base_lr"], strong["epochs"]) == (8, 0.064, 24)
    assert strong["val_every"] == 24 and strong["alpha"] == 0.0


def test_mixed_arms_are_tried_before_they_are_run(tmp_path):
    """The guard tries the student-side mixed replay on a tiny run: today's trainer refuses a
    mixed cache (and FitConfig has no mix_prob), so the mixed arms are skipped with the reason;
    once the replay lands the same call finds nothing wrong."""
    from dvfl_train.config import FitConfig

    reason = bench.mixed_replay_support(tmp_path / "probe")
    if "mix_prob" not in FitConfig.__dataclass_fields__:
        assert reason is not None and "mixed cache" in reason, reason
    else:
        assert reason is None, reason
    assert not (tmp_path / "probe").exists()  # the probe cleans up after itself


def test_rows_pair_each_cached_arm_with_its_online_arm():
    data = {"teacher_top1": 0.9, "arms": {"ce": [0.5, 0.6], "online": [0.8, 0.9],
                                          "cached-2": [0.7, 0.9], "online-mix": [0.6, 0.7],
                                          "cached-2-mix": [0.7, 0.8]},
            "stages": {"train-ce": {"cpu_s": 10}, "train-online": {"cpu_s": 30},
                       "train-cached-2": {"cpu_s": 12}, "cache-2": {"cpu_s": 5},
                       "train-online-mix": {"cpu_s": 31}, "train-cached-2-mix": {"cpu_s": 13},
                       "cache-2-mix": {"cpu_s": 6}}}
    rows = {r["arm"]: r for r in bench.summarise(data, list(data["arms"]), classes=6, seeds=2)}
    assert data["learned_at"] == pytest.approx((1 / 6 + 0.9) / 2)
    assert rows["cached-2"]["cpu_s"] == 17 and rows["cached-2-mix"]["cpu_s"] == 19
    assert rows["cached-2"]["minus_online"][0] == pytest.approx(-0.05)
    assert rows["cached-2-mix"]["minus_online"][0] == pytest.approx(0.1)  # vs online-mix
    assert rows["ce"]["learned"] == 0.5 and "minus_online" not in rows["ce"]


@pytest.mark.slow
def test_quick_runs_and_cached_every_epoch_equals_online(tmp_path, capsys):
    result = bench.main(["--quick", "--work", str(tmp_path), "--keep"])
    assert [r["arm"] for r in result["rows"]] == ["ce", "online", "cached-1", "cached-4"]
    assert "QUICK CHECK" in capsys.readouterr().out

    def weights(arm):
        return torch.load(tmp_path / arm / "seed0" / "last.pt", weights_only=True)["model"]

    def gap(a, b):
        return max((a[k].float() - b[k].float()).abs().max().item() for k in a)

    online = weights("online")
    # a cache of one view per epoch replays exactly the online arm's views: same student
    assert gap(online, weights("cached-4")) < 1e-5
    assert gap(online, weights("cached-1")) > 1e-4  # fewer views do change the student
    assert gap(online, weights("ce")) > 1e-4


@pytest.mark.parametrize("mixed", [False, True])
def test_plot_draws_one_panel_per_kind_of_arm(tmp_path, mixed):
    import matplotlib.image

    def row(arm, mean):
        return {"arm": arm, "mean": mean, "std": 0.05, "cpu_s": 10.0 + mean}

    rows = [row("ce", 0.3), row("online", 0.6), row("cached-1", 0.55), row("cached-4", 0.62)]
    if mixed:
        rows += [row("online-mix", 0.4), row("cached-1-mix", 0.5)]
    bench._plot(rows, [1, 4], str(tmp_path / "f"))
    height, width = matplotlib.image.imread(tmp_path / "f_vs_views.png").shape[:2]
    assert width / height == pytest.approx((2 if mixed else 1) * 5 / 3.5, rel=0.05)
    assert (tmp_path / "f_vs_cpu.png").stat().st_size > 0


def test_bands_stop_at_100_and_plain_and_mixed_differ_in_colour():
    assert bench.clipped_band(0.874, 0.179) == pytest.approx((69.5, 100.0))
    assert bench.clipped_band(0.10, 0.20) == pytest.approx((0.0, 30.0))
    assert bench.clipped_band(0.5, 0.1) == pytest.approx((40.0, 60.0))
    plain, mixed = bench.KIND_COLOURS[""], bench.KIND_COLOURS["-mix"]
    assert not set(plain) & set(mixed)


def test_replot_from_a_published_result_file(tmp_path):
    """The docs' plots are redrawn from benchmarks/results/ (the runs' own JSON was not kept)."""
    from pathlib import Path

    result = (Path(__file__).resolve().parents[1] / "benchmarks" / "results"
              / "fidelity-long-2026-12-07.json")
    rows, views = bench.rows_from_record(json.loads(result.read_text()))
    by_arm = {r["arm"]: r for r in rows}
    assert views == [1, 2, 4, 8, 64]
    assert by_arm["online"]["mean"] == pytest.approx(0.874, abs=5e-4)  # the table's 87.4
    assert by_arm["online"]["std"] == pytest.approx(0.179, abs=5e-4)
    assert by_arm["cached-64-mix"]["cpu_s"] == 262 + 207
    bench.main(["--replot", str(result), "--plot", str(tmp_path / "f")])
    assert (tmp_path / "f_vs_views.png").stat().st_size > 0
