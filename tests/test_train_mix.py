"""Students trained on mixed rows: the loader rebuilds the teacher's mixed clip bit for bit, cached
and online mixed KD agree, fewer frames / a smaller size cut both clips alike, labels are mixed
from smoothed one-hots, plain CE mixes per row, sweeps and resumes stay exact, bad input is one
line."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _cfg(root: Path, out: Path, **kw):
    from dvfl_train.config import FitConfig

    base = dict(dataset="ucf101", data_root=str(root), out_dir=str(out), num_frames=2, size=32,
                model_opts=TINY, alpha=0.0, epochs=2, warmup_epochs=1, batch_size=4, workers=0,
                device="cpu")
    return FitConfig(**{**base, **kw})


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["type"] == kind]


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(run / f"{name}.pt", weights_only=True)["model"]


def _assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def mixed(synth_index, tmp_path_factory):
    """A teacher checkpoint (4 frames, 64 px), a mixed cache of it (2 views per video), and
    the hash of every clip the teacher saw while building."""
    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.models import create_model, save_checkpoint
    from dvfl_cache.models.video_focalnet import VideoFocalNet

    tmp = tmp_path_factory.mktemp("train_mix")
    torch.manual_seed(0)
    save_checkpoint(tmp / "teacher.pt", create_model("vfl-nano", num_classes=4, num_frames=4,
                                                     img_size=64, **TINY))
    seen: list[str] = []
    real = VideoFocalNet.forward_features

    def spy(self, x):  # records what the teacher is given, then runs it unchanged
        seen.extend(_sha(c) for c in x)
        return real(self, x)

    cfg = BuildConfig(out=str(tmp / "m.zarr"), teacher=str(tmp / "teacher.pt"), frames=4,
                      size=64, views_per_video=2, dtype="float32", workers=0, device="cpu",
                      batch_size=3, mixup=0.8, cutmix=1.0, mix_prob=1.0)
    VideoFocalNet.forward_features = spy
    try:
        build_cache(cfg, synth_index)
    finally:
        VideoFocalNet.forward_features = real
    return tmp, tmp / "m.zarr", tmp / "teacher.pt", seen


def test_the_students_loader_rebuilds_the_teachers_mixed_clip_bit_for_bit(mixed, synth_index):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.dataset import Cut
    from dvfl_cache.data.transforms import to_float
    from dvfl_train.train_data import plan_epoch, train_clips

    _, store, _, seen = mixed
    reader = CacheReader(store)
    n = len(synth_index)
    ops = set()
    replayed = []
    for epoch in (1, 2):  # epoch e replays view e - 1: rows (e - 1) * n ...
        plan = plan_epoch(epoch, synth_index, reader=reader)
        assert plan.mixes is not None and len(plan.mixes) == len(plan.views) == n
        ds = train_clips(synth_index, plan, [Cut("clip", 64, frames=4, as_uint8=True)])
        for i in range(n):
            item = ds[i]
            assert item["error"] is None and item["mix"] == plan.mixes[i]
            ops.add(item["mix"].op)
            replayed.append(_sha(to_float(item["clip"])))
    assert ops == {"mixup", "cutmix"}
    # Every row's clip, as the teacher saw it: the build runs rows video by video in batches of
    # exactly 3, the last one filled up with zero clips.
    filling = _sha(to_float(torch.zeros((4, 3, 64, 64), dtype=torch.uint8)))
    assert sorted(replayed) == sorted(h for h in seen if h != filling)
    assert len(set(replayed)) == 2 * n


def test_cached_and_online_mixed_kd_give_the_same_losses(mixed, synth_root):
    """The online teacher draws the same mixes from the data seed (the build's seed) and runs on
    the mixed clip; the cache only saved that forward pass. A 2-frame 32 px student cuts both
    clips of every pair the same way in both runs."""
    from dvfl_train.trainer import fit

    tmp, store, teacher, _ = mixed
    kw = dict(alpha=0.7, tau=4.0, epochs=2, num_frames=2, size=32, label_smoothing=0.1)
    fit(_cfg(synth_root, tmp / "cached", cache=str(store), **kw), log_every=1)
    fit(_cfg(synth_root, tmp / "online", teacher_weights=str(teacher), mixup=0.8, cutmix=1.0,
             mix_prob=1.0, **kw), log_every=1)
    steps = [_records(tmp / run, "step") for run in ("cached", "online")]
    assert len(steps[0]) == len(steps[1]) == 4
    for c, o in zip(*steps):
        assert c["kd"] > 0.0
        for key in ("loss", "kd", "ce"):  # float32 rounding only
            assert c[key] == pytest.approx(o[key], rel=1e-4, abs=1e-6), (key, c, o)
    epochs = [_records(tmp / run, "epoch") for run in ("cached", "online")]
    for c, o in zip(*epochs):
        assert c["mixed"] == o["mixed"] == 1.0 and c["cutmix_share"] == o["cutmix_share"]
    # an online run at another data seed mixes other pairs: the equality above is not vacuous
    fit(_cfg(synth_root, tmp / "seed1", teacher_weights=str(teacher), mixup=0.8, cutmix=1.0,
             data_seed=1, **kw), log_every=1)
    assert _records(tmp / "seed1", "step")[0]["loss"] != pytest.approx(steps[0][0]["loss"],
                                                                       rel=1e-3)


def test_a_mixed_pair_at_fewer_frames_and_a_smaller_size_is_cut_alike(synth_index):
    """Closed form on a synthetic pair: the mixed replay equals the two unmixed replays at the
    student's cut, pasted (cutmix) or blended (mixup) with the stored box and lambda."""
    from dvfl_cache.data.dataset import replay_clip
    from dvfl_cache.data.mix import Mix
    from dvfl_cache.data.views import View

    own = View(video=1, view=0, frames=(0, 3, 6, 9), crop=(0.1, 0.2, 0.8, 0.6), flip=True)
    partner = View(video=5, view=0, frames=(2, 4, 6, 8), crop=(0.0, 0.0, 1.0, 1.0), flip=False,
                   jitter=(1.2, 0.9, 1.1, 0.05))
    a = replay_clip(synth_index, own, None, 16, frames=2)
    b = replay_clip(synth_index, partner, None, 16, frames=2)
    assert a.shape == (2, 3, 16, 16) and not torch.equal(a, b)
    cut = replay_clip(synth_index, own, Mix("cutmix", 0.75, (0.25, 0.5, 0.5, 0.5), partner), 16,
                      frames=2)
    expected = a.clone()
    expected[..., 4:12, 8:16] = b[..., 4:12, 8:16]  # the box (0.25, 0.5, 0.5, 0.5) of 16 px
    assert torch.equal(cut, expected)
    lam = 0.3
    blend = replay_clip(synth_index, own, Mix("mixup", lam, (0.0,) * 4, partner), 16, frames=2)
    want = (a.double() * np.float32(lam) + b.double() * np.float32(1 - lam)).round()
    assert (blend.double() - want).abs().max() <= 1  # float32 arithmetic, rounded to uint8
    assert torch.equal(blend, (a.float() * torch.tensor(lam) + b.float() * (1 - torch.tensor(
        lam))).round().to(torch.uint8))


def test_mixed_targets_are_smoothed_one_hots_mixed_with_lambda():
    from dvfl_train.losses import kd_loss
    from dvfl_train.train_data import mixed_targets

    batch = {"clip": torch.zeros(2), "label": torch.tensor([0, 2]),
             "partner_label": torch.tensor([1, 2]), "mix_lambda": torch.tensor([0.7, 1.0])}
    t = mixed_targets(batch, torch.device("cpu"), 4, smoothing=0.1)
    # smooth(onehot): 0.925 on the class, 0.025 elsewhere; then lam and 1 - lam
    expected = torch.tensor([[0.7 * 0.925 + 0.3 * 0.025, 0.7 * 0.025 + 0.3 * 0.925, 0.025, 0.025],
                             [0.025, 0.025, 0.925, 0.025]])
    torch.testing.assert_close(t, expected, rtol=0, atol=1e-7)
    # the CE of those soft targets, closed form, at logits log(1..4): p_k = k / 10
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2))
    ce = kd_loss(logits, None, t, 0.0, 1.0)["ce_loss"]
    p = [k / 10 for k in range(1, 5)]
    want = -sum(sum(float(expected[b, k]) * math.log(p[k]) for k in range(4))
                for b in range(2)) / 2
    assert float(ce) == pytest.approx(want, rel=1e-6)
    # an unmixed row's smoothed target gives the hard-label path's smoothed CE
    hard = kd_loss(logits[1:], None, torch.tensor([2]), 0.0, 1.0, 0.1)["ce_loss"]
    soft = kd_loss(logits[1:], None, t[1:], 0.0, 1.0)["ce_loss"]
    assert float(hard) == pytest.approx(float(soft), rel=1e-6)
    # the hard path is exactly torch's cross-entropy (unchanged)
    assert torch.equal(hard, torch.nn.functional.cross_entropy(logits[1:], torch.tensor([2]),
                                                               label_smoothing=0.1))


def test_plain_ce_mixes_per_row_with_mix_prob(synth_root, synth_index, tmp_path):
    """The epoch record's mixed fraction and cutmix share are those of the per-row draws of
    (data seed, video, view e - 1): --mix-prob decides how many rows."""
    from dvfl_cache.data.mix import MixConfig, draw_mix
    from dvfl_train.trainer import fit

    fit(_cfg(synth_root, tmp_path / "half", mixup=0.8, cutmix=1.0, mix_prob=0.5, seed=2))
    n = len(synth_index)
    for record in _records(tmp_path / "half", "epoch"):
        draws = [draw_mix(MixConfig(0.8, 1.0, 0.5, seed=2), v, record["epoch"] - 1, n)
                 for v in range(n)]
        mixed = [d for d in draws if d is not None]
        assert record["mixed"] == len(mixed) / n
        assert record["cutmix_share"] == sum(d.op == "cutmix" for d in mixed) / max(len(mixed),
                                                                                     1)
    assert 0 < sum(r["mixed"] for r in _records(tmp_path / "half", "epoch")) < 2
    fit(_cfg(synth_root, tmp_path / "plain"))
    assert "mixed" not in _records(tmp_path / "plain", "epoch")[0]


def test_a_round_1_mixup_config_keeps_the_batch_scheme(synth_root, tmp_path):
    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    old = {k: v for k, v in _cfg(synth_root, tmp_path / "old", mixup=0.4).to_dict().items()
           if k not in ("nesterov", "kd_form", "pred_loss", "rep_loss", "mix_prob",
                        "mix_scheme", "teacher_mix", "views_subset")}
    cfg = FitConfig.from_dict({**old, "version": 1})
    assert (cfg.mix_scheme, cfg.mix_prob) == ("batch", 1.0)
    assert FitConfig.from_dict({**old, "version": 2}).mix_scheme == "row"
    fit(cfg)
    fit(_cfg(synth_root, tmp_path / "row", mixup=0.4))
    old_run, new_run = _records(tmp_path / "old", "epoch"), _records(tmp_path / "row", "epoch")
    assert "mixed" not in old_run[0] and new_run[0]["mixed"] == 1.0
    assert old_run[0]["loss"] != new_run[0]["loss"]  # the two schemes do differ
    with pytest.raises(Exception, match="mix_scheme='batch'"):
        FitConfig.from_dict({**old, "version": 1, "alpha": 0.5,
                             "cache": "c.zarr"}).validate()


def test_resume_with_mixed_rows_is_bit_identical(mixed, synth_root, tmp_path):
    from dvfl_train.trainer import fit

    _, store, _, _ = mixed
    kw = dict(cache=str(store), alpha=0.5, label_smoothing=0.1, seed=3)
    fit(_cfg(synth_root, tmp_path / "straight", **kw))

    def kill(event):
        if event.kind == "epoch_end" and event.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(synth_root, tmp_path / "killed", **kw), progress=kill)
    fit(_cfg(synth_root, tmp_path / "killed", **kw), resume=True)
    _assert_equal_weights(_weights(tmp_path / "straight"), _weights(tmp_path / "killed"))


def test_sweep_from_a_mixed_cache_equals_fit_alone(mixed, synth_root, tmp_path):
    from dvfl_train.cli import main

    _, store, _, _ = mixed
    data = ["--dataset", "ucf101", "--root", str(synth_root), "--cache", str(store),
            "--frames", "2", "--size", "32", "--model-opt", "embed_dim=8",
            "--model-opt", "depths=[1,1,1,1]", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--label-smoothing", "0.1"]
    res = CliRunner().invoke(main, ["sweep", *data, "--alphas", "0.5", "--taus", "2",
                                    "--seeds", "0", "--eval-views", "1",
                                    "--out", str(tmp_path / "sweep")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "a0.5_t2_s0: epoch 1/1:" in res.output and "mixed 100% of clips (cutmix " in res.output
    solo = CliRunner().invoke(main, ["fit", *data, "--alpha", "0.5", "--tau", "2", "--seed", "0",
                                     "--out", str(tmp_path / "solo")], catch_exceptions=False)
    assert solo.exit_code == 0, solo.output
    swept = tmp_path / "sweep" / "runs" / "a0.5_t2_s0"
    _assert_equal_weights(_weights(swept), _weights(tmp_path / "solo"))
    assert _records(swept, "epoch")[0]["mixed"] == 1.0
    ce = _weights(tmp_path / "sweep" / "runs" / "ce_s0")  # the CE baseline is another student
    assert any(not torch.equal(v, ce[k]) for k, v in _weights(swept).items())


def test_mixing_on_top_of_a_mixed_cache_is_one_line_before_any_work(mixed, synth_root,
                                                                    tmp_path):
    from dvfl_train.cli import main

    _, store, _, _ = mixed
    out = tmp_path / "run"
    for cmd in ("fit", "sweep"):
        args = [cmd, "--dataset", "ucf101", "--root", str(synth_root), "--cache", str(store),
                "--frames", "2", "--size", "32", "--model-opt", "embed_dim=8",
                "--model-opt", "depths=[1,1,1,1]", "--epochs", "1", "--workers", "0",
                "--warmup-epochs", "0", "--device", "cpu", "--mixup", "0.2", "--out", str(out)]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, res.output
        errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "already mixed" in errors[0] and str(store) in errors[0]
        assert "Traceback" not in res.output
        assert not out.exists()


_RANK_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from dvfl_train.config import FitConfig
from dvfl_train.trainer import fit
fit(FitConfig.from_dict(json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_torchrun_ranks_mix_the_rows_of_a_single_process_run(synth_root, tmp_path):
    """Per-row mixing does not depend on how a batch is split over ranks: two gloo ranks
    train (plain CE, mixup + cutmix) to the single process's weights, and the epoch's mixed
    fraction and cutmix share are counted over both ranks."""
    import os
    import subprocess
    import sys

    from dvfl_train.trainer import fit

    kw = dict(epochs=1, warmup_epochs=0, drop_path=0.0, base_lr=50.0, mixup=0.8, cutmix=1.0,
              mix_prob=0.7, label_smoothing=0.1)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    cfg = _cfg(synth_root, tmp_path / "ddp", **kw)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), json.dumps(cfg.to_dict())],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fit(_cfg(synth_root, tmp_path / "single", **kw))
    ddp, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6)
    a, b = _records(tmp_path / "ddp", "epoch")[0], _records(tmp_path / "single", "epoch")[0]
    assert (a["mixed"], a["cutmix_share"], a["clips"]) == (b["mixed"], b["cutmix_share"], 8)
    assert 0 < a["mixed"] < 1
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
