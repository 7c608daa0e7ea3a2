"""The distillation objective of DVFL-Net (arXiv 2507.12426, equations (2)-(6)), written once.

    loss = alpha * tau^2 * KL(p_t || p_s) + (1 - alpha) * CE(y, s) + beta * MSE(P(z_s), z_t)

    p_t = softmax(t / tau), p_s = softmax(s / tau)
    KL(p_t || p_s) = mean over the batch of sum_k p_t(k) * (log p_t(k) - log p_s(k))

Where we knowingly differ from the published training code: it fed the student's *softmax* where
the log-softmax belongs, which is not a KL divergence at all; ours is the true KL from log-softmax
on both sides. The tau^2 factor keeps the KD gradient's scale independent of tau (Hinton et al.),
so alpha means the same thing at every temperature of a sweep.

Other published forms are offered beside the default, never instead of it:

- ``kd_form="reference"`` reproduces the criterion of the DVFL-Net code exactly (for comparison):
  ``tau^2 / B * sum_{b,k} p_t(b, k) * (log p_t(b, k) - p_s(b, k))``, the student's probability
  where its log-probability belongs (classification/criterion.py, ``loss_fn_kd``). It is not a
  divergence: it is not zero when the student equals the teacher, and its gradient
  ``-(tau / B) * p_s * (p_t - <p_t, p_s>)`` vanishes wherever the student is confident.
- ``pred_loss="mse"`` and ``rep_loss="sum"`` are the forms of "Efficient Video Classification
  Using Fewer Frames" (Bhardwaj et al., CVPR 2019): the squared distance between the teacher's and
  the student's class probabilities, and between their final representations, each summed over
  its dimension (and averaged over the batch). dvfl's defaults are tau-KL and the mean over
  elements (``beta = 1`` with ``rep_loss="mean"`` is the paper's weight divided by the width).

Everything is computed in float32: cached teacher logits are often float16 and the student may run
under bf16 autocast, and a softmax at tau = 10 over 400 classes loses most of its mass to rounding
in half precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dvfl_train.config import KD_FORMS, PRED_LOSSES, REP_LOSSES

__all__ = ["KD_FORMS", "PRED_LOSSES", "REP_LOSSES", "feature_loss", "kd_loss"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
            target: torch.Tensor, alpha: float, tau: float, label_smoothing: float = 0.0, *,
            beta: float = 0.0, student_features: torch.Tensor | None = None,
            teacher_features: torch.Tensor | None = None, kd_form: str = "kl",
            pred_loss: str = "kl", rep_loss: str = "mean") -> dict[str, torch.Tensor]:
    """Knowledge-distillation loss and its parts, so a run can log each of them.

    ``loss = alpha * kd_loss + (1 - alpha) * ce_loss + beta * feat_loss`` with

    - ``kd_loss = tau^2 * mean_b sum_k p_t(b, k) * (log p_t(b, k) - log p_s(b, k))``,
      ``p = softmax(logits / tau)``: the temperature-scaled KL term *before* the alpha weighting.
      With ``kd_form="reference"`` it is the published code's
      ``tau^2 * mean_b sum_k p_t(b, k) * (log p_t(b, k) - p_s(b, k))`` instead; with
      ``pred_loss="mse"`` it is ``mean_b sum_k (p_t(b, k) - p_s(b, k))^2`` (no tau^2: the
      fewer-frames paper matches plain probabilities, which is tau = 1).
    - ``ce_loss``: cross-entropy of the untempered student logits against ``target`` (class indices
      (B,) or a soft distribution (B, C), e.g. from mixup/cutmix), with ``label_smoothing`` mixing
      the target with the uniform distribution as ``(1 - eps) * y + eps / C``; *before* the
      (1 - alpha) weighting.
    - ``feat_loss = mean((P(z_s) - z_t)^2)`` (see :func:`feature_loss`), before the beta weighting;
      the caller applies the projection P. Zero when no features are given. With
      ``rep_loss="sum"`` the squares are summed over the feature dimension (mean over the batch).

    The teacher never receives a gradient (its logits and features are detached), so passing live
    teacher outputs during online distillation is safe. ``teacher_logits`` may be None only when
    ``alpha == 0`` (plain cross-entropy training); then ``kd_loss`` is reported as 0. Parts that
    do not enter the loss (e.g. ``ce_loss`` at alpha = 1) are still computed so they can be logged.
    The returned tensors are float32 scalars still attached to the graph; log them with ``.item()``.

    Misuse (alpha outside [0, 1], tau <= 0, shape mismatches, missing teacher outputs) raises
    ``ValueError``: these are programming errors, not user-facing ones.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not tau > 0.0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not beta >= 0.0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if kd_form not in KD_FORMS:
        raise ValueError(f"kd_form must be one of {', '.join(KD_FORMS)}, got {kd_form!r}")
    if pred_loss not in PRED_LOSSES:
        raise ValueError(f"pred_loss must be one of {', '.join(PRED_LOSSES)}, got {pred_loss!r}")
    if rep_loss not in REP_LOSSES:
        raise ValueError(f"rep_loss must be one of {', '.join(REP_LOSSES)}, got {rep_loss!r}")
    if kd_form == "reference" and pred_loss != "kl":
        raise ValueError("kd_form='reference' is the published code's variant of the KL term; "
                         f"it cannot be combined with pred_loss={pred_loss!r}")
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits must be (B, C), got shape {tuple(student_logits.shape)}")

    s = student_logits.float()
    ce = _cross_entropy(s, target, label_smoothing)

    if teacher_logits is None:
        if alpha > 0.0:
            raise ValueError(f"alpha={alpha} > 0 needs teacher_logits; pass them or set alpha=0")
        kd = s.new_zeros(())
    else:
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher_logits shape {tuple(teacher_logits.shape)} differs from "
                             f"student_logits shape {tuple(student_logits.shape)}")
        t = teacher_logits.detach().float()
        if pred_loss == "mse":
            kd = _squared_probability_distance(s, t, tau)
        elif kd_form == "reference":
            kd = tau * tau * _reference_criterion(s, t, tau)
        else:
            kd = tau * tau * _kl_teacher_student(s, t, tau)

    if student_features is not None and teacher_features is not None:
        feat = feature_loss(student_features, teacher_features, reduction=rep_loss)
    elif student_features is None and teacher_features is None and beta == 0.0:
        feat = s.new_zeros(())
    else:
        raise ValueError(f"the feature term (beta={beta}) needs both student_features and "
                         "teacher_features; pass both, or neither with beta=0")

    loss = alpha * kd + (1.0 - alpha) * ce + beta * feat
    return {"loss": loss, "kd_loss": kd, "ce_loss": ce, "feat_loss": feat}


def feature_loss(student_feat_projected: torch.Tensor, teacher_feat: torch.Tensor, *,
                 reduction: str = "mean") -> torch.Tensor:
    """Representation term for the fewer-frames recipe: the squared error of (B, D) embeddings.

    ``reduction="mean"`` averages over every element (dvfl's default); ``"sum"`` sums over the
    feature dimension and averages over the batch, the paper's ``||z_t - z_s||^2`` per clip,
    which is D times the mean.

    The student's pooled embedding must already be projected to the teacher's width (the
    projection is a trainable part of the student, so it lives with the model, not here). The
    teacher side is detached and both are compared in float32.
    """
    if student_feat_projected.shape != teacher_feat.shape:
        raise ValueError(f"projected student features {tuple(student_feat_projected.shape)} and "
                         f"teacher features {tuple(teacher_feat.shape)} differ in shape")
    if reduction not in REP_LOSSES:
        raise ValueError(f"reduction must be one of {', '.join(REP_LOSSES)}, got {reduction!r}")
    mse = F.mse_loss(student_feat_projected.float(), teacher_feat.detach().float())
    if reduction == "mean":
        return mse
    # sum over D, mean over the batch; for (B, D) that is D times the mean over elements
    return mse * student_feat_projected[0].numel()


def _kl_teacher_student(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(p_t || p_s) from log-softmax on both sides: no log of a rounded-to-zero probability."""
    log_p_s = F.log_softmax(s / tau, dim=1)
    log_p_t = F.log_softmax(t / tau, dim=1)
    # Sum over classes, then mean over clips: "batchmean", the true per-clip KL. A plain mean over
    # all elements would silently divide the loss by the number of classes.
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


def _reference_criterion(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """The published code's term without its tau^2: ``sum_{b,k} p_t (log p_t - p_s) / B``.

    The teacher's entropy part ``p_t log p_t`` is computed from log-softmax, so it stays finite
    where the published code would give 0 * log(0) = NaN; it carries no gradient either way.
    """
    log_p_t = F.log_softmax(t / tau, dim=1)
    p_s = F.softmax(s / tau, dim=1)
    return (log_p_t.exp() * (log_p_t - p_s)).sum() / s.shape[0]


def _squared_probability_distance(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean_b sum_k (p_t - p_s)^2``: the fewer-frames paper's prediction-matching term."""
    diff = F.softmax(t / tau, dim=1) - F.softmax(s / tau, dim=1)
    return diff.pow(2).sum(dim=1).mean()


def _cross_entropy(s: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    batch, num_classes = s.shape
    if target.ndim == 1 and not target.is_floating_point():
        if target.shape[0] != batch:
            raise ValueError(f"target has {target.shape[0]} labels for a batch of {batch}")
        return F.cross_entropy(s, target.long(), label_smoothing=label_smoothing)
    if target.ndim == 2 and target.is_floating_point():
        if tuple(target.shape) != (batch, num_classes):
            raise ValueError(f"soft target shape {tuple(target.shape)} differs from logits shape "
                             f"{(batch, num_classes)}")
        y = target.float()
        if label_smoothing > 0.0:
            y = (1.0 - label_smoothing) * y + label_smoothing / num_classes
        return -(y * F.log_softmax(s, dim=1)).sum(dim=1).mean()
    raise ValueError("target must be class indices (B,) of an integer dtype or a float "
                     f"distribution (B, C); got dtype {target.dtype}, shape {tuple(target.shape)}")
