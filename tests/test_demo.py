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
                                          ("dvfl-train", "sweep"), ("dvfl-train", "explain")]
    assert not any(s.done for s in steps)
    assert [s.ready for s in steps] == [True] * 5 + [False]  # explain waits for the sweep
    with pytest.raises(SystemExit, match="cannot be planned yet"):
        demo.run_step(steps[-1], dry_run=False)
    assert not any("--resume" in s.argv for s in steps)  # nothing to resume in a fresh folder


def test_default_plan_is_consistent_between_steps(tmp_path):
    """Teacher, cache and students must agree on what they share, or the later steps fail
    (or, worse, silently train on something else)."""
    p = demo.DEFAULT
    synth, fit, ev, build, sweep, explain = (s.argv for s in _plan(tmp_path, tiny=False))
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


def test_finished_steps_are_skipped_and_unfinished_ones_resume(tmp_path):
    out = tmp_path / "d"
    (out / "data").mkdir(parents=True)
    (out / "data" / "synth.json").write_text("{}")
    (out / "teacher").mkdir()
    (out / "teacher" / "config.json").write_text("{}")  # a teacher run killed mid-way
    steps = _plan(out)
    assert [s.done for s in steps] == [True, False, False, False, False, False]
    assert "--resume" in steps[1].argv
    (out / "teacher" / "summary.json").write_text("{}")
    for views in demo.TINY.teacher_eval_views:
        (out / "teacher" / f"eval_{views}.json").write_text("{}")
    (out / "sweep").mkdir()
    steps = _plan(out)
    assert [s.done for s in steps] == [True, True, True, False, False, False]
    assert "--resume" in steps[4].argv
    (out / "sweep" / "results.md").write_text("# x\n")
    assert [s.done for s in _plan(out)] == [True, True, True, False, True, False]


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
    steps = _plan(out)[5:]
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
    assert [s.done for s in _plan(out)[5:]] == [True] + [False] * (len(steps) - 1)


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


def test_default_is_ce_plus_two_kd_settings_over_five_seeds(tmp_path, capsys):
    """Arms were cut, not seeds: 3 settings x 5 seeds, validated once at the end."""
    p = demo.DEFAULT
    assert len(p.alphas) * len(p.taus) == 2
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
    assert printed.count("\n$ ") == 6
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
    assert first.stdout.count("\n$ ") == 5 + 2
    assert "modulator maps (teacher | CE student | best distilled student)" in first.stdout

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done earlier") == 5 + 2 and "\n$ " not in second.stdout
    assert "| 0 (CE) |" in second.stdout
