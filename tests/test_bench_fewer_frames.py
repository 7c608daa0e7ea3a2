"""tools/bench_fewer_frames.py: its verdict rule in closed form, its paper arm's loss weights,
and that --quick runs, records every stage and continues a killed run without redoing it."""

from __future__ import annotations

import json
import math

import pytest
from conftest import load_tool

bench = load_tool("bench_fewer_frames")


def test_paired_interval_closed_form():
    from dvfl_cache.tables import paired_interval

    # differences 1, 2, 3: mean 2, sample std 1, t(0.975, 2) = 4.303
    mean, lo, hi = paired_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    one = paired_interval([1.0], [0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_interval([1.0, 2.0], [1.0])


def _arms(ce, kd, rep, paper):
    return {"ce": ce, "kd": kd, "kd+rep": rep, "paper": paper}


def test_judge_words_follow_the_intervals_alone():
    ce = [0.40, 0.50, 0.45]
    top1 = {
        # kd+rep +0.20, +0.21, +0.19 over CE: interval (0.175, 0.225), gap (0.65-0.45)/(0.9-0.45)
        "4": _arms(ce, [0.30, 0.60, 0.45], [0.60, 0.71, 0.64], [0.50, 0.61, 0.54]),
        # every KD seed below CE by 0.1 +- 0.01: hurts; paper = kd+rep exactly: not shown
        "8": _arms(ce, [0.31, 0.40, 0.34], [0.31, 0.40, 0.34], [0.31, 0.40, 0.34]),
    }
    v = bench.judge(0.9, top1)
    four = v["vs_ce"]["4f kd+rep"]
    assert four["diff"] == pytest.approx(0.2)
    assert four["word"] == "helps" and four["low"] > 0
    assert v["vs_ce"]["4f kd"]["word"] == "not shown"  # -0.1, +0.1, 0: mean 0, wide interval
    assert v["gap_recovered"]["4f kd+rep"] == pytest.approx(0.2 / 0.45)
    assert v["vs_ce"]["8f kd"]["word"] == "hurts"
    assert v["paper_vs_kd+rep"]["4f"]["word"] == "worse"  # 0.1 below on every seed
    assert v["paper_vs_kd+rep"]["8f"]["word"] == "not shown"
    # 44% of the gap although it helps: the claim ("most of the gap") does not hold
    assert v["claim"] == "does not hold"
    # the same seeds 0.1 higher: 67% of the gap, and it helps
    top1["4"]["kd+rep"] = [t + 0.1 for t in top1["4"]["kd+rep"]]
    assert bench.judge(0.9, top1)["claim"] == "holds"
    # most of the gap on the means, but one seed below CE: not shown
    top1["4"]["kd+rep"] = [0.30, 0.95, 0.95]
    assert bench.judge(0.9, top1)["claim"] == "not shown"


def test_paper_arm_is_half_the_papers_unweighted_loss():
    """alpha 0.5 / beta 0.5 with the paper's forms: 0.5 * (CE + MSE(p) + ||P z_s - z_t||^2)."""
    import torch

    from dvfl_train.losses import kd_loss

    paper = bench.arm_losses(bench._parse_args([]))["paper"]
    assert (paper["pred_loss"], paper["rep_loss"], paper["tau"]) == ("mse", "sum", 1.0)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    zs, zt = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    y = torch.tensor([0, 3, 5])
    ce = torch.nn.functional.cross_entropy(s, y)
    mse_p = (s.softmax(1) - t.softmax(1)).pow(2).sum(1).mean()
    rep = (zs - zt).pow(2).sum(1).mean()
    got = kd_loss(s, t, y, paper["alpha"], paper["tau"], beta=paper["beta"],
                  student_features=zs, teacher_features=zt, pred_loss=paper["pred_loss"],
                  rep_loss=paper["rep_loss"])["loss"]
    assert got.item() == pytest.approx(0.5 * (ce + mse_p + rep).item(), rel=1e-6)


def test_quick_runs_and_a_rerun_continues_without_redoing(tmp_path, capsys):
    work, out = tmp_path / "w", tmp_path / "ff.json"
    data = bench.main(["--quick", "--work", str(work), "--json", str(out)])
    printed = capsys.readouterr()
    assert "QUICK CHECK" in printed.out and "claim (4-frame kd+rep" in printed.out
    assert data["status"] == "quick check, not a result"
    assert json.loads(out.read_text())["verdict"] == data["verdict"]
    stages = ["synth", "teacher", "teacher-eval", "cache", "students-2", "eval-2",
              "students-4", "eval-4", "throughput"]
    assert list(data["stages"]) == stages
    rows = [(r["frames"], r["loss"]) for r in data["rows"]]
    assert rows == [(8, "teacher (CE)")] + [(k, a) for k in (2, 4) for a in bench.ARMS]
    assert all(len(r["top1"]) == 2 for r in data["rows"][1:])  # seeds 0 and 1
    # each arm trained with its own loss; the paper's forms are in its students' configs
    cfg = json.loads((work / "s4" / "paper_seed1" / "config.json").read_text())
    assert (cfg["alpha"], cfg["beta"], cfg["tau"], cfg["pred_loss"], cfg["rep_loss"],
            cfg["num_frames"], cfg["seed"]) == (0.5, 0.5, 1.0, "mse", "sum", 4, 1)
    plain = json.loads((work / "s4" / "kd+rep_seed1" / "config.json").read_text())
    assert (plain["pred_loss"], plain["rep_loss"], plain["beta"]) == ("kl", "mean", 1.0)

    # a run killed during the 4-frame evaluation: the rerun redoes that stage and what follows
    progress = json.loads((work / "progress.json").read_text())
    for stage in ("eval-4", "throughput"):
        del progress["stages"][stage]
        del progress["results"][stage]
    (work / "progress.json").write_text(json.dumps(progress))
    weights = (work / "s4" / "ce_seed0" / "last.pt").stat().st_mtime_ns
    again = bench.main(["--quick", "--work", str(work)])
    err = capsys.readouterr().err
    assert "[students-4] done earlier, skipped" in err and "[eval-4] ..." in err
    assert "[teacher] done earlier" in err and "[throughput] ..." in err
    assert (work / "s4" / "ce_seed0" / "last.pt").stat().st_mtime_ns == weights
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in data["rows"]]

    # other arguments on the same folder are refused, with one line naming it
    with pytest.raises(SystemExit, match="other arguments"):
        bench.main(["--quick", "--work", str(work), "--alpha", "0.9"])


def test_a_weak_teacher_stops_the_run_before_any_student(tmp_path):
    work = tmp_path / "w"
    with pytest.raises(SystemExit, match="under --min-teacher-top1 101%; no student"):
        bench.main(["--quick", "--work", str(work), "--min-teacher-top1", "1.01"])
    assert not (work / "teacher.zarr").exists() and not (work / "s2").exists()
    assert "teacher-eval" in json.loads((work / "progress.json").read_text())["stages"]


def test_a_rerun_may_reorder_the_frame_counts_but_not_change_them():
    args = vars(bench._parse_args(["--work", "w"]))
    same = bench._computed({**args, "student_frames": "4,8,2", "json": "other.json"})
    assert same == bench._computed(args)
    assert bench._computed({**args, "student_frames": "2,4"}) != bench._computed(args)
