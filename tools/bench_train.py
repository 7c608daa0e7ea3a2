"""Time one training step of a student: CE only, KD from the cache, KD with the teacher online.

    python tools/bench_train.py [--device cuda] [--size 224 --frames 8 --batch 8]

Steps run on one pre-decoded in-memory batch, so decoding does not blur the ratios, and through
the trainer's own code (``student_inputs``, the teacher sources' ``targets``, ``train_step``).
Modes are interleaved step by step and each reports its median, so drift in machine load hits every mode alike. The KD term is
also timed alone (lookup + loss forward/backward, 100 repeats): on a busy machine whole-step
ratios are noisy, and that number bounds what the cache adds to a CE step.

Goals (issue "Student training from the cache"):
- KD from the cache costs under 5% more than a CE-only step of the same student (the teacher
  term is a softmax over C classes plus a lookup in the epoch's in-memory logit block);
- online KD costs a teacher forward plus a student step, so the cache's measured speed-up
  t_online / t_cache should come within 10% of (t_teacher_forward + t_cache) / t_cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="vfl-nano")
    p.add_argument("--teacher", default="vfn-base")
    p.add_argument("--student-opt", default="{}", help="JSON constructor overrides")
    p.add_argument("--teacher-opt", default="{}", help="JSON constructor overrides")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=101)
    p.add_argument("--videos", type=int, default=9537, help="rows in the epoch's logit block")
    p.add_argument("--steps", type=int, default=3, help="(with --rounds) timed steps per mode")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true",
                   help="print one JSON line (with the run's conditions) instead of the text")
    args = p.parse_args(argv)
    cond = _conditions.start("bench_train", argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from dvfl_cache.models import count_gmacs, create_model
    from dvfl_train.config import FitConfig
    from dvfl_train.teachers import CachedTeacher, NoTeacher, OnlineTeacher
    from dvfl_train.train_data import student_inputs
    from dvfl_train.student import StudentSpec, build_student, train_step

    device = torch.device(args.device)
    amp = device.type == "cuda"
    common = dict(dataset="bench", data_root=".", out_dir="bench", num_frames=args.frames,
                  size=args.size, model=args.student, model_opts=json.loads(args.student_opt),
                  batch_size=args.batch)
    ce_cfg = FitConfig(**common, alpha=0.0)
    kd_cfg = FitConfig(**common, alpha=0.3, tau=10.0, cache="bench.zarr")

    def student(cfg: FitConfig):
        spec = StudentSpec(alpha=cfg.alpha, tau=cfg.tau, beta=0.0, seed=0, out_dir="bench")
        return build_student(spec.config(cfg), spec, num_classes=args.classes, device=device)

    ce_student, kd_student, online_student = student(ce_cfg), student(kd_cfg), student(kd_cfg)
    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=args.classes, num_frames=args.frames,
                           img_size=args.size, **json.loads(args.teacher_opt))
    teacher.eval().requires_grad_(False).to(device)

    # One pre-decoded batch; the online teacher sees the same clip at the same geometry.
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(args.batch, args.frames, 3, args.size, args.size, generator=g)
    batch = {"clip": clip, "teacher_clip": clip,
             "video": torch.randint(args.videos, (args.batch,), generator=g),
             "label": torch.randint(args.classes, (args.batch,), generator=g)}
    block = torch.randn(args.videos, args.classes, generator=g).half().float().to(device)

    sources = {
        "none": NoTeacher(num_classes=args.classes, view_frames=args.frames, sampler=None),
        "online": OnlineTeacher(teacher, sampler=None, num_classes=args.classes, amp=amp),
        "cached": CachedTeacher(None, num_classes=args.classes,
                                view_frames=args.frames).to(device),
    }
    sources["cached"].use_block(block)

    def inputs(teacher_on: bool, cached: bool):
        source = sources["online" if teacher_on else "cached" if cached else "none"]
        x, y = student_inputs(batch, device, num_frames=args.frames, size=args.size)
        t, f = source.targets(batch, device)
        return x, y, t, f

    lr = 1e-3

    def ce_step():
        x, y, _, _ = inputs(False, False)
        train_step(ce_student, x, y, teacher_logits=None, lr=lr, amp=amp)

    def cache_step():
        x, y, t, _ = inputs(False, True)
        train_step(kd_student, x, y, teacher_logits=t, lr=lr, amp=amp)

    def online_step():
        x, y, t, _ = inputs(True, False)
        train_step(online_student, x, y, teacher_logits=t, lr=lr, amp=amp)

    def teacher_forward():
        inputs(True, False)

    # What the cache adds to a CE step, alone: the logit lookup and the KD term's forward and
    # backward on the student's logits. Timed over many repeats, it bounds the overhead without
    # the noise of whole steps.
    from dvfl_train.losses import kd_loss

    student_logits = torch.randn(args.batch, args.classes, device=device, requires_grad=True)
    videos, labels = batch["video"].to(device), batch["label"].to(device)

    def kd_term():
        for _ in range(100):
            kd_loss(student_logits, block[videos], labels, 0.3, 10.0)["kd_loss"].backward()

    modes = {"ce": ce_step, "kd_cache": cache_step, "kd_online": online_step,
             "teacher_fwd": teacher_forward, "kd_term_x100": kd_term}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in modes.values():
        for _ in range(args.warmup):
            fn()
    sync()
    # Single steps, modes interleaved: neighbouring samples of two modes see the same load.
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds * args.steps):
        for name, fn in modes.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    med = {m: statistics.median(v) for m, v in times.items()}
    kd_term_s = med.pop("kd_term_x100") / 100

    expected = (med["teacher_fwd"] + med["kd_cache"]) / med["kd_cache"]
    measured = med["kd_online"] / med["kd_cache"]
    result = {
        "device": str(device) if device.type != "cpu" else f"cpu ({torch.get_num_threads()} "
                                                            "threads)",
        "student": args.student, "teacher": args.teacher, "batch": args.batch,
        "frames": args.frames, "size": args.size, "classes": args.classes,
        "student_gmacs_per_clip": count_gmacs(ce_student.net, frames=args.frames,
                                              size=args.size),
        "teacher_gmacs_per_clip": count_gmacs(teacher, frames=args.frames, size=args.size),
        "ms_per_step": {m: 1000 * t for m, t in med.items()},
        "kd_cache_overhead_vs_ce": med["kd_cache"] / med["ce"] - 1.0,
        "kd_term_ms": 1000 * kd_term_s,
        "kd_term_share_of_ce_step": kd_term_s / med["ce"],
        "online_over_cache_measured": measured,
        "online_over_cache_expected": expected,
        "speedup_gap": measured / expected - 1.0,
    }
    result = _conditions.record("bench_train", result, cond)
    if args.json:
        print(json.dumps(result))
        return result
    print(f"{result['device']}: student {args.student} "
          f"({result['student_gmacs_per_clip']:.3g} GMACs/clip), teacher {args.teacher} "
          f"({result['teacher_gmacs_per_clip']:.3g} GMACs/clip), batch {args.batch}, "
          f"{args.frames}x{args.size}x{args.size}, median of {args.rounds * args.steps} "
          "interleaved steps")
    for name, ms in result["ms_per_step"].items():
        print(f"  {name:<12} {ms:10.1f} ms/step")
    print(f"KD from the cache vs CE only: {100 * result['kd_cache_overhead_vs_ce']:+.1f}% "
          f"whole steps; the KD term alone (lookup + loss fwd/bwd) {result['kd_term_ms']:.3f} ms "
          f"= {100 * result['kd_term_share_of_ce_step']:.3f}% of a CE step (goal < 5%)")
    print(f"online KD / cached KD: measured {measured:.2f}x, expected (teacher fwd + student "
          f"step) / student step {expected:.2f}x, gap {100 * result['speedup_gap']:+.1f}% "
          "(goal within 10%)")
    return result


if __name__ == "__main__":
    main()
