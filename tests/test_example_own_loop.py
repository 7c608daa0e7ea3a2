"""examples/train_own_loop.py: a plain PyTorch loop on the public API trains a student above
chance on the synthetic set, and its loss of a batch is the loss `dvfl-train fit` logs for the
same rows."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_cache_build import build_args, run_cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train_own_loop.py"
TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def cache(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("own_loop") / "c.zarr"
    run_cli(build_args(synth_root, out))
    return out


def _example():
    spec = importlib.util.spec_from_file_location("train_own_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_imports_only_the_public_api():
    text = EXAMPLE.read_text(encoding="utf-8")
    dvfl = [line for line in text.splitlines()
            if line.startswith(("from dvfl", "import dvfl"))]
    assert dvfl == ["from dvfl_cache import CachedClips, open_cache",
                    "from dvfl_train import kd_loss"]
    assert len(text.splitlines()) <= 80


def test_the_example_trains_a_student_above_chance(cache, synth_root):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO),
                                                        os.environ.get("PYTHONPATH", "")])}
    code = (f"import runpy, sys; sys.argv = ['train_own_loop', {str(cache)!r}, "
            f"{str(synth_root)!r}, '--epochs', '6', '--workers', '1']; "
            f"g = runpy.run_path({str(EXAMPLE)!r}); print('FINAL', g['main'](sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert "epoch 5: loss" in out
    top1 = float(out.split("FINAL")[-1])
    assert top1 > 0.5, out  # 4 classes: chance is 0.25 (top-1 on the rows it trained on)


def test_its_batch_loss_is_what_dvfl_train_fit_logs_for_the_same_rows(cache, synth_root,
                                                                       tmp_path):
    from torch.utils.data import default_collate

    from dvfl_cache import CachedClips, open_cache
    from dvfl_train.config import FitConfig
    from dvfl_train.student import StudentSpec, build_student
    from dvfl_train.trainer import fit
    from dvfl_train.train_data import epoch_order

    cfg = FitConfig(dataset="ucf101", data_root=str(synth_root), out_dir=str(tmp_path / "run"),
                    cache=(str(cache),), num_frames=2, size=32, model_opts=TINY, alpha=0.3,
                    tau=4.0, label_smoothing=0.1, drop_path=0.0, epochs=1, warmup_epochs=0,
                    batch_size=4, workers=0, device="cpu", seed=7)
    fit(cfg, log_every=1)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    first = next(r for r in map(json.loads, lines) if r["type"] == "step" and r["step"] == 1)

    # the student fit started from, and the rows of its first batch
    spec = StudentSpec(alpha=cfg.alpha, tau=cfg.tau, beta=0.0, seed=cfg.seed,
                       out_dir=cfg.out_dir)
    student = build_student(spec.config(cfg), spec, num_classes=4, device=torch.device("cpu"))
    student.model.train()
    ds = CachedClips(open_cache(cache), root=synth_root, frames=2, size=32, epoch=0)
    rows = epoch_order(cfg.seed, 1, len(ds))[:cfg.batch_size]
    batch = default_collate([ds[int(i)] for i in rows])

    def model(clip):  # dvfl's nets take [B, T, C, H, W]
        return student.model(clip.transpose(1, 2))[0]

    loss = _example().batch_loss(model, batch, alpha=0.3, tau=4.0, label_smoothing=0.1)
    assert first["clips"] == cfg.batch_size
    assert loss.item() == pytest.approx(first["loss"], rel=1e-6, abs=1e-7)
    others = default_collate([ds[int(i)] for i in epoch_order(cfg.seed, 1, len(ds))[4:8]])
    other = _example().batch_loss(model, others, alpha=0.3, tau=4.0, label_smoothing=0.1)
    assert other.item() != pytest.approx(first["loss"], rel=1e-4)  # other rows: the check bites
