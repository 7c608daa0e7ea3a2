"""Alpha/tau sweeps: the grid, results tables, per-student resume, equality with `fit`, plots."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}
CLI_TINY = ["--frames", "2", "--size", "32", "--model-opt", "embed_dim=8",
            "--model-opt", "depths=[1,1,1,1]", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "4", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def cache(synth_index, tmp_path_factory) -> Path:
    """One view per training video, 2 frames at 32 px, from a random tiny teacher."""
    from dvfl_cache.cache.build import BuildConfig, build_cache

    out = tmp_path_factory.mktemp("sweep_cache") / "c.zarr"
    build_cache(BuildConfig(out=str(out), teacher="vfl-nano", random_weights=True,
                            teacher_opts={**TINY, "img_size": 32}, frames=2, size=32,
                            dtype="float32", workers=0, device="cpu"), synth_index)
    return out


def _sweep_cfg(root: Path, cache: Path, out: Path, points, **kw):
    from dvfl_train.config import FitConfig
    from dvfl_train.sweep import SweepConfig

    base = FitConfig(dataset="ucf101", data_root=str(root), out_dir=str(out), num_frames=2,
                     size=32, model_opts=TINY, cache=str(cache), epochs=1, warmup_epochs=0,
                     batch_size=4, workers=0, device="cpu")
    return SweepConfig(base=base, points=tuple(points), **kw)


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def _assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- the grid (no training) ---------------------------------------------------------------------

def test_grid_has_one_baseline_per_seed_then_alpha_tau_seed():
    from dvfl_train.sweep import GridPoint, expand_grid, group_points

    grid = expand_grid([0.3, 0.7], [5, 10], [0, 1])
    assert [p.name for p in grid] == [
        "ce_s0", "ce_s1", "a0.3_t5_s0", "a0.3_t5_s1", "a0.3_t10_s0", "a0.3_t10_s1",
        "a0.7_t5_s0", "a0.7_t5_s1", "a0.7_t10_s0", "a0.7_t10_s1"]
    assert grid[0] == GridPoint(0.0, None, 0) and grid[0].baseline and not grid[2].baseline
    assert len(expand_grid([0.3, 0.5, 0.7], [5, 10, 15], [0])) == 9 + 1
    assert [p.name for p in expand_grid([0.5], [4], [3], baseline=False)] == ["a0.5_t4_s3"]
    # alpha 0 is the baseline itself: one per seed whatever the taus, duplicates collapse
    assert [p.name for p in expand_grid([0, 0.5, 0.5], [2, 4, 2], [1], baseline=False)] == [
        "ce_s1", "a0.5_t2_s1", "a0.5_t4_s1"]
    for bad in (dict(alphas=[1.5]), dict(taus=[0]), dict(seeds=[]), dict(seeds=[-1])):
        args = {"alphas": [0.5], "taus": [2], "seeds": [0], **bad}
        with pytest.raises(ValueError):
            expand_grid(args["alphas"], args["taus"], args["seeds"])
    with pytest.raises(ValueError, match="empty"):
        expand_grid([], [2], [0], baseline=False)

    assert [len(g) for g in group_points(grid, None)] == [10]
    assert [len(g) for g in group_points(grid, 4)] == [4, 4, 2]
    assert [p for g in group_points(grid, 3) for p in g] == grid


def test_sweep_grid_options_come_from_the_grid_fields_and_bad_lists_are_one_line():
    from dvfl_train.cli import main
    from dvfl_train.commands.sweep import sweep_cmd
    from dvfl_train.config import FitConfig
    from dvfl_train.sweep_plan import SweepGrid

    opts = {p.name: p for p in sweep_cmd.params}
    for f in dataclasses.fields(SweepGrid):  # one option per field, its default the field's
        assert opts[f.name].default == f.default, f.name
    base = FitConfig(dataset="ucf101", data_root="r", out_dir="o", seed=9)
    grid = SweepGrid(alphas=(0.5,), taus=(2.0, 4.0), seeds=(3,), baseline=False)
    assert [p.name for p in grid.sweep(base).points] == ["a0.5_t2_s3", "a0.5_t4_s3"]
    assert [p.name for p in SweepGrid(alphas=(0.0,)).sweep(base).points] == [
        "ce_s9"]  # no --seeds: the data seed
    for args, message in ((["--alphas", "0.5,x"], "expected comma-separated numbers"),
                          (["--alphas", "1.5"], "1.5 is outside [0.0, 1.0]"),
                          (["--taus", "0"], "0 is outside (0.0"),
                          (["--seeds", "1,-2"], "-2 is outside [0"),
                          (["--seeds", ","], "one or more"),
                          (["--eval-views", "1,zz"], "expected 1 or NxC"),
                          (["--parallel", "0"], "--parallel")):
        res = CliRunner().invoke(main, ["sweep", "--out", "x", *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert "Traceback" not in res.output


def test_aggregate_is_mean_and_sample_std_over_seeds():
    from dvfl_train.sweep_report import RunResult, aggregate

    def row(alpha, tau, seed, top1):
        return RunResult(name=f"{alpha}_{tau}_{seed}", alpha=alpha, tau=tau, seed=seed, epochs=1,
                         best_val_top1=None, best_epoch=None, train_wall_s=1.0, eval_s=0.5,
                         acc={"1": (top1, 1.0)})

    rows = [row(0.0, None, 0, 0.2), row(0.0, None, 1, 0.4), row(0.5, 2.0, 0, 0.5),
            row(0.5, 2.0, 1, 0.7), row(0.5, 2.0, 2, 0.9), row(0.5, 4.0, 0, 0.6)]
    agg = aggregate(rows)
    assert [(a.alpha, a.tau, a.seeds) for a in agg] == [
        (0.0, None, (0, 1)), (0.5, 2.0, (0, 1, 2)), (0.5, 4.0, (0,))]
    assert agg[0].mean["1"][0] == pytest.approx(0.3)
    assert agg[0].std["1"][0] == pytest.approx(math.sqrt(0.02))  # (0.1^2 + 0.1^2) / (2 - 1)
    assert agg[1].mean["1"][0] == pytest.approx(0.7) and agg[1].std["1"][0] == pytest.approx(0.2)
    assert agg[1].std["1"][1] == pytest.approx(0.0)
    assert agg[2].std["1"] == (None, None)  # one seed: no spread to report
    assert rows[0].wall_s == 1.5


def _fake_rows():
    from dvfl_train.sweep_report import RunResult

    return [RunResult(name=f"r{i}", alpha=a, tau=t, seed=s, epochs=2, best_val_top1=0.5,
                      best_epoch=2, train_wall_s=3.0, eval_s=1.0,
                      acc={"1": (0.1 * (i % 5), 0.9), "4x3": (0.1 * (i % 4), 1.0)},
                      curve=((1, 0.25), (2, 0.5)))
            for i, (a, t, s) in enumerate([(0.0, None, 0), (0.0, None, 1), (0.3, 5.0, 0),
                                           (0.3, 5.0, 1), (0.7, 5.0, 0), (0.7, 10.0, 0)])]


def test_plots_are_pngs_and_missing_matplotlib_only_warns(tmp_path, monkeypatch, caplog):
    from dvfl_train.sweep_report import plot_curves, plot_grid

    pytest.importorskip("matplotlib")
    written = plot_grid(_fake_rows(), tmp_path, layouts=["1", "4x3"])
    written += plot_curves(_fake_rows(), tmp_path / "curves.png")
    assert [p.name for p in written] == ["top1_vs_alpha.png", "top1_vs_tau.png", "curves.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000

    # Without matplotlib: a warning naming the extra, no files, no failure.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with caplog.at_level(logging.WARNING, logger="dvfl_train.sweep_report"):
        assert plot_grid(_fake_rows(), tmp_path / "none", layouts=["1"]) == []
        assert plot_curves(_fake_rows(), tmp_path / "none.png") == []
    assert 'pip install "dvfl[plot]"' in caplog.text
    assert not (tmp_path / "none.png").exists()

    # The tables are still written, and the warning comes once, not once per plot.
    from dvfl_train.sweep import GridPoint
    from dvfl_train.sweep_report import write_results

    caplog.clear()
    cfg = _sweep_cfg(tmp_path, tmp_path / "c.zarr", tmp_path / "sw", [GridPoint(0.0, None, 0)])
    cfg.out_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="dvfl_train.sweep_report"):
        written = write_results(cfg, _fake_rows())
    assert [p.name for p in written] == ["results.csv", "results.md"]
    assert caplog.text.count("dvfl[plot]") == 1
    md = (cfg.out_dir / "results.md").read_text()
    assert "## Plots" not in md and "| 0.3 | 5 | 2 | 25.00 ± 7.07 |" in md


# -- sweeps (tiny training) ---------------------------------------------------------------------

def test_cli_sweep_writes_tables_and_plots_and_equals_fit(synth_root, cache, tmp_path):
    from dvfl_cache.cache.inspect import teacher_accuracy
    from dvfl_cache.cache.store import CacheReader
    from dvfl_train.cli import main

    out = tmp_path / "sweep"
    data = ["--dataset", "ucf101", "--root", str(synth_root), "--cache", str(cache), *CLI_TINY]
    args = ["sweep", *data, "--alphas", "0.5", "--taus", "2,4", "--seeds", "0",
            "--eval-views", "1,4x3", "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "group 1/1: 3 student(s) side by side: ce_s0, a0.5_t2_s0, a0.5_t4_s0" in result.output

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["name", "alpha", "tau", "seed", "top1_1view", "top5_1view",
                             "top1_4x3", "top5_4x3", "best_val_top1", "best_epoch", "epochs",
                             "train_wall_s", "eval_s", "wall_s"]
    assert [(r["name"], r["alpha"], r["tau"], r["seed"]) for r in rows] == [
        ("ce_s0", "0.0", "", "0"), ("a0.5_t2_s0", "0.5", "2.0", "0"),
        ("a0.5_t4_s0", "0.5", "4.0", "0")]
    for r in rows:
        run = out / "runs" / r["name"]
        for views, col in (("1", "1view"), ("4x3", "4x3")):
            ev = json.loads((run / f"eval_{views}.json").read_text())
            assert float(r[f"top1_{col}"]) == ev["top1"] and float(r[f"top5_{col}"]) == ev["top5"]
            assert ev["num_videos"] == 8 and ev["dataset"]["subset"] == "test"
            assert ev["eval_shared_by"] == 3  # one test pass per layout for the 3 students
        eval_s = sum(json.loads((run / f"eval_{v}.json").read_text())["eval_time_s"]
                     for v in ("1", "4x3"))
        assert float(r["eval_s"]) == pytest.approx(eval_s)
        assert float(r["wall_s"]) == pytest.approx(float(r["train_wall_s"]) + eval_s)
        assert r["epochs"] == "1" and r["best_epoch"] == "1"
    # the group trained together: one shared training wall time
    assert len({r["train_wall_s"] for r in rows}) == 1 and float(rows[0]["train_wall_s"]) > 0

    md = (out / "results.md").read_text()
    teacher = teacher_accuracy(CacheReader(cache))
    assert "| 0 (CE) | – | 1 |" in md and "| 0.5 | 2 | 1 |" in md and "| 0.5 | 4 | 1 |" in md
    assert f"| teacher vfl-nano † | – | – | {100 * teacher['teacher_top1']:.2f} |" in md
    assert "own cached training views" in md and "group's training wall time" in md
    for png in ("top1_vs_alpha.png", "top1_vs_tau.png", "curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in md

    # The KD student equals the same student trained alone with `fit`, bit for bit.
    solo = tmp_path / "solo"
    fitted = CliRunner().invoke(main, ["fit", *data, "--alpha", "0.5", "--tau", "2",
                                       "--seed", "0", "--out", str(solo)],
                                catch_exceptions=False)
    assert fitted.exit_code == 0, fitted.output
    swept = out / "runs" / "a0.5_t2_s0"
    _assert_equal_weights(_model(swept / "last.pt"), _model(solo / "last.pt"))
    _assert_equal_weights(_model(swept / "best.pt"), _model(solo / "best.pt"))
    # ...and differs from its neighbour at another tau, so the equality is not vacuous
    other = _model(out / "runs" / "a0.5_t4_s0" / "last.pt")
    assert any(not torch.equal(v, other[k]) for k, v in _model(solo / "last.pt").items())

    again = CliRunner().invoke(main, args)  # never clobbers a sweep
    assert again.exit_code == 1 and "--resume" in again.output


def test_resume_trains_and_evaluates_only_what_is_missing(synth_root, cache, tmp_path):
    from dvfl_train.sweep import GridPoint, SweepError, run_sweep

    points = [GridPoint(0.0, None, 0), GridPoint(0.5, 2.0, 0), GridPoint(0.9, 2.0, 1)]
    cfg = _sweep_cfg(synth_root, cache, tmp_path / "sw", points, parallel=2,
                     eval_views=("1",))

    def run(**kw):
        events = []
        rows = run_sweep(cfg, progress=events.append, **kw)
        groups = [e.names for e in events if e.kind == "group_start"]
        evals = [e.name for e in events if e.kind == "eval"]
        return rows, groups, evals

    rows, groups, evals = run()
    assert groups == [("ce_s0", "a0.5_t2_s0"), ("a0.9_t2_s1",)]  # --parallel 2
    assert evals == ["ce_s0", "a0.5_t2_s0", "a0.9_t2_s1"]
    assert [r.name for r in rows] == evals
    assert rows[0].train_wall_s == rows[1].train_wall_s != rows[2].train_wall_s
    runs = {p.name: cfg.run_dir(p) for p in points}
    first = {n: _model(d / "last.pt") for n, d in runs.items()}
    stamps = {n: ((d / "last.pt").stat().st_mtime_ns, (d / "eval_1.json").stat().st_mtime_ns)
              for n, d in runs.items()}

    with pytest.raises(SweepError, match="--resume"):
        run_sweep(cfg)

    # A student that lost its outputs is trained and evaluated again; the others are not.
    lost = runs["a0.5_t2_s0"]
    for name in ("summary.json", "last.pt", "best.pt", "metrics.jsonl", "eval_1.json"):
        (lost / name).unlink()
    rows, groups, evals = run(resume=True)
    assert groups == [("a0.5_t2_s0",)] and evals == ["a0.5_t2_s0"]
    for n in ("ce_s0", "a0.9_t2_s1"):
        d = runs[n]
        assert ((d / "last.pt").stat().st_mtime_ns,
                (d / "eval_1.json").stat().st_mtime_ns) == stamps[n]
    _assert_equal_weights(_model(lost / "last.pt"), first["a0.5_t2_s0"])  # same run again
    assert len(rows) == 3 and rows[1].train_wall_s != rows[0].train_wall_s

    # A lost evaluation alone is redone without training anything.
    (runs["ce_s0"] / "eval_1.json").unlink()
    rows, groups, evals = run(resume=True)
    assert groups == [] and evals == ["ce_s0"]
    assert (runs["a0.9_t2_s1"] / "eval_1.json").stat().st_mtime_ns == stamps["a0.9_t2_s1"][1]
    with open(cfg.out_dir / "results.csv", newline="") as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == [p.name for p in points]

    # Resuming with other shared options would mix two experiments: refused.
    import dataclasses

    changed = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, batch_size=2))
    with pytest.raises(SweepError, match="batch_size"):
        run_sweep(changed, resume=True)


def test_missing_device_is_refused_before_the_folder_is_made(synth_root, cache, tmp_path):
    import dataclasses

    from dvfl_cache.errors import DvflError
    from dvfl_train.sweep import GridPoint, run_sweep

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = _sweep_cfg(synth_root, cache, tmp_path / "sw", [GridPoint(0.0, None, 0)])
    cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, device="cuda"))
    with pytest.raises(DvflError, match="--device cuda: CUDA is not available"):
        run_sweep(cfg)
    assert not (tmp_path / "sw").exists()  # so a corrected command needs no --resume
