"""Student training: run directory, exact resume, cached vs online KD, sweeps, failures, CLI,
and data-parallel training under torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dvfl_cache.errors import CacheError

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}



def _cfg(root: Path, out: Path, **kw):
    from dvfl_train.config import FitConfig

    base = dict(dataset="ucf101", data_root=str(root), out_dir=str(out), num_frames=2, size=32,
                model_opts=TINY, alpha=0.0, epochs=2, warmup_epochs=1, batch_size=4, workers=0,
                device="cpu")
    return FitConfig(**{**base, **kw})


class _Killed(Exception):
    pass


def _kill_after(epoch: int):
    def progress(event):
        if event.kind == "epoch_end" and event.epoch == epoch:
            raise _Killed
    return progress


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(run / f"{name}.pt", weights_only=True)["model"]


def _assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _epochs(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "epoch"]


@pytest.fixture(scope="module")
def kd_cache(synth_index, tmp_path_factory):
    """A float32 cache (2 views of 4 frames at 32 px) from a saved random teacher."""
    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.models import create_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("trainer_cache")
    torch.manual_seed(7)
    save_checkpoint(tmp / "teacher.pt", create_model("vfl-nano", num_classes=4, num_frames=4,
                                                     img_size=32, **TINY))
    build_cache(BuildConfig(out=str(tmp / "c.zarr"), teacher=str(tmp / "teacher.pt"),
                            views_per_video=2, frames=4, size=32, seed=0, dtype="float32",
                            features=True, batch_size=3, workers=0, device="cpu"), synth_index)
    return tmp / "c.zarr", tmp / "teacher.pt"


def test_fit_writes_a_complete_run_directory(synth_root, tmp_path):
    from dvfl_train.evaluate import load_for_eval
    from dvfl_train.trainer import fit

    out = tmp_path / "run"
    cfg = _cfg(synth_root, out, val_every=2, label_smoothing=0.1)
    summary = fit(cfg, log_every=1)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt",
                                                      "metrics.jsonl", "summary.json"]
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 8 videos / batch 4 = 2 steps per epoch, a step record each (log_every=1), then the epoch
    assert [(r["type"], r["epoch"], r["step"]) for r in records] == [
        ("step", 1, 1), ("step", 1, 2), ("epoch", 1, 2),
        ("step", 2, 3), ("step", 2, 4), ("epoch", 2, 4)]
    first, last = records[2], records[5]
    assert "val_top1" not in first and "val_top1" in last  # val_every=2
    assert first["clips"] == last["clips"] == 8 and last["failed"] == 0
    for r in records:
        assert r["loss"] == pytest.approx(r["ce"]) and r["kd"] == 0.0  # alpha = 0
    # the cosine ends on the minimum LR at the last step; the first step is at warm-up LR
    assert records[0]["lr"] == pytest.approx(cfg.scaled_lrs()[1])
    assert last["lr"] == pytest.approx(cfg.scaled_lrs()[2])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["best_val_top1"] == last["val_top1"]
    assert summary["steps"] == 4 and summary["failed_videos"] == []

    state = torch.load(out / "best.pt", weights_only=True)
    assert state["epoch"] == 2 and state["classes"] == ["PanLeft", "PanRight", "PanUp",
                                                        "PanDown"]
    model, classes, info = load_for_eval(out / "best.pt")
    assert (info["view"].num_frames, info["view"].size, model.num_classes) == (2, 32, 4)
    assert classes == tuple(state["classes"]) and model.config["embed_dim"] == 8


@pytest.mark.parametrize("scheme", ["row", "batch"])  # batch: how round-1 runs resume
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synth_root, tmp_path, scheme):
    from dvfl_train.trainer import fit

    # drop path (0.2 by default), mixup/cutmix and label smoothing all draw random numbers
    kw = dict(mixup=0.4, cutmix=1.0, label_smoothing=0.1, seed=3, mix_scheme=scheme)
    straight = tmp_path / "straight"
    fit(_cfg(synth_root, straight, **kw))
    killed = tmp_path / "killed"
    with pytest.raises(_Killed):
        fit(_cfg(synth_root, killed, **kw), progress=_kill_after(1))
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] == 1
    assert not (killed / "summary.json").exists()
    fit(_cfg(synth_root, killed, **kw), resume=True)

    _assert_equal_weights(_weights(straight), _weights(killed))
    a = torch.load(straight / "last.pt", weights_only=True)["optimizer"]["state"]
    b = torch.load(killed / "last.pt", weights_only=True)["optimizer"]["state"]
    for k in a:
        assert torch.equal(a[k]["momentum_buffer"], b[k]["momentum_buffer"])
    assert [r["epoch"] for r in _epochs(killed)] == [1, 2]  # no epoch logged twice
    assert _epochs(killed)[1]["loss"] == _epochs(straight)[1]["loss"]
    # a different seed really changes the run, so the equality above is not vacuous
    other = tmp_path / "other"
    fit(_cfg(synth_root, other, **{**kw, "seed": 4}))
    assert not torch.equal(_weights(other)["head.weight"], _weights(straight)["head.weight"])


def test_adamw_run_resumes_to_the_same_weights_and_moments(synth_root, tmp_path):
    from dvfl_train.trainer import fit

    kw = dict(optimizer="adamw", weight_decay=0.05, seed=2)
    straight = tmp_path / "straight"
    fit(_cfg(synth_root, straight, **kw))
    killed = tmp_path / "killed"
    with pytest.raises(_Killed):
        fit(_cfg(synth_root, killed, **kw), progress=_kill_after(1))
    fit(_cfg(synth_root, killed, **kw), resume=True)
    _assert_equal_weights(_weights(straight), _weights(killed))
    a = torch.load(straight / "last.pt", weights_only=True)["optimizer"]["state"]
    b = torch.load(killed / "last.pt", weights_only=True)["optimizer"]["state"]
    assert a and all(torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"]) for k in a)
    # the optimizer really differs from SGD's: same seed, other weights
    sgd = tmp_path / "sgd"
    fit(_cfg(synth_root, sgd, seed=2, weight_decay=0.05))
    assert not torch.equal(_weights(sgd)["head.weight"], _weights(straight)["head.weight"])


def test_cached_and_online_kd_give_the_same_losses(synth_root, kd_cache, tmp_path):
    """Same views, same teacher: the cache only saves the teacher's forward pass."""
    from dvfl_train.trainer import fit

    cache, teacher = kd_cache
    # epochs 1 and 2 replay cached views 0 and 1; beta > 0 adds the feature term
    kw = dict(alpha=0.7, tau=4.0, beta=0.5, epochs=2)
    fit(_cfg(synth_root, tmp_path / "cached", cache=str(cache), **kw), log_every=1)
    fit(_cfg(synth_root, tmp_path / "online", teacher_weights=str(teacher), **kw), log_every=1)
    steps = [[r for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text()
                             .splitlines()) if r["type"] == "step"]
             for run in ("cached", "online")]
    assert len(steps[0]) == len(steps[1]) == 4
    for c, o in zip(*steps):
        assert c["kd"] > 0.0 and c["feat"] > 0.0
        # float32 rounding only: the cache ran the teacher on other batches than the online run
        for key in ("loss", "kd", "ce", "feat"):
            assert c[key] == pytest.approx(o[key], rel=1e-4, abs=1e-6), (key, c, o)
    a, b = _weights(tmp_path / "cached"), _weights(tmp_path / "online")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    projector = torch.load(tmp_path / "cached" / "last.pt", weights_only=True)["projector"]
    assert projector["weight"].shape == (64, 64)  # student width -> teacher width (8 * 2**3)
    # without the teacher term the run is different: the KD signal reached the student
    fit(_cfg(synth_root, tmp_path / "ce", cache=str(cache), **{**kw, "alpha": 0.0, "beta": 0.0}))
    assert not torch.allclose(_weights(tmp_path / "ce")["head.weight"], a["head.weight"])


def test_sweep_students_equal_solo_runs_and_resume_each_on_its_own(synth_root, kd_cache,
                                                                   tmp_path):
    from dvfl_train.student import StudentSpec
    from dvfl_train.trainer import fit, train_students

    cache, _ = kd_cache
    shared = _cfg(synth_root, tmp_path / "shared", cache=str(cache), alpha=0.5, seed=9)
    a = StudentSpec(alpha=0.5, tau=4.0, beta=0.0, seed=1, out_dir=str(tmp_path / "a"))
    b = StudentSpec(alpha=0.9, tau=2.0, beta=0.0, seed=2, out_dir=str(tmp_path / "b"), name="B")
    # student a alone, killed after epoch 1; then a sweep of a and b resumes a and starts b
    with pytest.raises(_Killed):
        train_students(shared, [a], progress=_kill_after(1))
    seen = []
    summaries = train_students(shared, [a, b], resume=True,
                               progress=lambda e: seen.append((e.kind, e.epoch, sorted(e.records))))
    assert ("epoch_end", 1, ["B"]) in seen and ("epoch_end", 2, ["B", "a"]) in seen
    assert [s["name"] for s in summaries] == ["a", "B"]
    assert [s["epochs"] for s in summaries] == [2, 2]

    cfg_b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (cfg_b["alpha"], cfg_b["tau"], cfg_b["seed"], cfg_b["data_seed"]) == (0.9, 2.0, 2, 9)
    # each student equals the same student trained alone from its own config.json
    for spec in (a, b):
        from dvfl_train.config import load_config

        solo = tmp_path / f"solo_{spec.seed}"
        cfg = load_config(Path(spec.out_dir) / "config.json")
        fit(dataclasses.replace(cfg, out_dir=str(solo)))
        _assert_equal_weights(_weights(Path(spec.out_dir)), _weights(solo))
    assert not torch.equal(_weights(tmp_path / "a")["head.weight"],
                           _weights(tmp_path / "b")["head.weight"])
    # a finished sweep resumed again trains nothing and returns the stored summaries
    assert train_students(shared, [a, b], resume=True) == summaries


def test_broken_training_video_is_skipped_counted_and_listed(synth_root, tmp_path):
    from dvfl_cache.data.readers import build_index
    from dvfl_train.trainer import fit

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    broken = build_index("ucf101", root, split=1, subset="train").abspath(3)
    Path(broken).write_bytes(b"not a video")
    summary = fit(_cfg(root, tmp_path / "run", epochs=1, warmup_epochs=0, max_failed=0.2))
    assert [f["path"] for f in summary["failed_videos"]] == [broken]
    assert summary["failed_clips"] == 1
    record = summary["final"]
    assert (record["failed"], record["clips"]) == (1, 7)

    # With a cache the video's views were marked invalid at build time: skipped, not decoded.
    from dvfl_cache.cache.build import BuildConfig, build_cache

    index = build_index("ucf101", root, split=1, subset="train")
    build_cache(BuildConfig(out=str(tmp_path / "c.zarr"), teacher="vfl-nano",
                            random_weights=True, teacher_opts=TINY, frames=2, size=32,
                            workers=0, device="cpu", max_failed=0.2), index)
    summary = fit(_cfg(root, tmp_path / "cached", epochs=1, warmup_epochs=0,
                       cache=str(tmp_path / "c.zarr"), alpha=0.5, max_failed=0.2))
    record = summary["final"]
    assert (record["invalid_views"], record["failed"], record["clips"]) == (1, 0, 7)
    assert summary["invalid_views"] == 1 and summary["failed_videos"] == []


def test_cache_of_another_subset_is_refused(synth_root, synth_test_index, kd_cache, tmp_path):
    from dvfl_cache.data.index import save_index
    from dvfl_train.trainer import fit

    cache, _ = kd_cache
    save_index(synth_test_index, tmp_path / "test.json")
    cfg = _cfg(synth_root, tmp_path / "run", cache=str(cache), alpha=0.3,
               train_index=str(tmp_path / "test.json"))
    with pytest.raises(CacheError, match=r"subset 'train' \(run expects 'test'\)"):
        fit(cfg)


def test_cli_fit_prints_epoch_lines_and_refuses_mixup_with_a_cache(synth_root, kd_cache,
                                                                  tmp_path):
    from dvfl_train.cli import main
    from dvfl_train.commands.fit import fit_cmd
    from dvfl_train.schedule import OPTIMIZERS

    choice = next(o for o in fit_cmd.params if o.name == "optimizer").type.choices
    assert tuple(choice) == OPTIMIZERS  # the CLI's list mirrors the library's

    cache, _ = kd_cache
    args = ["fit", "--dataset", "ucf101", "--root", str(synth_root), "--cache", str(cache),
            "--frames", "2", "--size", "32", "--model-opt", "embed_dim=8",
            "--model-opt", "depths=[1,1,1,1]", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1: loss " in result.output and "val top-1 " in result.output
    assert "best val top-1" in result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_opts"] == TINY

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--resume" in again.output  # never clobbers a run
    mixed = CliRunner().invoke(main, [*args, "--overwrite", "--mixup", "0.2"])
    assert mixed.exit_code == 1 and "mixup/cutmix cannot be combined" in mixed.output


_RANK_SCRIPT = """
import json, os, sys, torch
torch.set_num_threads(1)
from dvfl_train.config import FitConfig
from dvfl_train.trainer import fit
out = sys.argv[2]
def progress(event):
    if event.kind == "epoch_end":
        torch.save({k: m.state_dict() for k, m in event.models.items()},
                   f"{out}/rank{os.environ['RANK']}.pt")
fit(FitConfig.from_dict(json.loads(sys.argv[1])), progress=progress)
"""


@pytest.mark.slow
def test_torchrun_ranks_share_batches_and_agree(synth_root, tmp_path):
    """Two CPU ranks (gloo) split each batch of 4; without drop path the result is the
    single-process run's, and both ranks hold the same weights."""
    from dvfl_train.student import StudentSpec, build_student
    from dvfl_train.trainer import fit

    kw = dict(epochs=1, warmup_epochs=0, drop_path=0.0, base_lr=50.0)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    cfg = _cfg(synth_root, tmp_path / "ddp", **kw)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), json.dumps(cfg.to_dict()),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["ddp"] for r in (0, 1))
    _assert_equal_weights(r0, r1)
    _assert_equal_weights(r0, _weights(tmp_path / "ddp"))
    fit(_cfg(synth_root, tmp_path / "single", **kw))
    single = _weights(tmp_path / "single")
    for k in single:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-6)
    init = build_student(cfg, StudentSpec(alpha=0.0, tau=1.0, beta=0.0, seed=cfg.seed,
                                          out_dir=cfg.out_dir),
                         num_classes=4, device=torch.device("cpu")).net.state_dict()
    assert not torch.allclose(init["head.weight"], single["head.weight"], atol=1e-3)
    records = _epochs(tmp_path / "ddp")
    assert records[0]["clips"] == 8
    assert records[0]["loss"] == pytest.approx(_epochs(tmp_path / "single")[0]["loss"], rel=1e-5)


@pytest.mark.parametrize("max_norm", [1e-3, 1e6, float("nan")])
def test_clip_grad_norm_equals_torch_bit_for_bit(max_norm):
    """dvfl's clipping skips torch's multiply-by-1.0 pass on the CPU; gradients and the
    returned norm equal torch's exactly, whether it clips (small max_norm), does not (large)
    or meets a non-finite factor."""
    from dvfl_train.student import clip_grad_norm

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 3))
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.randn(4, 8)
    for net in nets:
        net(x).square().sum().backward()
    ours = clip_grad_norm(nets[0].parameters(), max_norm)
    ref = torch.nn.utils.clip_grad_norm_(nets[1].parameters(), max_norm)
    assert torch.equal(ours, ref)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a.grad, b.grad) or (a.grad.isnan().all() and b.grad.isnan().all())
    if max_norm == 1e-3:
        assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in nets[0].parameters()])
                                        ) < 2e-3
