"""tools/demo.py: the commands it plans, that it skips finished steps, and one tiny real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_tool

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tools" / "demo.py"


demo = load_tool("demo")


def _plan(out: Path, *, tiny: bool = True, seeds=(0, 1)):
    return demo.Demo(out, demo.TINY if tiny else demo.DEFAULT, tuple(seeds)).steps()


def _opt(argv, flag):
    """Every value of a repeatable flag in argv."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_plan_runs_the_cli_steps_in_order(tmp_path):
    steps = _plan(tmp_path / "d")
    assert [s.argv[:2] for s in steps] == [("dvfl-cache", "synth"), ("dvfl-train", "fit"),
                                          ("dvfl-train", "eval"), ("dvfl-cache", "build"),
                                          ("dvfl-train", "sweep"), ("dvfl-train", "fit"),
                                          ("dvfl-train", "fit"), ("dvfl-train", "explain")]
    assert not any(s.done for s in steps)
    assert [s.ready for s in steps] == [True] * 7 + [False]  # explain waits for the sweep
    with pytest.raises(SystemExit, match="cannot be planned yet"):
        demo.run_step(steps[-1], dry_run=False)
    assert not any("--resume" in s.argv for s in steps)  # nothing to resume in a fresh folder


def test_default_plan_is_consistent_between_steps(tmp_path):
    """Teacher, cache and students must agree on what they share, or the later steps fail
    (or, worse, silently train on something else)."""
    p = demo.DEFAULT
    synth, fit, ev, build, sweep, online1, online3, explain = (
        s.argv for s in _plan(tmp_path, tiny=False))
    assert _opt(fit, "--alpha") == ["0"]  # the teacher is trained with cross-entropy alone
    assert _opt(fit, "--frames") == _opt(build, "--frames") == [str(p.teacher_frames)]
    assert _opt(fit, "--size") == _opt(build, "--size") == [str(p.teacher_size)]
    assert _opt(build, "--teacher") == _opt(ev, "--checkpoint") == [
        str(tmp_path / "teacher" / "best.pt")]
    assert _opt(sweep, "--cache") == _opt(build, "--out")
    assert _opt(explain, "--checkpoint")[0] == _opt(ev, "--checkpoint")[0]
    assert all(c.startswith(_opt(sweep, "--out")[0]) for c in _opt(explain, "--checkpoint")[1:])
    assert int(_opt(sweep, "--frames")[0]) <= p.teacher_frames  # students replay cached views
    assert _opt(sweep, "--seeds") == ["0,1"]
    assert _opt(ev, "--views") == list(p.teacher_eval_views)
    assert _opt(sweep, "--eval-views") == [",".join(p.eval_views)]
    # Flips swap PanLeft/PanRight and the rotations: off in training, the cache and the sweep.
    assert "flip=0" in _opt(fit, "--sampler-opt") and "flip=0" in _opt(sweep, "--sampler-opt")
    assert _opt(build, "--flip") == ["0"]
    # The cached views and the fresh/validation views use the same temporal sampler.
    assert f"temporal={p.temporal}" in _opt(fit, "--sampler-opt")
    assert _opt(build, "--sampler") == [p.temporal]
    assert _opt(synth, "--classes") == [str(p.classes)]
    # The teacher's own training views and the cached ones crop alike; one optimizer throughout.
    lo, hi = _opt(build, "--area")[0].split(",")
    area = f"area=[{lo},{hi}]"
    assert area in _opt(fit, "--sampler-opt") and area in _opt(sweep, "--sampler-opt")
    assert _opt(fit, "--optimizer") == _opt(sweep, "--optimizer") == [p.optimizer]
    assert _opt(sweep, "--alphas") == [",".join(f"{a:g}" for a in p.alphas)]
    assert _opt(sweep, "--taus") == [",".join(f"{t:g}" for t in p.taus)]
    assert _opt(fit, "--batch-size") == [str(p.teacher_batch)]
    # The online runs are the sweep's first distilled student with the teacher in the loop:
    # the same student, views and optimizer, the teacher's checkpoint instead of the cache.
    for k, online in zip(p.online_epochs, (online1, online3)):
        assert _opt(online, "--teacher-weights") == _opt(build, "--teacher")
        assert "--cache" not in online and _opt(online, "--epochs") == [str(k)]
        assert _opt(online, "--alpha") == [f"{p.alphas[0]:g}"]
        assert _opt(online, "--tau") == [f"{p.taus[0]:g}"]
        for flag in ("--model", "--model-opt", "--frames", "--size", "--sampler-opt",
                     "--test-span", "--lr", "--optimizer", "--weight-decay", "--batch-size",
                     "--workers", "--dataset", "--root"):
            assert _opt(online, flag) == _opt(sweep, flag), flag
        assert _opt(online, "--out") == [str(tmp_path / "online" / f"epochs_{k}")]


def test_finished_steps_are_skipped_and_unfinished_ones_resume(tmp_path):
    out = tmp_path / "d"
    (out / "data").mkdir(parents=True)
    (out / "data" / "synth.json").write_text("{}")
    (out / "teacher").mkdir()
    (out / "teacher" / "config.json").write_text("{}")  # a teacher run killed mid-way
    steps = _plan(out)
    assert [s.done for s in steps] == [True] + [False] * 7
    assert "--resume" in steps[1].argv
    (out / "teacher" / "summary.json").write_text("{}")
    for views in demo.TINY.teacher_eval_views:
        (out / "teacher" / f"eval_{views}.json").write_text("{}")
    (out / "sweep").mkdir()
    steps = _plan(out)
    assert [s.done for s in steps] == [True, True, True, False, False, False, False, False]
    assert "--resume" in steps[4].argv
    (out / "sweep" / "results.md").write_text("# x\n")
    (out / "online" / "epochs_1").mkdir(parents=True)
    steps = _plan(out)
    assert [s.done for s in steps] == [True, True, True, False, True, False, False, False]
    assert "--resume" in steps[5].argv and "--resume" not in steps[6].argv
    (out / "online" / "epochs_1" / "summary.json").write_text("{}")
    assert [s.done for s in _plan(out)][5:7] == [True, False]


def test_explain_steps_show_teacher_ce_and_best_distilled_per_class(tmp_path, synth_root):
    """Once the data and the sweep exist: one explain per class on its first test video, the
    teacher beside the best distilled run (1-view top-1) and the CE run of the same seed."""
    out = tmp_path / "d"
    out.mkdir()
    (out / "data").symlink_to(synth_root)
    (out / "sweep").mkdir()
    (out / "sweep" / "results.csv").write_text(
        "name,alpha,tau,seed,top1_1view,top5_1view\n"
        "ce_s0,0.0,,0,0.5,1.0\nce_s1,0.0,,1,0.6,1.0\n"
        "a0.5_t2_s0,0.5,2.0,0,0.7,1.0\na0.5_t2_s1,0.5,2.0,1,0.8,1.0\n"
        "a0.9_t2_s0,0.9,2.0,0,0.8,1.0\n")
    steps = _plan(out)[7:]
    from dvfl_cache.data.readers import build_index

    index = build_index("ucf101", synth_root, split=1, subset="test")
    assert [s.name for s in steps] == [f"modulator maps: {c}" for c in index.classes]
    for label, step in enumerate(steps):
        first = next(i for i, v in enumerate(index.videos) if v.label == label)
        assert step.argv[:3] == ("dvfl-train", "explain", index.abspath(first))
        assert _opt(step.argv, "--checkpoint") == [
            str(out / "teacher" / "best.pt"), str(out / "sweep" / "runs" / "ce_s1" / "best.pt"),
            str(out / "sweep" / "runs" / "a0.5_t2_s1" / "best.pt")]  # the first of the two 0.8s
        assert _opt(step.argv, "--out") == [str(out / "explain" / index.classes[label])]
        assert step.ready and not step.done
    (out / "explain" / index.classes[0]).mkdir(parents=True)
    (out / "explain" / index.classes[0] / "explain.json").write_text("{}")
    assert [s.done for s in _plan(out)[7:]] == [True] + [False] * (len(steps) - 1)


def test_explain_needs_a_distilled_run_and_its_seeds_ce_run(tmp_path):
    results = tmp_path / "results.csv"
    results.write_text("name,alpha,tau,seed,top1_1view\nce_s0,0.0,,0,0.5\n")
    with pytest.raises(SystemExit, match="no distilled run"):
        demo._ce_and_best(results)
    results.write_text("name,alpha,tau,seed,top1_1view\nce_s0,0.0,,0,0.5\na1_t2_s1,1.0,2.0,1,0.9\n")
    with pytest.raises(SystemExit, match="no CE run of seed 1"):
        demo._ce_and_best(results)


def test_half_written_cache_is_not_complete(tmp_path):
    (tmp_path / "cache.zarr").mkdir()
    assert not demo._cache_complete(tmp_path / "cache.zarr")
    assert not demo._cache_complete(tmp_path / "missing.zarr")


def test_summary_section_extraction():
    md = "# R\n\n## Mean ± std over seeds\n\n| a |\n|---|\n| 1 |\n\nnote\n\n## Runs\n\n| b |\n"
    assert demo._section(md, "Mean ± std over seeds") == "| a |\n|---|\n| 1 |\n\nnote"
    assert demo._section(md, "Plots") == ""


def test_default_is_ce_plus_one_kd_setting_over_five_seeds(tmp_path, capsys):
    """The strong-teacher, 64-epoch setting of bench_fidelity; arms were cut, not seeds: CE and
    one KD setting x 5 seeds, validated once at the end."""
    p = demo.DEFAULT
    assert len(p.alphas) * len(p.taus) == 1
    assert (p.teacher_batch, p.teacher_lr, p.teacher_epochs) == (8, 0.064, 24)
    assert p.student_epochs == p.val_every == 64
    demo.main(["--out", str(tmp_path / "d"), "--dry-run"])
    printed = capsys.readouterr().out
    sweep = next(line for line in printed.splitlines() if line.startswith("$ dvfl-train sweep"))
    assert "--seeds 0,1,2,3,4" in sweep and f"--val-every {p.student_epochs}" in sweep


def _rows(ce, kd, tau="2.0"):
    rows = [{"name": f"ce_s{s}", "alpha": "0.0", "tau": "", "seed": str(s), "top1_1view": str(t)}
            for s, t in enumerate(ce)]
    rows += [{"name": f"a0.9_t2_s{s}", "alpha": "0.9", "tau": tau, "seed": str(s),
              "top1_1view": str(t)} for s, t in enumerate(kd)]
    return rows


def test_conclusion_is_computed_from_the_seed_distribution():
    # teacher 0.9, 6 classes: a seed learns at (1/6 + 0.9) / 2 = 53.3%
    lines = demo.conclusion(_rows([0.5, 0.55, 0.6, 0.52, 0.58], [0.8, 0.85, 0.82, 0.9, 0.88]),
                            teacher_top1=0.9, classes=6)
    assert "learns the task at >= 53.3%" in lines[0]
    assert lines[1] == "  CE: 55.0 ± 4.1 over 5 seeds, 3/5 learn"
    # differences 30, 30, 22, 38, 30: mean 30, std sqrt(32) = 5.657; t(4) 2.776 -> +-7.0
    assert lines[2] == ("  alpha 0.9, tau 2: 85.0 ± 4.1 over 5 seeds, 5/5 learn; minus CE "
                        "(same seed) +30.0 points, 95% interval (+23.0, +37.0): helped")
    assert lines[3].startswith("  verdict: distillation from the cache helped (alpha 0.9, tau 2)")
    # seeds that overlap: the same means cannot carry the claim
    lines = demo.conclusion(_rows([0.5, 0.9, 0.4, 0.85, 0.45], [0.9, 0.5, 0.85, 0.45, 0.8]),
                            teacher_top1=0.9, classes=6)
    assert lines[2].endswith(": unclear")
    assert "did not clearly help" in lines[3]
    lines = demo.conclusion(_rows([0.5], [0.8]), teacher_top1=0.9, classes=6)
    assert lines[-1] == "  no KD setting has at least 2 seeds paired with CE: no verdict"


def test_bad_seeds_are_refused(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--seeds", "a,b", "--dry-run"])
    assert "--seeds" in capsys.readouterr().err


def test_dry_run_prints_commands_and_runs_nothing(tmp_path, capsys):
    demo.main(["--tiny", "--out", str(tmp_path / "d"), "--dry-run"])
    printed = capsys.readouterr().out
    assert printed.count("\n$ ") == 8
    assert printed.count("$ dvfl-train fit") == 3  # the teacher, then two online students
    assert "$ dvfl-cache synth --out" in printed and "$ dvfl-train sweep" in printed
    assert "$ dvfl-train explain '<first test video of each class>'" in printed
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_tiny_demo_runs_every_step_then_skips_them(tmp_path):
    """The whole demo on 8 tiny videos (about 30 CPU-s, a minute or two of wall time on a busy
    2-core machine), then a second run that finds every step done."""
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(DEMO), "--tiny", "--out", str(out), "--seeds", "0,1"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for path in ("data/synth.json", "teacher/best.pt", "teacher/summary.json",
                 "teacher/eval_1.json", "teacher/eval_2x3.json", "sweep/results.md",
                 "sweep/results.csv"):
        assert (out / path).is_file(), path
    for cls in ("PanLeft", "PanRight"):  # the two classes of the tiny set
        for name in ("modulators.png", "top5.png", "modulators.mp4", "explain.json"):
            assert (out / "explain" / cls / name).is_file(), (cls, name)
    record = json.loads((out / "explain" / "PanLeft" / "explain.json").read_text())
    assert [c["label"] for c in record["columns"]][0] == "teacher"
    assert record["columns"][1]["label"].startswith("ce_s")
    assert record["columns"][2]["label"].startswith("a0.5_t2_s")
    from dvfl_cache.cache.store import CacheReader

    assert CacheReader(str(out / "cache.zarr")).complete
    # Every run of the grid is in results.csv: CE baseline and one KD point, two seeds each.
    rows = (out / "sweep" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    teacher = json.loads((out / "teacher" / "eval_1.json").read_text())
    assert f"{100 * teacher['top1']:.2f}%" in first.stdout
    assert "| 0 (CE) |" in first.stdout and "report: " in first.stdout
    # the conclusion is computed from the runs: CE and the one KD setting, 2 seeds each
    assert "conclusion (1-view test top-1 over seeds" in first.stdout
    assert "  CE: " in first.stdout and "  alpha 0.5, tau 2: " in first.stdout
    assert "over 2 seeds" in first.stdout and "  verdict: " in first.stdout
    assert first.stdout.count("\n$ ") == 7 + 2
    assert "modulator maps (teacher | CE student | best distilled student)" in first.stdout
    # what the cache saved, and summary.json with the same numbers
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "tiny" and summary["seeds"] == [0, 1]
    assert set(summary["kd_minus_ce"]) >= {"mean", "lo", "hi"}
    assert summary["seeds_learning"]["seeds"] == 2
    for key in ("sweep_cpu_s", "build_cpu_s", "wall_s", "this_run_wall_s"):
        assert summary[key] > 0, key
    assert summary["steps"]["alpha/tau sweep"]["cpu_s"] == summary["sweep_cpu_s"]
    proj = summary["online_projection"]
    assert proj["measured_epochs"] == [1, 2]
    assert (summary["online_cpu_s_projected"] is None) == ("note" in proj)
    assert f"sweep from the cache {summary['sweep_cpu_s']:.0f} CPU-s" in first.stdout
    assert summary["conditions"]["cores"] >= 1 and summary["conditions"]["load_after"]

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done earlier") == 7 + 2 and "\n$ " not in second.stdout
    assert "| 0 (CE) |" in second.stdout
    # the timings of the first session are still reported
    again = json.loads((out / "summary.json").read_text())
    assert again["sweep_cpu_s"] == summary["sweep_cpu_s"]


def _demo_with(tmp_path, timings: dict) -> "demo.Demo":
    d = demo.Demo(tmp_path, demo.DEFAULT, (0, 1, 2, 3, 4))
    tmp_path.mkdir(exist_ok=True)
    for name, t in timings.items():
        demo.save_timing(d, name, t)
    return d


def test_time_saved_projects_one_online_student_to_the_grid(tmp_path):
    d = _demo_with(tmp_path, {
        "teacher cache": {"wall_s": 10.0, "cpu_s": 12.0},
        "alpha/tau sweep": {"wall_s": 200.0, "cpu_s": 250.0},
        "online KD, 1 epoch(s)": {"wall_s": 9.0, "cpu_s": 10.0},
        "online KD, 3 epoch(s)": {"wall_s": 20.0, "cpu_s": 22.0}})
    t = demo.time_saved(d, demo.load_timings(d))
    # 6 CPU-s an epoch, 4 fixed; 64 epochs: 388 a student; 5 distilled students
    assert t["online_projection"]["per_epoch_cpu_s"] == pytest.approx(6.0)
    assert t["online_projection"]["fixed_cpu_s"] == pytest.approx(4.0)
    assert t["online_cpu_s_projected"] == pytest.approx(5 * (4 + 64 * 6))
    assert t["online_over_cache"] == pytest.approx(1940 / 262)
    assert (t["sweep_students"], t["distilled_students"]) == (10, 5)
    lines = demo.time_lines(t)
    assert "1940 CPU-s, a PROJECTION" in lines[1] and "7.40x" in lines[2]


def test_time_saved_makes_no_projection_from_noise(tmp_path):
    d = _demo_with(tmp_path, {
        "teacher cache": {"wall_s": 1.0, "cpu_s": 1.0},
        "alpha/tau sweep": {"wall_s": 2.0, "cpu_s": 2.0},
        "online KD, 1 epoch(s)": {"wall_s": 3.0, "cpu_s": 3.0},
        "online KD, 3 epoch(s)": {"wall_s": 2.5, "cpu_s": 2.9}})
    t = demo.time_saved(d, demo.load_timings(d))
    assert t["online_cpu_s_projected"] is None and "no projection" in t["online_projection"]["note"]
    assert "not projected" in demo.time_lines(t)[1]
    empty = demo.time_saved(d, {})
    assert demo.time_lines(empty)[0].startswith("time saved: not known")


def test_summary_record_has_the_paired_interval_and_the_costs(tmp_path):
    d = _demo_with(tmp_path, {"teacher cache": {"wall_s": 10.0, "cpu_s": 12.0},
                              "alpha/tau sweep": {"wall_s": 200.0, "cpu_s": 250.0}})
    (tmp_path / "sweep").mkdir()
    rows = _rows([0.5, 0.55, 0.6, 0.52, 0.58], [0.8, 0.85, 0.82, 0.9, 0.88], tau="1.0")
    with open(tmp_path / "sweep" / "results.csv", "w", newline="") as fh:
        import csv

        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "eval_1.json").write_text(json.dumps({"top1": 0.9, "top5": 1.0}))
    r = demo.summary_record(d, wall_s=5.0, conditions={"cores": 2})
    assert r["kd_minus_ce"]["mean"] == pytest.approx(30.0)
    assert (r["kd_minus_ce"]["lo"], r["kd_minus_ce"]["hi"]) == pytest.approx((23.0, 37.0), abs=0.05)
    assert r["kd_minus_ce"]["setting"] == "alpha 0.9, tau 1"
    assert r["seeds_learning"] == {"distilled": 5, "ce": 3, "seeds": 5}
    assert r["verdict"].startswith("distillation from the cache helped")
    assert (r["sweep_cpu_s"], r["build_cpu_s"], r["wall_s"]) == (250.0, 12.0, 210.0)
    assert r["online_cpu_s_projected"] is None and r["this_run_wall_s"] == 5.0
    json.dumps(r)
    # published as it is, tools/report.py draws its table and summary line
    assert r["kind"] == "demo" and [row["minus_ce"] for row in r["rows"]] == ["-", "+30.0 (+23.0, +37.0)"]
    assert r["headline"][0]["result"].startswith("KD - CE +30.0 points (+23.0, +37.0); 5/5")
