"""`--tensorboard`: fit and sweep write TensorBoard event files per student beside
metrics.jsonl, read back here with TensorBoard's own reader and compared with the records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("tensorboard")

CLI_TINY = ["--frames", "2", "--size", "32", "--model-opt", "embed_dim=8",
            "--model-opt", "depths=[1,1,1,1]", "--epochs", "2", "--warmup-epochs", "0",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--log-every", "1"]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _check_run(run: Path, *, mixed: bool) -> None:
    got = _scalars(run)
    steps, epochs = _records(run, "step"), _records(run, "epoch")
    assert len(steps) == 4 and len(epochs) == 2  # 8 videos in batches of 4, two epochs
    for key in ("loss", "kd", "ce", "lr"):
        assert got[f"train/{key}"] == [(r["step"], pytest.approx(r[key], rel=1e-6))
                                       for r in steps], key
    for key in ("loss", "lr", "train_top1", "val_top1", *(("mixed",) if mixed else ())):
        assert got[f"epoch/{key}"] == [(r["step"], pytest.approx(r[key], rel=1e-6))
                                       for r in epochs], key
    assert ("epoch/mixed" in got) == mixed


def test_fit_writes_events_of_every_record(synth_root, tmp_path):
    from dvfl_train.cli import main

    out = tmp_path / "run"
    args = ["fit", "--dataset", "ucf101", "--root", str(synth_root), *CLI_TINY, "--mixup",
            "0.8", "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--tensorboard"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    _check_run(out, mixed=True)
    # without the option there are no event files; --overwrite clears old ones
    res = CliRunner().invoke(main, [*args, "--overwrite"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert not (out / "tensorboard").exists()


class _Killed(Exception):
    pass


def test_a_resumed_run_continues_its_curves_without_a_doubled_tail(synth_root, tmp_path):
    from dvfl_train.config import FitConfig
    from dvfl_train.trainer import fit

    cfg = FitConfig(dataset="ucf101", data_root=str(synth_root), out_dir=str(tmp_path / "run"),
                    num_frames=2, size=32, model_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]},
                    alpha=0.0, epochs=2, warmup_epochs=0, batch_size=4, workers=0,
                    device="cpu", tensorboard=True)

    def kill_in_epoch_2(event):
        if event.kind == "step" and event.epoch == 2:
            raise _Killed  # after epoch 2's first step was logged (and its event written)

    with pytest.raises(_Killed):
        fit(cfg, log_every=1, progress=kill_in_epoch_2)
    assert [s for s, _ in _scalars(tmp_path / "run")["train/loss"]] == [1, 2, 3]
    fit(cfg, log_every=1, resume=True)
    _check_run(tmp_path / "run", mixed=False)  # step 3 once, as metrics.jsonl has it


def test_sweep_writes_events_per_student(synth_root, tmp_path):
    from dvfl_train.cli import main

    out = tmp_path / "sweep"
    args = ["sweep", "--dataset", "ucf101", "--root", str(synth_root), *CLI_TINY,
            "--alphas", "0.0", "--taus", "1", "--seeds", "0,1", "--eval-views", "1",
            "--tensorboard", "--out", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    runs = sorted(p.parent for p in out.glob("runs/*/metrics.jsonl"))
    assert len(runs) == 2
    for run in runs:
        _check_run(run, mixed=False)


def test_tensorboard_is_imported_only_when_asked_for(tmp_path, monkeypatch):
    import subprocess
    import sys

    code = ("import sys, dvfl_train.trainer, dvfl_train.sweep; "
            "assert not [m for m in sys.modules if m.startswith(('tensorboard', "
            "'torch.utils.tensorboard'))]")
    subprocess.run([sys.executable, "-c", code], check=True)
    # without the package: one line naming the extra, not an ImportError's traceback
    from dvfl_train.config import ConfigError
    from dvfl_train.tensorboard_log import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"needs the tensorboard package: pip install "
                                          r"'dvfl\[tensorboard\]'"):
        TensorBoardLog(tmp_path)
