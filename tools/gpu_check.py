"""Every GPU figure of the project from one run on one GPU machine (issue 19, section 5).

A GPU is lent for minutes, so this script is prepared and rehearsed on CPU (``--dry-run``: the
same code paths at toy sizes, only the CUDA calls themselves left out) and on the GPU run once,
in under 8 minutes on one H200. It writes ``gpu_check.json`` and ``gpu_check.md`` (a table)
under ``--out`` and exits 1 if any section failed (the others still report). Sections, with
vfn-base as teacher and vfl-nano as student at 8 x 224 x 224 (random weights):

- parity: float32 logits on the GPU vs the CPU on the shared parity case, TF32 off (<= 1e-4);
  bf16 autocast vs float32 logits as KL at tau 1 and 10 on random clips, teacher and student;
- teacher forward clips/s (bf16) at batch 32 and 64;
- decode clips/s per CPU worker (decode + crop/resize to uint8, what a training worker does);
- cache build views/s on synthetic 320x240 videos with 4, 8 and 15 decoding workers, start-up
  apart, against forward-only and against min(forward, workers x decode) (goal >= 0.9);
- student train step clips/s (bf16, batch 32): one student, and 9 students side by side from
  one batch; how many decoding workers keep one student fed;
- sweep: predicted speed-up of 9 cached students against 9 online-KD runs from the measured
  per-clip costs (goal > 4x), and the measured one (``build_cache`` + ``train_students`` against
  9 ``fit`` runs with the teacher online) on a small synthetic set;
- peak GPU memory of each; NCCL is reported as not measured when the machine has one GPU.

Preparing the run (on a machine with pip and network, in the repository root). The GPU machine
has python 3.12, torch 2.11, numpy, h5py, tqdm, click, fsspec, aiohttp, pyyaml, packaging and
typing_extensions, but neither PyAV nor zarr; their wheels travel in ``.whl/`` (git-ignored;
45 MB, which with the tree and the parity copy stays under the 64 MiB a call may carry):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        --platform manylinux1_x86_64 -d .whl \\
        av==18.1.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
    mkdir -p shared/parity && cp ../shared/parity/video_focalnet_tiny.pt shared/parity/

The parity file is found at ``shared/parity/`` inside the checkout (git-ignored; a ``shared/``
folder inside the checkout travels to the GPU machine with the working tree, ``../shared`` does
not), else at ``../shared/parity/``, or wherever ``--parity`` says; without it the script stops
before using the GPU. On the GPU machine (the device tool: ``carry: [".whl"]``):

    python3 tools/gpu_check.py --wheels .whl --out $OUT

which installs the wheels with ``pip install --no-index --no-deps --target`` into a temporary
folder and puts it on the path (decoding workers inherit it). Rehearsal on CPU, about a minute:

    python tools/gpu_check.py --dry-run --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARITY_FILE = Path("parity") / "video_focalnet_tiny.pt"
SWEEP_ALPHAS, SWEEP_TAUS = (0.3, 0.5, 0.7), (5.0, 10.0, 15.0)
SECTIONS = ("parity", "bf16", "teacher_forward", "decode", "build", "student_step", "sweep")
NEEDS = {"build": ("teacher_forward", "decode")}  # its bound is made of their rates


def resolve_sections(text: str | None) -> tuple[str, ...]:
    """Names from ``--sections`` (all when None) plus what they need, in run order."""
    asked = SECTIONS if text is None else tuple(filter(None, text.split(",")))
    unknown = [name for name in asked if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"gpu_check: unknown section(s) {', '.join(unknown)}; "
                         f"known: {', '.join(SECTIONS)}")
    wanted = set(asked) | {n for name in asked for n in NEEDS.get(name, ())}
    return tuple(name for name in SECTIONS if name in wanted)


@dataclass(frozen=True)
class Sizes:
    """What the run measures at; ``FULL`` on the GPU, ``DRY`` for the CPU rehearsal."""

    frames: int = 8
    size: int = 224
    teacher: str = "vfn-base"
    student: str = "vfl-nano"
    teacher_opts: dict = field(default_factory=dict)
    student_opts: dict = field(default_factory=dict)
    classes: int = 101
    forward_batches: tuple[int, ...] = (32, 64)
    step_batch: int = 32
    students: int = 9
    workers: tuple[int, ...] = (4, 8, 15)
    video: tuple[int, int] = (320, 240)
    video_frames: int = 48
    synth_classes: int = 6
    videos_per_class: int = 24      # split 1 keeps about 2/3 for training
    build_views: int = 8            # views per training video in the build measurement
    sweep_epochs: int = 2           # E = V for the measured sweep
    decode_clips: int = 64
    warmup: int = 2
    reps: int = 5


FULL = Sizes()
DRY = Sizes(frames=4, size=32, teacher_opts={"embed_dim": 16, "depths": [1, 1, 1, 1]},
            student_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]}, classes=5,
            forward_batches=(2, 4), step_batch=4, workers=(1, 2), video=(64, 48),
            video_frames=16, synth_classes=2, videos_per_class=3, build_views=2,
            sweep_epochs=1, decode_clips=4, warmup=1, reps=1)


# -- preparation ---------------------------------------------------------------------------------

def find_parity(explicit: str | None = None) -> Path:
    """The shared parity case: ``explicit``, else ./shared/parity, else ../shared/parity."""
    candidates = ([Path(explicit)] if explicit else
                  [ROOT / "shared" / PARITY_FILE, ROOT.parent / "shared" / PARITY_FILE])
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit("gpu_check: parity file not found at " + " or ".join(map(str, candidates))
                     + "; copy it into the checkout: mkdir -p shared/parity && cp "
                     "../shared/parity/video_focalnet_tiny.pt shared/parity/")


def wheel_install_command(wheels: Path, target: Path) -> list[str]:
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"gpu_check: no wheels in {wheels}; see this script's docstring")
    return [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
            "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target), *files]


def install_wheels(wheels: Path, target: Path) -> None:
    """Install the carried wheels into ``target`` and put it first on this process's path and
    on PYTHONPATH (for decoding workers started by spawn)."""
    subprocess.run(wheel_install_command(wheels, target), check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(target), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


# -- measuring -----------------------------------------------------------------------------------

class Clock:
    """Timing and peak memory on one device; on CPU the CUDA calls are skipped and memory is
    reported as None."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        if not self.cuda:
            return None
        return round(self.torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 2)

    def median_s(self, fn: Callable[[], Any], *, warmup: int, reps: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def kl_tau(reference, other, tau: float) -> float:
    """tau^2 * mean over the batch of KL(softmax(reference/tau) || softmax(other/tau))."""
    import torch.nn.functional as F

    log_p = F.log_softmax(reference.double() / tau, -1)
    log_q = F.log_softmax(other.double() / tau, -1)
    return float(tau ** 2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean())


def predicted_sweep(*, decode_s: float, workers: int, teacher_s: float, step_s: float,
                    runs: int, views: int, epochs: int, group_step_s: float | None = None
                    ) -> dict:
    """Speed-up of a cached sweep over ``runs`` online-KD runs, from per-clip seconds.

    On a GPU the decoding workers run beside the device, so per clip a stage costs the larger of
    decoding (``decode_s / workers``) and the device work: online, each of ``runs`` runs pays
    max(D/w, T + S) per clip-epoch; cached, the build pays max(D/w, T) per view (V views per
    video) and the sweep max(D/w, N S) per clip-epoch, where N S is ``group_step_s`` when the N
    students' side-by-side step was measured (it need not be N times one student's).
    """
    feed = decode_s / workers
    group = runs * step_s if group_step_s is None else group_step_s
    online = runs * epochs * max(feed, teacher_s + step_s)
    cached = views * max(feed, teacher_s) + epochs * max(feed, group)
    return {"online_s_per_clip": online, "cached_s_per_clip": cached,
            "speedup": online / cached}


# -- sections ------------------------------------------------------------------------------------

def check_parity(clock: Clock, parity_path: Path) -> dict:
    import torch

    from dvfl_cache.models import from_reference

    case = torch.load(parity_path, weights_only=True)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = from_reference(case["config"], case["state_dict"]).eval()
        with torch.inference_mode():
            cpu = model(case["input"])
            dev = model.to(clock.device)(case["input"].to(clock.device)).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {"device_vs_cpu_max_abs": float((dev - cpu).abs().max()),
            "device_vs_reference_max_abs": float((dev - case["logits"]).abs().max()),
            "cpu_vs_reference_max_abs": float((cpu - case["logits"]).abs().max()),
            "goal": 1e-4, "tf32": False}


def check_bf16(clock: Clock, models: dict, sizes: Sizes) -> dict:
    import torch

    out = {}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, sizes.frames, 3, sizes.size, sizes.size, generator=g).to(clock.device)
    for name, model in models.items():
        with torch.inference_mode():
            fp32 = model(x).float()
            with torch.autocast(clock.device.type, dtype=torch.bfloat16):
                bf16 = model(x).float()
        out[name] = {"kl_tau1": kl_tau(fp32, bf16, 1.0), "kl_tau10": kl_tau(fp32, bf16, 10.0),
                     "max_abs_logit_diff": float((fp32 - bf16).abs().max()),
                     "logit_std": float(fp32.std())}
    return out


def teacher_forward(clock: Clock, teacher, sizes: Sizes) -> dict:
    import torch

    rows = {}
    for batch in sizes.forward_batches:
        x = torch.randn(batch, sizes.frames, 3, sizes.size, sizes.size, device=clock.device)
        clock.reset_peak()

        def run():  # bf16 where the build uses it (CUDA), so the two rates compare
            with torch.inference_mode(), torch.autocast(clock.device.type, dtype=torch.bfloat16,
                                                        enabled=clock.cuda):
                teacher(x)

        sec = clock.median_s(run, warmup=sizes.warmup, reps=sizes.reps)
        rows[str(batch)] = {"clips_s": batch / sec, "peak_gib": clock.peak_gib()}
        del x
    return rows


def decode_rate(index, sizes: Sizes) -> dict:
    """Clips/s of one process doing a training worker's job: open, sample a view, decode its
    frames, crop and resize to uint8."""
    from dvfl_cache.data import open_video
    from dvfl_cache.data.transforms import view_pixels
    from dvfl_cache.data.views import ViewSampler

    sampler = ViewSampler(num_frames=sizes.frames, mode="train", seed=0)
    n = min(sizes.decode_clips, 4 * len(index))

    def one(i: int) -> None:
        video = i % len(index)
        with open_video(index.abspath(video)) as vid:
            view = sampler.sample(video, i // len(index), vid.info)
            view_pixels(vid.frames(list(view.frames)), view, sizes.size)

    one(0)
    start = time.perf_counter()
    for i in range(n):
        one(i)
    return {"clips_s_per_worker": n / (time.perf_counter() - start), "clips": n}


def cache_build(clock: Clock, index, work: Path, sizes: Sizes, forward_clips_s: float,
                decode_per_worker: float) -> dict:
    from dvfl_cache.cache.build import BuildConfig, build_cache

    rows = {}
    for workers in sizes.workers:
        cfg = BuildConfig(out=str(work / f"build_w{workers}.zarr"), teacher=sizes.teacher,
                          random_weights=True, teacher_opts=sizes.teacher_opts,
                          views_per_video=sizes.build_views, frames=sizes.frames,
                          size=sizes.size, batch_size=sizes.step_batch, workers=workers,
                          device=str(clock.device), overwrite=True)
        marks: list[tuple[float, int]] = []
        clock.reset_peak()
        start = time.perf_counter()
        result = build_cache(cfg, index, progress=lambda k: marks.append(
            (time.perf_counter(), k)))
        total = time.perf_counter() - start
        # Steady state: from the first batch out to the last, so teacher construction, store
        # creation and the workers' start-up are reported apart.
        steady = ((sum(k for _, k in marks[1:]) / (marks[-1][0] - marks[0][0]))
                  if len(marks) > 2 else result.rows_written / total)
        bound = min(forward_clips_s, workers * decode_per_worker)
        rows[str(workers)] = {
            "views": result.rows_written, "wall_s": total,
            "startup_s": marks[0][0] - start if marks else None,
            "views_s": result.rows_written / total, "steady_views_s": steady,
            "build_over_forward": steady / forward_clips_s,
            "bound_views_s": bound, "build_over_bound": steady / bound,
            "peak_gib": clock.peak_gib()}
    return rows


def student_steps(clock: Clock, sizes: Sizes) -> dict:
    import torch

    from dvfl_train.config import FitConfig
    from dvfl_train.student import StudentSpec, build_student, train_step

    cfg = FitConfig(dataset="check", data_root=".", out_dir="check", num_frames=sizes.frames,
                    size=sizes.size, model=sizes.student, model_opts=sizes.student_opts,
                    batch_size=sizes.step_batch, device=str(clock.device))
    amp = clock.cuda
    g = torch.Generator().manual_seed(2)
    x = torch.randn(sizes.step_batch, sizes.frames, 3, sizes.size, sizes.size, generator=g)
    y = torch.randint(sizes.classes, (sizes.step_batch,), generator=g)
    t = torch.randn(sizes.step_batch, sizes.classes, generator=g)
    x, y, t = x.to(clock.device), y.to(clock.device), t.to(clock.device)
    out = {}
    for count in (1, sizes.students):
        clock.reset_peak()
        students = []
        for i in range(count):
            spec = StudentSpec(alpha=0.5, tau=10.0, beta=0.0, seed=i, out_dir=f"check/s{i}")
            students.append(build_student(spec.config(cfg), spec, num_classes=sizes.classes,
                                          device=clock.device))

        def step():
            for s in students:
                train_step(s, x, y, teacher_logits=t, lr=0.01, amp=amp)

        sec = clock.median_s(step, warmup=sizes.warmup, reps=sizes.reps)
        out[str(count)] = {"students": count, "batch_s": sec,
                           "clips_s_per_student": sizes.step_batch / sec,
                           "student_steps_clips_s": count * sizes.step_batch / sec,
                           "peak_gib": clock.peak_gib()}
        del students
    return out


def measured_sweep(clock: Clock, index_root: Path, work: Path, sizes: Sizes,
                   workers: int) -> dict:
    """9 online-KD ``fit`` runs against ``build_cache`` + one ``train_students`` call."""
    import torch

    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.models import create_model, save_checkpoint
    from dvfl_train.config import FitConfig
    from dvfl_train.student import StudentSpec
    from dvfl_train.trainer import fit, train_students

    torch.manual_seed(0)
    teacher = create_model(sizes.teacher, num_classes=sizes.synth_classes,
                           num_frames=sizes.frames, **sizes.teacher_opts)
    save_checkpoint(work / "teacher.pt", teacher)
    del teacher
    epochs = sizes.sweep_epochs
    build_cfg = BuildConfig(out=str(work / "sweep.zarr"), teacher=str(work / "teacher.pt"),
                            views_per_video=epochs, frames=sizes.frames, size=sizes.size,
                            batch_size=sizes.step_batch, workers=workers,
                            device=str(clock.device), overwrite=True)
    base = FitConfig(dataset="ucf101", data_root=str(index_root), out_dir=str(work / "runs"),
                     num_frames=sizes.frames, size=sizes.size, model=sizes.student,
                     model_opts=sizes.student_opts, epochs=epochs, warmup_epochs=0,
                     batch_size=sizes.step_batch, workers=workers, device=str(clock.device),
                     val_subset=1, seed=0)
    from dvfl_cache.data.readers import build_index

    index = build_index("ucf101", index_root, split=1, subset="train")
    clock.reset_peak()
    start = time.perf_counter()
    build_cache(build_cfg, index)
    build_s = time.perf_counter() - start
    specs = [StudentSpec(alpha=a, tau=t, beta=0.0, seed=0,
                         out_dir=str(work / "cached" / f"a{a:g}_t{t:g}"))
             for a in SWEEP_ALPHAS for t in SWEEP_TAUS][:sizes.students]
    start = time.perf_counter()
    summaries = train_students(dataclasses.replace(base, cache=build_cfg.out), specs)
    sweep_s = time.perf_counter() - start
    cached_peak = clock.peak_gib()
    online_s, online_loop_s = 0.0, 0.0
    clock.reset_peak()
    for spec in specs:
        cfg = dataclasses.replace(base, alpha=spec.alpha, tau=spec.tau,
                                  teacher_weights=str(work / "teacher.pt"),
                                  out_dir=str(work / "online" / Path(spec.out_dir).name))
        start = time.perf_counter()
        online_loop_s += fit(cfg)["train_time_s"]
        online_s += time.perf_counter() - start
    return {"runs": len(specs), "train_videos": len(index), "epochs": epochs, "views": epochs,
            "build_s": build_s, "cached_sweep_s": sweep_s, "online_s": online_s,
            "speedup": online_s / (build_s + sweep_s),
            "speedup_loops_only": online_loop_s / (build_s + summaries[0]["train_time_s"]),
            "peak_gib_cached": cached_peak, "peak_gib_online": clock.peak_gib()}


# -- report --------------------------------------------------------------------------------------

def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a (CPU)"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else \
            f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def markdown(result: dict) -> str:
    r, lines = result, []
    lines += [f"# gpu_check ({'dry run on CPU, toy sizes' if r['dry_run'] else r['device_name']})",
              "", f"torch {r['torch']}, {r['cpu_cores']} CPU cores, {r['wall_s']:.0f} s wall, "
              f"sizes {r['sizes']['frames']}x{r['sizes']['size']}x{r['sizes']['size']}", "",
              "| figure | value | goal | peak GPU GiB |", "|---|---:|---|---:|"]

    def row(name, value, goal="", peak=None):
        lines.append(f"| {name} | {_fmt(value)} | {goal} | {_fmt(peak) if r['cuda'] else '-'} |")

    if "parity" in r:
        p = r["parity"]
        row("parity: float32 device vs CPU, max abs (TF32 off)", p["device_vs_cpu_max_abs"],
            "<= 1e-4")
        row("parity: float32 device vs reference logits", p["device_vs_reference_max_abs"],
            "<= 1e-4")
    for name, kl in r.get("bf16", {}).items():
        row(f"bf16 vs fp32 KL, {name}, tau 1", kl["kl_tau1"])
        row(f"bf16 vs fp32 KL, {name}, tau 10", kl["kl_tau10"])
    for batch, f in r.get("teacher_forward", {}).items():
        row(f"teacher forward clips/s (bf16), batch {batch}", f["clips_s"], "", f["peak_gib"])
    if "decode" in r:
        row("decode clips/s per CPU worker", r["decode"]["clips_s_per_worker"])
    for workers, b in r.get("build", {}).items():
        row(f"cache build views/s, {workers} workers (steady; start-up {_fmt(b['startup_s'])} s)",
            b["steady_views_s"], "", b["peak_gib"])
        row(f"build / forward-only, {workers} workers", b["build_over_forward"], ">= 0.9")
        row(f"build / min(forward, decode x workers), {workers} workers", b["build_over_bound"],
            ">= 0.9")
    for count, s in r.get("student_step", {}).items():
        row(f"student train step clips/s per student (bf16, batch {r['sizes']['step_batch']}), "
            f"{count} side by side", s["clips_s_per_student"], "", s["peak_gib"])
    if "feeding" in r:
        row("decoding workers that keep one student fed", r["feeding"]["workers_needed"])
    if "sweep_predicted" in r:
        row(f"sweep speed-up, predicted ({r['sweep_predicted']['workers']} workers)",
            r["sweep_predicted"]["speedup"], "> 4x")
    if "sweep_measured" in r:
        m = r["sweep_measured"]
        row(f"sweep speed-up, measured ({m['train_videos']} videos, E = V = {m['epochs']})",
            m["speedup"], "> 4x", m["peak_gib_online"])
        row("sweep speed-up, measured, epoch loops only", m["speedup_loops_only"], "> 4x",
            m["peak_gib_cached"])
    lines.append(f"| NCCL | {r['nccl']} | | |")
    for name, err in r["errors"].items():
        lines.append(f"| **{name} FAILED** | {err} | | |")
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------

def run_check(*, dry_run: bool, out: Path, parity: Path, sizes: Sizes,
              sections: tuple[str, ...] = SECTIONS, log=print) -> dict:
    import torch

    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.synth import SynthConfig, write_synth
    from dvfl_cache.models import create_model

    device = torch.device("cpu" if dry_run else "cuda")
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device; use --dry-run on a CPU machine")
    clock = Clock(device)
    cond = _conditions.start("gpu_check")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "dry_run": dry_run, "cuda": clock.cuda, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if clock.cuda else "cpu",
        "cpu_cores": os.cpu_count(), "sizes": dataclasses.asdict(sizes), "errors": {},
        "parity_file": str(parity)}
    gpus = torch.cuda.device_count() if clock.cuda else 0
    result["nccl"] = (f"not measured: {gpus} GPU(s) here, NCCL data-parallel needs two"
                      if gpus < 2 else f"not measured by this script ({gpus} GPUs present)")
    want = sections.__contains__

    @contextlib.contextmanager
    def section(name: str):
        log(f"[{time.perf_counter() - started:6.1f} s] {name}")
        try:
            yield
        except Exception as exc:  # one failed section must not cost the others' figures
            traceback.print_exc()
            result["errors"][name] = f"{type(exc).__name__}: {exc}"

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        if want("parity"):
            with section("parity"):
                result["parity"] = check_parity(clock, parity)
        forward_clips_s = None
        if want("bf16") or want("teacher_forward"):
            torch.manual_seed(0)
            teacher = create_model(sizes.teacher, num_classes=sizes.classes,
                                   num_frames=sizes.frames, **sizes.teacher_opts).eval().to(device)
            student = create_model(sizes.student, num_classes=sizes.classes,
                                   num_frames=sizes.frames, **sizes.student_opts).eval().to(device)
            if want("bf16"):
                with section("bf16"):
                    result["bf16"] = check_bf16(clock, {"teacher": teacher, "student": student},
                                                sizes)
            if want("teacher_forward"):
                with section("teacher_forward"):
                    rates = teacher_forward(clock, teacher, sizes)
                    result["teacher_forward"] = rates
                    # The build's batch is the step batch; the first measured one otherwise.
                    forward_clips_s = rates.get(str(sizes.step_batch),
                                                next(iter(rates.values())))["clips_s"]
            del teacher, student
        data = work / "data"
        if any(want(name) for name in ("decode", "build", "sweep")):
            with section("synthetic videos"):
                write_synth(data, SynthConfig(classes=sizes.synth_classes,
                                              videos_per_class=sizes.videos_per_class,
                                              width=sizes.video[0], height=sizes.video[1],
                                              frames=sizes.video_frames, seed=0, format="avi"),
                            workers=max(1, min(16, os.cpu_count() or 1)))
                index = build_index("ucf101", data, split=1, subset="train")
                result["videos"] = {"train": len(index), "size": list(sizes.video)}
        if want("decode"):
            with section("decode"):
                result["decode"] = decode_rate(index, sizes)
        decode_per_worker = result.get("decode", {}).get("clips_s_per_worker")
        if want("build"):
            with section("build"):
                if not (forward_clips_s and decode_per_worker):
                    raise RuntimeError("its bound needs the teacher forward and decode rates, "
                                       "and one of those sections failed")
                result["build"] = cache_build(clock, index, work, sizes, forward_clips_s,
                                              decode_per_worker)
        if want("student_step"):
            with section("student_step"):
                result["student_step"] = student_steps(clock, sizes)
        one = result.get("student_step", {}).get("1")
        group = result.get("student_step", {}).get(str(sizes.students))
        if one and decode_per_worker:
            result["feeding"] = {
                "student_clips_s": one["clips_s_per_student"],
                "workers_needed": math.ceil(one["clips_s_per_student"] / decode_per_worker)}
        if one and forward_clips_s and decode_per_worker:
            result["sweep_predicted"] = {
                "workers": max(sizes.workers),
                **predicted_sweep(decode_s=1 / decode_per_worker, workers=max(sizes.workers),
                                  teacher_s=1 / forward_clips_s,
                                  step_s=1 / one["clips_s_per_student"], runs=sizes.students,
                                  views=sizes.sweep_epochs, epochs=sizes.sweep_epochs,
                                  group_step_s=group["batch_s"] / sizes.step_batch
                                  if group else None)}
        if want("sweep"):
            with section("sweep"):
                result["sweep_measured"] = measured_sweep(clock, data, work, sizes,
                                                          max(sizes.workers))
    result["wall_s"] = time.perf_counter() - started
    result = _conditions.record("gpu_check", result, cond)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(result))
    log(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="run everything on the CPU at toy sizes (the rehearsal)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"),
                        help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="install these wheels first (PyAV, zarr and their needs)")
    parser.add_argument("--parity", default=None, help="the parity file (default: see above)")
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; build "
                             "brings teacher_forward and decode)")
    args = parser.parse_args(argv)
    sections = resolve_sections(args.sections)
    parity = find_parity(args.parity)  # before any GPU time is spent
    if args.wheels is not None:
        install_wheels(args.wheels, Path(tempfile.mkdtemp(prefix="gpu_check_site_")))
    sys.path.insert(0, str(ROOT))
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = run_check(dry_run=args.dry_run, out=args.out, parity=parity,
                       sizes=DRY if args.dry_run else FULL, sections=sections,
                       log=lambda msg: print(msg, flush=True))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
