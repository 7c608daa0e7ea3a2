"""Bad input is one line and a non-zero exit, before any work (issue 25): non-finite numbers,
files that are no checkpoint, contradictory teacher and mixing options."""

from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner

from conftest import write_counter_video

TINY = ["--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1"]


def _one_line(result, exit_code: int, *needles: str) -> str:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output, result.output
    if exit_code == 1:  # one error line (progress bars may precede it)
        assert sum(ln.startswith("Error: ") for ln in result.output.splitlines()) == 1
        assert result.output.strip().splitlines()[-1].startswith("Error: "), result.output
    else:  # a usage error
        assert result.output.startswith("Usage:"), result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


def _clis():
    from dvfl_cache.cli import main as cache_cli
    from dvfl_train.cli import main as train_cli

    return cache_cli, train_cli


# -- non-finite numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("cli, command, option, value", [
    ("cache", "build", "--mixup", "nan"), ("cache", "build", "--mixup", "inf"),
    ("cache", "build", "--cutmix", "nan"), ("train", "fit", "--mixup", "inf"),
    ("train", "fit", "--cutmix", "inf"), ("train", "fit", "--lr", "inf"),
    ("train", "fit", "--mix-prob", "nan"), ("train", "sweep", "--alphas", "0.3,nan"),
    ("cache", "build", "--area", "0.5,inf"),
])
def test_non_finite_numbers_are_one_line(cli, command, option, value, synth_root, tmp_path):
    cache_cli, train_cli = _clis()
    data = ["--dataset", "ucf101", "--root", str(synth_root), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cache_cli if cli == "cache" else train_cli,
                                [command, *data, option, value])
    _one_line(result, 2, option, "is not a finite number")
    assert not any(tmp_path.iterdir())


def _float_params():
    """Every float option (or list of floats) of every command of both CLIs."""
    from dvfl_cache.commands.options import FiniteFloat

    for cli in _clis():
        ctx = click.Context(cli)
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            for p in command.params:
                item = getattr(p.type, "item", None)
                if isinstance(p.type, (click.FloatRange, FiniteFloat)) or item is float \
                        or p.type is click.FLOAT:
                    yield f"{name} {p.opts[0]}", p


def test_every_float_option_refuses_nan_and_inf():
    params = dict(_float_params())
    assert {"build --mixup", "fit --lr", "sweep --alphas", "build --area",
            "index --hold-out"} <= set(params)
    for where, p in params.items():
        count = getattr(p.type, "count", None) or (2 if getattr(p.type, "item", None) else 1)
        for text in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter) as info:  # inf may fail the range first
                p.type.convert(",".join([text] * count), p, None)
            assert text != "nan" or "not a finite number" in str(info.value), where


def test_a_config_file_with_nan_is_refused():
    from dvfl_train.config import ConfigError, FitConfig

    with pytest.raises(ConfigError, match="base_lr=nan must be a finite number"):
        FitConfig.from_dict({"version": 3, "dataset": "ucf101", "data_root": "d",
                             "out_dir": "o", "base_lr": float("nan")}).validate()


# -- files that are no checkpoint -----------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Three files named .pt that are no checkpoint, and a video to explain/predict."""
    d = tmp_path_factory.mktemp("bad")
    (d / "text.pt").write_text("hello, this is a text file\n" * 20)
    (d / "random.pt").write_bytes(os.urandom(4096))
    video = write_counter_video(d / "clip.avi", 8, codec="mpeg4")
    (d / "video.pt").write_bytes(video.read_bytes())
    return d


@pytest.mark.parametrize("kind", ["text", "random", "video"])
@pytest.mark.parametrize("command", ["explain", "predict", "eval", "fit --init",
                                     "fit --teacher-weights", "build --teacher",
                                     "build --weights"])
def test_a_file_that_is_no_checkpoint_is_one_line_everywhere(command, kind, bad_files,
                                                             synth_root, tmp_path):
    cache_cli, train_cli = _clis()
    bad = str(bad_files / f"{kind}.pt")
    data = ["--dataset", "ucf101", "--root", str(synth_root)]
    video = str(bad_files / "clip.avi")
    fit = ["fit", *data, *TINY, "--out", str(tmp_path / "r"), "--frames", "2", "--size", "32",
           "--epochs", "1", "--warmup-epochs", "0", "--workers", "0", "--device", "cpu",
           "--batch-size", "4"]
    build = ["build", *data, "--out", str(tmp_path / "c.zarr"), "--frames", "2", "--size", "32",
             "--workers", "0", "--device", "cpu"]
    cli, args = {
        "explain": (train_cli, ["explain", video, "--checkpoint", bad, "--out",
                                str(tmp_path / "x")]),
        "predict": (train_cli, ["predict", video, "--checkpoint", bad]),
        "eval": (train_cli, ["eval", "--checkpoint", bad, *data, "--workers", "0"]),
        "fit --init": (train_cli, [*fit, "--init", bad]),
        "fit --teacher-weights": (train_cli, [*fit, "--teacher-weights", bad]),
        "build --teacher": (cache_cli, [*build, "--teacher", bad]),
        "build --weights": (cache_cli, [*build, "--teacher", "vfl-nano", "--weights", bad]),
    }[command]
    result = CliRunner().invoke(cli, args)
    out = _one_line(result, 1, f"{bad}: not a PyTorch checkpoint (")
    assert "allow-list" not in out


# -- mixing and ensembles that would be recorded but do nothing -----------------------------------

@pytest.mark.parametrize("command", ["fit", "sweep"])
@pytest.mark.parametrize("extra, code, message", [
    (["--cache", "{d}/mixed.zarr", "--mix-prob", "0.5"], 1,
     "mix_prob=0.5 does nothing without mixup or cutmix; a --cache replays its own mixing"),
    (["--mix-prob", "0.3"], 1, "mix_prob=0.3 does nothing without mixup or cutmix"),
    (["--cache", "{d}/a.zarr", "--teacher-mix", "mean-probs"], 2,
     "--teacher-mix: combines the logits of several --cache stores; 1 given"),
    (["--teacher-mix", "mean-logits"], 2, "several --cache stores; 0 given"),
    (["--cache", "{d}/a.zarr", "--cache", "{d}/./a.zarr"], 1, "a.zarr' is given twice"),
])
def test_options_that_would_do_nothing_are_refused(command, extra, code, message, tmp_path):
    _, train_cli = _clis()
    args = [command, "--dataset", "ucf101", "--root", str(tmp_path), "--out",
            str(tmp_path / "r"), *(a.format(d=tmp_path) for a in extra)]
    if command == "sweep":
        args += ["--alphas", "0.5"]
    _one_line(CliRunner().invoke(train_cli, args), code, message)
    assert not (tmp_path / "r").exists()


# -- a loss that stops being finite ---------------------------------------------------------------

def _strict_json(path):
    """JSON as any reader sees it: bare NaN or Infinity is an error."""
    import json

    def refuse(name):
        raise ValueError(f"{path}: bare {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


FIT_TINY = ["--frames", "2", "--size", "32", *TINY, "--warmup-epochs", "0", "--batch-size", "4",
            "--workers", "0", "--device", "cpu"]


def test_fit_stops_at_the_first_non_finite_loss(synth_root, tmp_path):
    _, train_cli = _clis()
    out = tmp_path / "run"
    result = CliRunner().invoke(train_cli, ["fit", "--dataset", "ucf101", "--root",
                                            str(synth_root), "--out", str(out), *FIT_TINY,
                                            "--epochs", "3", "--lr", "1e30"])
    # 8 videos in batches of 4: step 1 is finite (the weights are still the init), step 2 not
    _one_line(result, 1, f"{out}: the loss became nan at epoch 1, step 2; training stopped "
                         "there (before any checkpoint)")
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()
    summary = _strict_json(out / "summary.json")
    assert summary["diverged"] == {"epoch": 1, "step": 2, "loss": "nan"}
    assert summary["epochs"] == 0 and summary["best_val_top1"] is None
    _strict_json(out / "config.json")


def test_metrics_and_summaries_write_null_for_nan(tmp_path):
    from dvfl_train.checkpoint import RunDir

    run = RunDir(tmp_path)
    run.append_metrics({"type": "step", "epoch": 1, "loss": float("nan"), "kd": float("inf")})
    run.write_summary({"best_val_top1": float("nan"), "final": {"loss": float("-inf")}})
    import json

    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(line, parse_constant=pytest.fail) == {
        "type": "step", "epoch": 1, "loss": None, "kd": None}
    assert _strict_json(tmp_path / "summary.json") == {"best_val_top1": None,
                                                       "final": {"loss": None}}


def test_a_sweep_student_that_diverges_stops_and_the_others_go_on(synth_root, tmp_path,
                                                                  monkeypatch):
    """Student ce_s2's loss is made NaN from its second step; ce_s1 trains to the end."""
    import torch

    import dvfl_train.trainer as trainer

    real = trainer.train_step

    def step(student, *args, **kwargs):
        parts, logits = real(student, *args, **kwargs)
        if student.spec.label == "ce_s2" and student.step >= 2:
            parts = {**parts, "loss": torch.tensor(float("nan"))}
        return parts, logits

    monkeypatch.setattr(trainer, "train_step", step)
    _, train_cli = _clis()
    out = tmp_path / "sweep"
    result = CliRunner().invoke(train_cli, [
        "sweep", "--dataset", "ucf101", "--root", str(synth_root), "--out", str(out), *FIT_TINY,
        "--epochs", "2", "--alphas", "0", "--seeds", "1,2", "--eval-views", "1x1"])
    _one_line(result, 1, "1 student(s) diverged: ", f"{out / 'runs' / 'ce_s2'}: the loss became "
              "nan at epoch 1, step 2", "the other students are trained (--resume skips them)")
    good, bad = out / "runs" / "ce_s1", out / "runs" / "ce_s2"
    assert _strict_json(good / "summary.json")["epochs"] == 2 and (good / "best.pt").exists()
    assert _strict_json(bad / "summary.json")["diverged"]["step"] == 2
    assert not (bad / "last.pt").exists() and not (bad / "best.pt").exists()
    assert not (out / "results.csv").exists()


# -- build --views-from: refused before the teacher runs ------------------------------------------

@pytest.fixture(scope="module")
def views_source(synth_index, tmp_path_factory):
    """A tiny store over split 1's training videos, to take views from."""
    from dvfl_cache.cache.build import BuildConfig, build_cache

    out = tmp_path_factory.mktemp("views") / "a.zarr"
    build_cache(BuildConfig(out=str(out), teacher="vfl-nano", random_weights=True,
                            teacher_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]}, frames=2,
                            size=32, workers=0, device="cpu", dtype="float32"), synth_index)
    return out


@pytest.mark.parametrize("data, message", [
    (["--subset", "test"], "subset 'train' (run expects 'test')"),
    (["--split", "2"], "split 1 (run expects 2)"),
])
def test_views_from_another_dataset_is_refused_before_the_teacher_runs(
        data, message, views_source, synth_root, tmp_path, monkeypatch):
    import dvfl_cache.cache.build as build

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(build, "prepare", no_teacher)
    cache_cli, _ = _clis()
    out = tmp_path / "b.zarr"
    result = CliRunner().invoke(cache_cli, [
        "build", "--dataset", "ucf101", "--root", str(synth_root), *data, "--teacher",
        "vfl-nano", "--random-weights", "--views-from", str(views_source), "--out", str(out),
        "--workers", "0", "--device", "cpu"])
    _one_line(result, 1, f"--views-from {views_source}: cache built for another run: ", message,
              "its views are of other videos than this build's, so nothing was built")
    assert not out.exists()


def test_views_from_its_own_out_is_refused(views_source, synth_root):
    from dvfl_cache.cache.store import CacheReader

    before = CacheReader(views_source).meta.to_dict()
    cache_cli, _ = _clis()
    for same in (str(views_source), f"{views_source.parent}/./{views_source.name}/"):
        result = CliRunner().invoke(cache_cli, [
            "build", "--dataset", "ucf101", "--root", str(synth_root), "--teacher", "vfl-nano",
            "--random-weights", "--views-from", str(views_source), "--out", same,
            "--overwrite", "--workers", "0", "--device", "cpu"])
        _one_line(result, 1, "is the --views-from store: a store cannot be rebuilt over its "
                             "own views")
    assert CacheReader(views_source).meta.to_dict() == before


# -- extend: the teacher named by what differs, equivalent spellings accepted ---------------------

TEACHER_TINY = ["--teacher-opt", "embed_dim=8", "--teacher-opt", "depths=1,1,1,1"]


def _store_args(synth_root, out, *teacher):
    return ["build", "--dataset", "ucf101", "--root", str(synth_root), *teacher, "--frames",
            "2", "--size", "32", "--workers", "0", "--device", "cpu", "--out", str(out)]


def _extend_args(synth_root, store, *teacher):
    return ["extend", str(store), "--dataset", "ucf101", "--root", str(synth_root), *teacher,
            "--views-per-video", "2", "--workers", "0", "--device", "cpu"]


def test_extend_names_the_first_differing_teacher_field(synth_root, tmp_path):
    cache_cli, _ = _clis()
    store = tmp_path / "s.zarr"
    random = ["--teacher", "vfl-nano", "--random-weights", *TEACHER_TINY]
    result = CliRunner().invoke(cache_cli, _store_args(synth_root, store, *random,
                                                       "--teacher-opt", "img_size=32"))
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cache_cli, _extend_args(synth_root, store, *random))
    _one_line(result, 1, "extend must run the store's teacher on its videos; "
                         "teacher.config.img_size differs: stored 32, given 224")


def test_extend_accepts_another_spelling_of_the_stores_teacher(synth_root, tmp_path):
    import torch

    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.models import create_model, save_checkpoint

    for seed, name in ((0, "t.pt"), (1, "other.pt")):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / name, create_model(
            "vfl-nano", num_classes=4, num_frames=2, img_size=32, embed_dim=8,
            depths=[1, 1, 1, 1]))
    cache_cli, _ = _clis()
    store = tmp_path / "s.zarr"
    result = CliRunner().invoke(cache_cli, _store_args(synth_root, store, "--teacher",
                                                       str(tmp_path / "t.pt")))
    assert result.exit_code == 0, result.output
    before = CacheReader(store).meta.teacher
    # the registry name with the checkpoint as --weights: img_size 224 (unused by the network)
    spelled = ["--teacher", "vfl-nano", *TEACHER_TINY]
    result = CliRunner().invoke(cache_cli, _extend_args(
        synth_root, store, *spelled, "--weights", str(tmp_path / "other.pt")))
    _one_line(result, 1, "teacher.weights_sha256 differs")
    result = CliRunner().invoke(cache_cli, _extend_args(
        synth_root, store, *spelled, "--weights", str(tmp_path / "t.pt")))
    assert result.exit_code == 0, result.output
    after = CacheReader(store)
    assert after.complete and after.meta.views_per_video == 2 and after.meta.teacher == before


# -- fit and sweep read a cache in object storage with --storage-option ---------------------------

@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_fit_and_sweep_read_an_s3_cache_by_storage_option(command, synth_root, synth_index,
                                                          bucket, s3_endpoint, tmp_path,
                                                          monkeypatch):
    import json

    from dvfl_cache.cache.build import BuildConfig, build_cache

    url = f"{bucket}/c.zarr"
    build_cache(BuildConfig(out=url, teacher="vfl-nano", random_weights=True,
                            teacher_opts={"embed_dim": 8, "depths": [1, 1, 1, 1]}, frames=2,
                            size=32, workers=0, device="cpu", dtype="float32",
                            storage_options={"endpoint_url": s3_endpoint}), synth_index)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)  # where and who: only on the command line
    secret = "s3cr3t-for-this-test"
    out = tmp_path / "run"
    args = [command, "--dataset", "ucf101", "--root", str(synth_root), "--cache", url,
            *FIT_TINY, "--epochs", "1", "--out", str(out),
            "--storage-option", f"endpoint_url={s3_endpoint}",
            "--storage-option", "key=testing", "--storage-option", f"secret={secret}"]
    if command == "sweep":
        args += ["--alphas", "0.5", "--no-baseline", "--eval-views", "1x1"]
    _, train_cli = _clis()
    result = CliRunner().invoke(train_cli, args)
    assert result.exit_code == 0, result.output
    run = out if command == "fit" else out / "runs" / "a0.5_t10_s0"
    config = json.loads((run / "config.json").read_text())
    assert config["cache"] == [url] and "storage_options" not in config
    for f in out.rglob("*.json"):
        assert secret not in f.read_text() and s3_endpoint not in f.read_text(), f
    if command == "sweep":  # the report read the teacher's accuracy from the bucket too
        assert "| teacher vfl-nano †" in (out / "results.md").read_text()


# -- a truncated video: said so by the commands on one file ---------------------------------------

@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """A 30-frame AVI cut in half, one cut to fewer decodable frames than a 4-frame clip, and a
    4-frame model to run on them."""
    import torch

    from dvfl_cache.data.decode import video_info
    from dvfl_cache.models import create_model, save_checkpoint

    d = tmp_path_factory.mktemp("truncated")
    data = write_counter_video(d / "full.avi", 30, codec="mpeg4").read_bytes()
    (d / "half.avi").write_bytes(data[:len(data) // 2])
    for percent in range(5, 50):  # the first cut that still decodes, but fewer than 4 frames
        (d / "stub.avi").write_bytes(data[:len(data) * percent // 100])
        try:
            if 1 <= video_info(d / "stub.avi").num_frames < 4:
                break
        except Exception:
            continue
    torch.manual_seed(0)
    save_checkpoint(d / "m.pt", create_model("vfl-nano", num_classes=4, num_frames=4,
                                             img_size=32, embed_dim=8, depths=[1, 1, 1, 1]),
                    classes=["a", "b", "c", "d"])
    return d


@pytest.mark.parametrize("command", ["predict", "explain"])
@pytest.mark.parametrize("name", ["half", "stub", "full"])
def test_a_truncated_video_is_said_so(command, name, truncated, tmp_path, caplog):
    import logging

    from dvfl_cache.data.decode import video_info

    _, train_cli = _clis()
    video = str(truncated / f"{name}.avi")
    args = [command, video, "--checkpoint", str(truncated / "m.pt")]
    args += ["--out", str(tmp_path / "x")] if command == "explain" else ["--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(train_cli, args)
    assert result.exit_code == 0, result.output  # the scores stand, as eval's would
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and r.getMessage().startswith(video)]
    info = video_info(video)
    if name == "full":
        assert not warned
        return
    (line,) = warned
    assert f"only {info.num_frames} of the 30 frames its container lists can be decoded" in line
    assert ("frames are repeated" in line) == (name == "stub")
    if name == "stub":
        assert f"{info.num_frames} decodable frame(s) for a 4-frame clip" in line


class _Touch:
    """Unpickled with code execution, it would create the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", [2])  # torch's; at 0 and 4 torch stops at an opcode first
def test_a_plain_pickle_that_would_run_code_keeps_the_safety_message(protocol, tmp_path):
    import pickle

    from dvfl_cache.errors import CheckpointError
    from dvfl_cache.models.weights import read_checkpoint

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": _Touch(tmp_path / "ran")}, protocol=protocol))
    with pytest.raises(CheckpointError, match=rf"refusing to load {bad}: \S*open is not on "
                                              "the allow-list"):
        read_checkpoint(bad)
    assert not (tmp_path / "ran").exists()
