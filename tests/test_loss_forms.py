"""The loss-form settings of FitConfig reach the student's optimizer step (one call site)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dvfl_train.config import ConfigError, FitConfig
from dvfl_train.losses import kd_loss

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}


def _cfg(**kw) -> FitConfig:
    base = dict(dataset="ucf101", data_root="/data", out_dir="/runs/a", num_frames=2, size=32,
                model_opts=TINY, drop_path=0.0, alpha=0.5, tau=2.0, cache="/c.zarr",
                device="cpu", workers=0)
    return FitConfig(**{**base, **kw})


def test_defaults_are_todays_losses_and_old_configs_read_back():
    cfg = _cfg()
    assert (cfg.kd_form, cfg.pred_loss, cfg.rep_loss) == ("kl", "kl", "mean")
    old = cfg.to_dict()
    for name in ("kd_form", "pred_loss", "rep_loss"):
        del old[name]  # a config.json written before these fields existed
    assert FitConfig.from_dict(old) == cfg
    fields = [f.name for f in dataclasses.fields(FitConfig)]
    assert fields[-3:] == ["kd_form", "pred_loss", "rep_loss"]
    assert all(f.metadata.get("help") for f in dataclasses.fields(FitConfig)[-3:])


@pytest.mark.parametrize("kw, match", [
    ({"kd_form": "kld"}, "kd_form='kld' must be one of kl, reference"),
    ({"pred_loss": "l2"}, "pred_loss='l2' must be one of kl, mse"),
    ({"rep_loss": "max"}, "rep_loss='max' must be one of mean, sum"),
    ({"kd_form": "reference", "pred_loss": "mse"}, "cannot be combined"),
])
def test_validate_refuses_unknown_forms(kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**kw).validate()


@pytest.mark.parametrize("kw", [{}, {"kd_form": "reference"}, {"pred_loss": "mse"},
                                {"beta": 0.5, "rep_loss": "sum"}, {"beta": 0.5}])
def test_train_step_uses_the_configured_forms(kw):
    from dvfl_train.student import StudentSpec, build_student, train_step

    cfg = _cfg(**kw)
    spec = StudentSpec(alpha=cfg.alpha, tau=cfg.tau, beta=cfg.beta, seed=0, out_dir=cfg.out_dir)
    student = build_student(cfg, spec, num_classes=4, device=torch.device("cpu"),
                            feature_dim=6 if cfg.beta else None)
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(3, 2, 3, 32, 32, generator=g)
    teacher = torch.randn(3, 4, generator=g) * 3
    feats = torch.randn(3, 6, generator=g) if cfg.beta else None
    target = torch.tensor([0, 1, 2])
    with torch.no_grad():
        _, projected = student.model(clip)
    parts, logits = train_step(student, clip, target, teacher_logits=teacher,
                               teacher_features=feats, lr=0.0)
    forms = {"kd_form": cfg.kd_form, "pred_loss": cfg.pred_loss, "rep_loss": cfg.rep_loss}
    want = kd_loss(logits, teacher, target, cfg.alpha, cfg.tau, beta=cfg.beta,
                   student_features=projected, teacher_features=feats, **forms)
    default = kd_loss(logits, teacher, target, cfg.alpha, cfg.tau, beta=cfg.beta,
                      student_features=projected, teacher_features=feats)
    for key in ("loss", "kd_loss", "feat_loss"):
        assert parts[key].item() == pytest.approx(want[key].item(), rel=1e-5, abs=1e-7)
    if kw.keys() - {"beta"}:  # a non-default form must change what the step optimises
        assert parts["loss"].item() != pytest.approx(default["loss"].item(), rel=1e-3)


def test_a_students_own_forms_override_the_shared_config():
    """Students of one pass may differ in loss form (the fewer-frames benchmark trains the
    paper's forms beside dvfl's): the spec's forms reach its config and its optimizer step,
    and a spec that names none keeps the shared config's."""
    from dvfl_train.student import StudentSpec, build_student, train_step

    shared = _cfg(beta=0.5)
    plain = StudentSpec(alpha=0.5, tau=1.0, beta=0.5, seed=0, out_dir="/runs/p")
    paper = dataclasses.replace(plain, out_dir="/runs/q", pred_loss="mse", rep_loss="sum")
    assert (plain.config(shared).pred_loss, plain.config(shared).rep_loss) == ("kl", "mean")
    assert (paper.config(shared).pred_loss, paper.config(shared).rep_loss) == ("mse", "sum")
    assert paper.config(_cfg(beta=0.5, pred_loss="mse")).rep_loss == "sum"

    g = torch.Generator().manual_seed(1)
    clip = torch.randn(3, 2, 3, 32, 32, generator=g)
    teacher, feats = torch.randn(3, 4, generator=g) * 3, torch.randn(3, 6, generator=g)
    target = torch.tensor([0, 1, 2])
    parts = {}
    for spec in (plain, paper):
        student = build_student(spec.config(shared), spec, num_classes=4,
                                device=torch.device("cpu"), feature_dim=6)
        with torch.no_grad():
            _, projected = student.model(clip)
        parts[spec.out_dir], logits = train_step(student, clip, target, teacher_logits=teacher,
                                                 teacher_features=feats, lr=0.0)
        want = kd_loss(logits, teacher, target, 0.5, 1.0, beta=0.5, student_features=projected,
                       teacher_features=feats, pred_loss=spec.config(shared).pred_loss,
                       rep_loss=spec.config(shared).rep_loss)
        assert parts[spec.out_dir]["loss"].item() == pytest.approx(want["loss"].item(), rel=1e-5)
    # same init seed, same inputs: only the forms differ, and the sum over 6 features is 6x the mean
    assert parts["/runs/q"]["feat_loss"].item() == pytest.approx(
        6 * parts["/runs/p"]["feat_loss"].item(), rel=1e-5)
