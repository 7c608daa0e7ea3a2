"""FitConfig (parsing and validation) and the run directory (config, metrics, checkpoints)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

import dvfl_train.checkpoint as ckpt
from dvfl_cache.errors import CheckpointError, DvflError
from dvfl_train.checkpoint import (RunDir, RunDirError, capture_rng, restore_rng,
                                   restore_training_state, training_state)
from dvfl_train.config import CONFIG_VERSION, ConfigError, FitConfig, load_config
from dvfl_train.schedule import build_optimizer


def _cfg(**kw) -> FitConfig:
    base = {"dataset": "ucf101", "data_root": "/data/ucf101", "out_dir": "runs/a",
            "cache": "cache.zarr"}
    base.update(kw)
    return FitConfig(**base)


# -- FitConfig ----------------------------------------------------------------------------------

def test_config_round_trip_through_json():
    cfg = _cfg(model_opts={"embed_dim": 48, "depths": [1, 1, 2, 1]}, sampler={"stride": 4},
               drop_path=0.1, clip_grad=None, val_subset=50, alpha=0.7, tau=4, amp=False,
               teacher_weights=None, train_index="idx/train.json", device="cuda:1")
    d = json.loads(json.dumps(cfg.to_dict(), allow_nan=False))
    assert d["version"] == CONFIG_VERSION
    back = FitConfig.from_dict(d)
    assert back == cfg
    assert back.tau == 4.0 and isinstance(back.tau, float)
    assert FitConfig.from_dict(_cfg().to_dict()) == _cfg()
    hash(cfg)  # usable as a dict key despite the dict fields


def test_config_to_dict_does_not_alias():
    cfg = _cfg(model_opts={"depths": [1, 2]})
    cfg.to_dict()["model_opts"]["depths"].append(3)
    assert cfg.model_opts == {"depths": [1, 2]}


def test_defaults_are_the_recipe():
    cfg = _cfg()
    assert (cfg.base_lr, cfg.warmup_lr, cfg.epochs, cfg.warmup_epochs) == (0.1, 0.001, 120, 20)
    assert (cfg.weight_decay, cfg.momentum, cfg.clip_grad) == (1e-4, 0.9, 5.0)
    assert cfg.scaled_lrs() == pytest.approx((0.1 * 24 / 512, 0.001 * 24 / 512, 0.001 * 24 / 512))
    cfg.validate()


@pytest.mark.parametrize("change, match", [
    ({"alpha": "0.3"}, "'alpha' expects a number"),
    ({"epochs": 1.5}, "'epochs' expects an integer"),
    ({"amp": 1}, "'amp' expects true or false"),
    ({"seed": True}, "'seed' expects an integer"),
    ({"cache": 3}, "'cache' expects a list of strings"),
    ({"model_opts": [1]}, "'model_opts' expects an object"),
    ({"model_opts": None}, "'model_opts' expects an object"),
    ({"alpah": 0.3}, "unknown field.*'alpah'"),
    ({"version": CONFIG_VERSION + 1}, "newer dvfl"),
    ({"version": "x"}, "not a dvfl config"),
])
def test_from_dict_names_the_bad_field(change, match):
    d = _cfg().to_dict()
    d.update(change)
    with pytest.raises(ConfigError, match=match):
        FitConfig.from_dict(d, source="x/config.json")


def test_from_dict_missing_required_and_source_named():
    d = _cfg().to_dict()
    del d["data_root"]
    with pytest.raises(ConfigError, match=r"^x/config.json: missing field\(s\) 'data_root'"):
        FitConfig.from_dict(d, source="x/config.json")
    with pytest.raises(ConfigError, match="JSON object"):
        FitConfig.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("change, match", [
    ({"mix_prob": 1.5}, r"mix_prob=1.5 must be in \[0, 1\]"),
    ({"mixup": 0.8, "mix_scheme": "batch"}, "mix_scheme='batch' .* plain CE runs only"),
    ({"mix_scheme": "pairs"}, "mix_scheme='pairs' must be one of row, batch"),
    ({"alpha": 1.5}, r"alpha=1.5 must be in \[0, 1\]"),
    ({"alpha": -0.5}, r"alpha=-0.5 must be in \[0, 1\]"),
    ({"tau": 0.0}, "tau=0.0 must be > 0"),
    ({"cache": None}, "alpha=0.3 > 0 needs teacher logits"),
    ({"cache": None, "alpha": 0.0, "beta": 0.5}, "beta=0.5 > 0 needs teacher features"),
    ({"teacher_weights": "t.pt"}, "choose one source of teacher logits"),
    ({"cache": None, "teacher": "vfn-base"}, "needs teacher_weights"),
    ({"warmup_epochs": 121}, r"warmup_epochs=121 must be in \[0, epochs=120\]"),
    ({"min_lr": 0.5}, "min_lr=0.5"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"clip_grad": 0.0}, "clip_grad"),
    ({"device": "gpu"}, "device='gpu'"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"test_span": 4}, r"test_span=4 must be >= num_frames=8"),
    ({"optimizer": "adam"}, "optimizer='adam' must be one of sgd, adamw"),
    ({"model_opts": {"x": float("nan")}}, "model_opts must be JSON-able"),
])
def test_validate_refuses(change, match):
    cfg = _cfg(**change)
    with pytest.raises(ConfigError, match=match) as info:
        cfg.validate()
    assert isinstance(info.value, DvflError)
    assert "runs/a" in str(info.value)


def test_validate_accepts_plain_ce_and_online_teacher_and_lists_all_problems():
    _cfg(cache=None, alpha=0.0, mixup=0.8, cutmix=1.0).validate()
    _cfg(cache=None, teacher_weights="t.pt", mixup=0.8, cutmix=1.0, mix_prob=0.5).validate()
    _cfg(cache=None, teacher="vfn-base", teacher_weights="t.pt", beta=1.0).validate()
    _cfg(alpha=0.0).validate()  # the alpha = 0 point of a sweep still replays the cached views
    with pytest.raises(ConfigError) as info:
        _cfg(tau=-1.0, epochs=0).validate()
    assert "tau=-1.0" in str(info.value) and "epochs=0" in str(info.value)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no_such.json: no such config file"):
        load_config(tmp_path / "no_such.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: cannot read config"):
        load_config(bad)


# -- run directory: creation ---------------------------------------------------------------------

def test_new_run_dir_and_refusals(tmp_path):
    run = RunDir(tmp_path / "a" / "b")
    assert run.path.is_dir()
    run.write_config(_cfg())
    with pytest.raises(RunDirError, match="not empty.*--resume.*--overwrite"):
        RunDir(run.path)
    with pytest.raises(RunDirError, match="choose one of resume and overwrite"):
        RunDir(run.path, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        RunDir(tmp_path / "file")
    RunDir(tmp_path / "empty_ok").path.rmdir()


@pytest.mark.parametrize("flag", ["overwrite", "resume"])
def test_refuses_to_touch_a_foreign_directory(tmp_path, flag):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="not a dvfl run directory"):
        RunDir(tmp_path, **{flag: True})
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_overwrite_removes_only_run_files(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(_cfg())
    run.append_metrics({"epoch": 0, "loss": 1.0})
    run.save("last", {"epoch": 0})
    (tmp_path / "notes.txt").write_text("keep")
    RunDir(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resume_refuses_a_different_config(tmp_path):
    RunDir(tmp_path).write_config(_cfg())
    run = RunDir(tmp_path, resume=True)
    run.write_config(_cfg(workers=0, device="cpu"))  # runtime-only changes are fine
    with pytest.raises(RunDirError, match=r"different config \(alpha: 0.3 -> 0.5\)"):
        run.write_config(_cfg(alpha=0.5))
    assert run.read_config() == _cfg(workers=0, device="cpu")


# -- metrics log ---------------------------------------------------------------------------------

def test_metrics_lines_and_values(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"epoch": 0, "step": 10, "loss": torch.tensor(0.5), "n": np.int64(3)})
    run.append_metrics({"epoch": 0, "val_top1": 0.25, "per_class": np.array([1.0, 0.0])})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"epoch": 0, "step": 10, "loss": 0.5, "n": 3},
        {"epoch": 0, "val_top1": 0.25, "per_class": [1.0, 0.0]}]
    assert run.read_metrics() == [json.loads(x) for x in lines]
    with pytest.raises(ValueError, match="integer 'epoch'"):
        run.append_metrics({"loss": 1.0})


def test_resume_drops_metrics_after_the_checkpoint_epoch(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(_cfg())
    for epoch in range(3):
        run.append_metrics({"epoch": epoch, "step": epoch * 10 + 5})
        run.append_metrics({"epoch": epoch, "val_top1": epoch / 10})
        if epoch < 2:
            run.save("last", {"epoch": epoch, "step": epoch * 10 + 9})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "st')  # killed mid-write during epoch 2

    again = RunDir(tmp_path, resume=True)
    state = again.resume_state()
    assert state == {"epoch": 1, "step": 19}
    assert [r["epoch"] for r in again.read_metrics()] == [0, 0, 1, 1]
    again.append_metrics({"epoch": 2, "step": 25})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 0, 1, 1, 2]


def test_resume_without_checkpoint_starts_over(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(_cfg())
    run.append_metrics({"epoch": 0, "step": 3})
    again = RunDir(tmp_path, resume=True)
    assert again.resume_state() is None
    assert again.read_metrics() == []


class _Foreign:
    pass


# -- checkpoints ---------------------------------------------------------------------------------

class _Net(nn.Module):
    arch = None

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.config = {"in_features": 4, "num_classes": 3}

    def forward(self, x):
        return self.norm(self.fc(x))


def _trained_pair():
    torch.manual_seed(0)
    model = _Net()
    opt = build_optimizer(model, lr=0.1, weight_decay=1e-4)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # creates momentum buffers
    return model, opt


def test_training_state_loads_with_weights_only_and_restores(tmp_path):
    model, opt = _trained_pair()
    run = RunDir(tmp_path)
    state = training_state(model, opt, epoch=3, step=40, best_metric=0.5, config=_cfg())
    path = run.save("best", state)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "dvfl-checkpoint" and raw["version"] == 1
    assert raw["model_config"] == model.config and raw["config"] == _cfg().to_dict()
    assert FitConfig.from_dict(raw["config"]) == _cfg()

    fresh = _Net()
    fresh_opt = build_optimizer(fresh, lr=0.1, weight_decay=1e-4)
    assert restore_training_state(run.load("best"), fresh, fresh_opt) == (3, 40, 0.5)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    buf = [fresh_opt.state[p]["momentum_buffer"] for p in fresh.parameters()]
    ref = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(buf, ref))
    assert fresh_opt.param_groups[0]["param_names"] == ["fc.weight"]


def test_resume_keeps_the_running_optimizers_implementation(tmp_path):
    """A checkpoint saved by an optimizer with foreach=None (before the multi-tensor steps)
    restores its state but not that choice: the resumed run keeps foreach=True."""
    model, _ = _trained_pair()
    old = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=None)
    model(torch.randn(2, 4)).sum().backward()
    old.step()
    state = training_state(model, old, epoch=1, step=5, best_metric=None, config=_cfg())
    fresh = _Net()
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9, foreach=True)
    restore_training_state(state, fresh, opt)
    assert opt.param_groups[0]["foreach"] is True
    assert torch.equal(opt.state[next(iter(fresh.parameters()))]["momentum_buffer"],
                       old.state[next(iter(model.parameters()))]["momentum_buffer"])


def test_best_checkpoint_rebuilds_the_model(tmp_path):
    from dvfl_cache.models import create_model, model_from_checkpoint

    torch.manual_seed(0)
    model = create_model("vfl-nano", embed_dim=8, num_classes=3, num_frames=2, img_size=32)
    opt = build_optimizer(model, lr=0.1, weight_decay=1e-4)
    path = RunDir(tmp_path).save("best", training_state(model, opt, epoch=0, step=1,
                                                        best_metric=None, config=_cfg()))
    rebuilt, report = model_from_checkpoint(path)
    assert rebuilt.arch == "vfl-nano" and not report.fresh and not report.mismatched
    x = torch.randn(1, 2, 3, 32, 32)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_rng_round_trip():
    random.random(), random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()
    states = capture_rng()
    assert all(isinstance(v, torch.Tensor) for v in states.values())
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
             np.random.standard_normal(), torch.rand(3).tolist())
    restore_rng(states)
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
             np.random.standard_normal(), torch.rand(3).tolist())
    assert first == again


def test_crash_between_tmp_write_and_replace_keeps_previous(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_config(_cfg())
    run.save("last", {"epoch": 1, "w": torch.ones(3)})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(ckpt.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run.save("last", {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert (tmp_path / "last.pt.tmp").exists()  # the new state was fully written, not renamed
    state = run.load("last")
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    # reopening for resume clears the leftover and still sees epoch 1
    again = RunDir(tmp_path, resume=True)
    assert not (tmp_path / "last.pt.tmp").exists()
    assert again.resume_state()["epoch"] == 1


def test_crash_during_write_keeps_previous(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.save("last", {"epoch": 1})

    def torn_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        run.save("last", {"epoch": 2})
    monkeypatch.undo()
    assert run.load("last") == {"epoch": 1}


def test_save_refuses_values_weights_only_cannot_read(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match=r"state\['config'\]: FitConfig"):
        run.save("last", {"config": _cfg()})
    with pytest.raises(ValueError, match="checkpoint name"):
        run.save("../evil", {"epoch": 0})
    assert not any(tmp_path.iterdir())


def test_load_errors(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(CheckpointError, match="last.pt: no such checkpoint"):
        run.load("last")
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="last.pt: not a PyTorch checkpoint"):
        run.load("last")
    torch.save({"cfg": _Foreign()}, tmp_path / "best.pt")  # a pickled class: refused
    with pytest.raises(CheckpointError, match="refusing to load .*best.pt: it would run code"):
        run.load("best")


def test_summary_is_json(tmp_path):
    run = RunDir(tmp_path)
    run.write_summary({"top1": np.float64(0.75), "epochs": 3})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"top1": 0.75, "epochs": 3}


def test_test_view_of_a_config_without_sampler_or_span():
    """A config that never set the sampler or a test span tests as it always did: plain
    segment views, stride 4, at its frames and size."""
    from dvfl_cache.data.views import TestView

    d = _cfg(num_frames=4, size=48).to_dict()
    d.pop("test_span", None)
    d["sampler"] = {}
    assert FitConfig.from_dict(d).test_view() == TestView(num_frames=4, size=48)
    spanned = _cfg(num_frames=2, test_span=8, sampler={"temporal": "stride", "stride": 2})
    assert spanned.test_view() == TestView(2, 224, temporal="stride", stride=2, span=8)


def test_save_as_links_best_to_last_and_a_later_last_leaves_it(tmp_path):
    """best.pt made from last.pt without writing it again: the same bytes, and the next
    epoch's last.pt (a new file swapped in) does not change it."""
    run = RunDir(tmp_path)
    run.save("last", {"epoch": 1, "w": torch.ones(3)})
    first = (tmp_path / "last.pt").read_bytes()
    run.save_as("best", "last")
    assert (tmp_path / "best.pt").read_bytes() == first
    run.save("last", {"epoch": 2, "w": torch.zeros(3)})
    assert (tmp_path / "best.pt").read_bytes() == first
    assert run.load("best")["epoch"] == 1 and run.load("last")["epoch"] == 2
    run.save_as("best", "last")  # replacing an existing best.pt
    assert run.load("best")["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp"))
