"""Failures never pass as success: wrong roots, failure budgets (--max-failed), stores without
valid rows, zero-step runs, derived validation, repair of corrupt shards, resumes from another
directory, one-line errors and Ctrl-C (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dvfl_cache.cli import main as cache_cli
from dvfl_train.cli import main as train_cli

TINY_TEACHER = ["--teacher", "vfl-nano", "--random-weights", "--teacher-opt", "embed_dim=8",
                "--teacher-opt", "depths=[1,1,1,1]"]
TINY_STUDENT = ["--model-opt", "embed_dim=8", "--model-opt", "depths=[1,1,1,1]",
                "--frames", "2", "--size", "32", "--epochs", "1", "--warmup-epochs", "0",
                "--batch-size", "4", "--workers", "0", "--device", "cpu"]


def build_args(out: Path, *data: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["build", *data, *TINY_TEACHER, "--views-per-video", "2", "--frames", "2",
            "--size", "32", "--views-per-shard", "4", "--batch-size", "4", "--workers", "0",
            "--dtype", "float32", "--out", str(out), *extra]


def cli(main, args: list[str], expect: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def one_line_error(result) -> str:
    lines = [ln for ln in result.output.replace("\r", "\n").splitlines()
             if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(a[:]) for name, a in g.arrays()}


@pytest.fixture
def data(synth_root, tmp_path) -> Path:
    """A private copy of the tiny dataset (tests break videos in it)."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


@pytest.fixture
def train_json(data, tmp_path) -> Path:
    out = tmp_path / "train.json"
    cli(cache_cli, ["index", "--dataset", "ucf101", "--root", data, "--out", out])
    return out


def _break(root: Path, index, videos) -> list[str]:
    paths = [index.abspath(v) for v in videos]
    for p in paths:
        Path(p).write_bytes(b"\x00not a video" * 40)
    return paths


# -- 1. failures that pass as success -----------------------------------------------------------

def test_wrong_root_is_one_line_and_the_dataset_folder_is_accepted(data, train_json, tmp_path):
    from dvfl_cache.data.index import load_index

    stored = load_index(train_json).root
    assert Path(stored) != data  # the index stores the video folder, inside the dataset folder
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    res = cli(cache_cli, build_args(tmp_path / "bad.zarr", "--index", train_json, "--root", empty),
              expect=1)
    line = one_line_error(res)
    assert "none of its videos found under" in line and str(empty) in line
    assert not (tmp_path / "bad.zarr").exists()  # nothing built from nothing

    # The dataset folder given to `index` works as well as the video folder.
    res = cli(cache_cli, build_args(tmp_path / "ok.zarr", "--index", train_json, "--root", data))
    assert "store complete" in res.output
    assert store_arrays(tmp_path / "ok.zarr")["valid"].all()


def test_all_failed_build_fails_verify_and_fit_refuse_it(data, train_json, tmp_path):
    from dvfl_cache.data.index import load_index

    index = load_index(train_json)
    _break(data, index, range(len(index)))
    out = tmp_path / "c.zarr"
    res = cli(cache_cli, build_args(out, "--index", train_json), expect=1)
    line = one_line_error(res)
    assert "8 of 8 videos failed to decode" in line and "--max-failed" in line
    assert "and 5 more" in line  # the first few are named, the count is exact

    # Accepting every failure, the store is "complete" but holds nothing: verify says so.
    cli(cache_cli, build_args(out, "--index", train_json, extra=("--resume", "--max-failed", "1")))
    res = cli(cache_cli, ["verify", out], expect=1)
    assert "no valid rows" in one_line_error(res)

    # fit refuses it before any epoch and writes no checkpoint.
    run = tmp_path / "run"
    res = cli(train_cli, ["fit", "--index", train_json, "--val-index", train_json, "--cache", out,
                          *TINY_STUDENT, "--out", run], expect=1)
    assert "no valid rows" in one_line_error(res)
    assert not list(run.glob("*.pt"))


def test_verify_reports_the_valid_fraction(data, train_json, tmp_path):
    from dvfl_cache.data.index import load_index

    _break(data, load_index(train_json), [2])
    out = tmp_path / "c.zarr"
    cli(cache_cli, build_args(out, "--index", train_json, extra=("--max-failed", "0.2")))
    res = cli(cache_cli, ["verify", out])
    assert "14 valid, 87.5%" in res.output  # 16 rows, video 2's two views invalid


def test_fit_past_max_failed_fails_and_never_checkpoints_zero_steps(data, train_json, tmp_path):
    from dvfl_cache.data.index import load_index

    index = load_index(train_json)
    args = ["fit", "--index", train_json, "--val-index", train_json, *TINY_STUDENT]
    bad = _break(data, index, [1])
    res = cli(train_cli, [*args, "--out", tmp_path / "one"], expect=1)
    line = one_line_error(res)
    assert "1 of 8 videos failed in epoch 1" in line and bad[0].split("UCF-101/")[-1] in line
    assert not list((tmp_path / "one").glob("*.pt"))
    # The budget is the user's: 1 of 8 is within 0.2.
    cli(train_cli, [*args, "--out", tmp_path / "ok", "--max-failed", "0.2"])
    assert (tmp_path / "ok" / "best.pt").exists()

    _break(data, index, range(len(index)))
    res = cli(train_cli, [*args, "--out", tmp_path / "none", "--max-failed", "1"], expect=1)
    assert "no clip could be trained on" in one_line_error(res)
    assert not list((tmp_path / "none").glob("*.pt"))


def test_fit_index_without_val_index_derives_it_or_says_what_to_add(data, train_json, tmp_path):
    run = tmp_path / "run"
    res = cli(train_cli, ["fit", "--index", train_json, *TINY_STUDENT, "--out", run])
    assert "val top-1" in res.output
    record = json.loads((run / "summary.json").read_text())
    assert record["final"]["val_top1"] is not None

    shutil.rmtree(data / "ucfTrainTestlist")  # no split lists left to derive it from
    res = cli(train_cli, ["fit", "--index", train_json, *TINY_STUDENT, "--out", tmp_path / "r2"],
              expect=1)
    assert "add --val-index" in one_line_error(res)


def test_eval_counts_failures_as_misses_and_fails_past_the_budget(data, train_json, tmp_path):
    from dvfl_cache.data.index import load_index

    run = tmp_path / "run"
    cli(train_cli, ["fit", "--index", train_json, "--val-index", train_json, *TINY_STUDENT,
                    "--out", run])
    _break(data, load_index(train_json), [0])
    args = ["eval", "--checkpoint", run / "best.pt", "--index", train_json, "--workers", "0",
            "--device", "cpu"]
    res = cli(train_cli, args, expect=1)
    assert "1 of 8 videos failed to decode" in one_line_error(res)
    assert (run / "eval_1.json").exists()  # the results (failures as misses) are written
    res = cli(train_cli, [*args, "--max-failed", "0.2"])
    assert "failed to decode and count as misses" in res.output


# -- 2. repair ----------------------------------------------------------------------------------

def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_repair_fixes_a_flipped_byte_and_equals_the_original(data, train_json, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "c.zarr"
    cli(cache_cli, build_args(out, "--index", train_json))
    original = store_arrays(out)
    key = CacheReader(out).shard_key("logits", 1)
    _flip_byte(out / key)

    res = cli(cache_cli, ["verify", out], expect=1)
    assert "shard 1" in res.output and "checksum" in res.output
    # A student refuses it before its first epoch, naming the shard and the repair.
    res = cli(train_cli, ["fit", "--index", train_json, "--val-index", train_json, "--cache",
                          out, *TINY_STUDENT, "--out", tmp_path / "run"], expect=1)
    line = one_line_error(res)
    assert "shard 1" in line and "--repair" in line
    # --resume trusts the done flags: nothing to do, still broken.
    cli(cache_cli, build_args(out, "--index", train_json, extra=("--resume",)))
    cli(cache_cli, ["verify", out], expect=1)
    # --repair reads every shard back and runs the teacher on the broken one only.
    res = cli(cache_cli, build_args(out, "--index", train_json, extra=("--repair",)))
    assert "4 views in 1 shards written" in res.output
    cli(cache_cli, ["verify", out])
    repaired = store_arrays(out)
    assert repaired.keys() == original.keys()
    for name in original:
        np.testing.assert_array_equal(repaired[name], original[name], err_msg=name)


def test_repair_fixes_the_last_partly_filled_shard(data, train_json, tmp_path):
    """16 rows in shards of 5: the last shard holds one row, so its rewrite is a partial write,
    which must not read the damaged file back (it raised zarr's checksum error, a traceback)."""
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "c.zarr"
    args = build_args(out, "--index", train_json, extra=("--views-per-shard", "5"))
    cli(cache_cli, args)
    original = store_arrays(out)
    _flip_byte(out / CacheReader(out).shard_key("logits", 3))
    cli(cache_cli, ["verify", out], expect=1)
    res = cli(cache_cli, [*args, "--repair"])
    assert "1 views in 1 shards written" in res.output
    cli(cache_cli, ["verify", out])
    repaired = store_arrays(out)
    for name in original:  # the row ran in a batch of 1, not 4: float reduction order
        np.testing.assert_allclose(repaired[name], original[name], atol=1e-6, err_msg=name)


def test_remote_store_is_not_read_up_front_and_a_bad_shard_names_the_repair(data, train_json,
                                                                            tmp_path):
    from test_cache_share import RangeHandler, serve

    from dvfl_cache.cache.health import check_for_training
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.index import load_index
    from dvfl_cache.errors import CacheError

    out = tmp_path / "c.zarr"
    cli(cache_cli, build_args(out, "--index", train_json))
    _flip_byte(out / CacheReader(out).shard_key("logits", 2))
    asked: list[str] = []

    class Counting(RangeHandler):
        def send_head(self):
            asked.append(self.path)
            return super().send_head()

    with serve(tmp_path, Counting) as base:
        reader = CacheReader(f"{base}/c.zarr")
        check_for_training(reader, load_index(train_json))  # valid flags only: no logits read
        assert not [p for p in asked if "/logits/" in p]
        with pytest.raises(CacheError, match=r"shard 2 .*checksum.*--repair"):
            reader.epoch_block(1)  # rows 8-15: shards 2 and 3
        reader.close()



@pytest.mark.parametrize("where", ["http-zip", "s3"])
def test_fit_refuses_a_remote_store_with_a_missing_shard_file(where, data, train_json, tmp_path,
                                                              request):
    """Issue 25, 1: fit over HTTP or S3 trained on zero logits where a shard file was lost."""
    import zipfile

    from test_cache_share import serve

    from dvfl_cache.cache.location import target_fs
    from dvfl_cache.cache.share import pack
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "c.zarr"
    cli(cache_cli, build_args(out, "--index", train_json))
    key = CacheReader(out).shard_key("logits", 0)
    fit = ["fit", "--index", train_json, "--val-index", train_json, *TINY_STUDENT,
           "--out", tmp_path / "run"]
    if where == "s3":
        url = f"{request.getfixturevalue('bucket')}/c.zarr"
        fs, root = target_fs(url)
        fs.put(str(out), root, recursive=True)
        fs.rm(f"{root}/{key}")
        res = cli(train_cli, [*fit, "--cache", url], expect=1)
    else:
        pack(out, tmp_path / "whole.zip")
        with zipfile.ZipFile(tmp_path / "whole.zip") as src, \
                zipfile.ZipFile(tmp_path / "c.zip", "w") as dst:
            for member in src.infolist():
                if member.filename != key:
                    dst.writestr(member, src.read(member))
        with serve(tmp_path) as base:
            res = cli(train_cli, [*fit, "--cache", f"{base}/c.zip"], expect=1)
    assert f"array 'logits' shard 0: file {key} is missing" in one_line_error(res)
    assert not list((tmp_path / "run").glob("*.pt"))

# -- 3. resume from another directory ------------------------------------------------------------

def test_fit_resume_from_another_directory_with_absolute_paths(data, train_json, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--dataset", "ucf101", *TINY_STUDENT, "--epochs", "2"]
    cli(train_cli, [*args, "--root", "data", "--out", "run", "--epochs", "2"])
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    res = cli(train_cli, [*args, "--root", data, "--out", tmp_path / "run", "--resume"])
    assert "Error" not in res.output
    # A real change is refused without suggesting --overwrite (it would lose the run).
    res = cli(train_cli, [*args, "--root", data, "--out", tmp_path / "run", "--resume",
                          "--lr", "0.5"], expect=1)
    line = one_line_error(res)
    assert "base_lr" in line and "--overwrite" not in line


def test_sweep_resume_from_another_directory(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["sweep", "--dataset", "ucf101", *TINY_STUDENT, "--alphas", "0", "--taus", "1",
            "--eval-views", "1"]
    cli(train_cli, [*args, "--root", "data", "--out", "sw"])
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    res = cli(train_cli, [*args, "--root", data, "--out", tmp_path / "sw", "--resume"])
    assert "Error" not in res.output
    res = cli(train_cli, [*args, "--root", data, "--out", tmp_path / "sw", "--resume",
                          "--lr", "0.5"], expect=1)
    line = one_line_error(res)
    assert "base_lr" in line and "--overwrite" not in line


# -- 4. one line, never a traceback ------------------------------------------------------------

UNWRITABLE = "/sys/dvfl-cannot-write-here/out"  # EPERM even for root


@pytest.mark.parametrize("what", ["build", "index", "synth", "fit", "eval", "pack", "export"])
def test_unwritable_out_is_one_line(what, data, train_json, tmp_path):
    if what == "build":
        args, main = build_args(Path(UNWRITABLE), "--index", train_json), cache_cli
    elif what == "index":
        args, main = ["index", "--dataset", "ucf101", "--root", data, "--out",
                      UNWRITABLE + ".json"], cache_cli
    elif what == "synth":
        args, main = ["synth", "--out", UNWRITABLE, "--classes", "2", "--videos-per-class", "2",
                      "--size", "32", "--frames", "8"], cache_cli
    elif what == "fit":
        args, main = ["fit", "--index", train_json, "--val-index", train_json, *TINY_STUDENT,
                      "--out", UNWRITABLE], train_cli
    else:
        store = tmp_path / "c.zarr"
        cli(cache_cli, build_args(store, "--index", train_json))
        if what == "eval":
            run = tmp_path / "run"
            cli(train_cli, ["fit", "--index", train_json, "--val-index", train_json,
                            *TINY_STUDENT, "--out", run])
            args, main = ["eval", "--checkpoint", run / "best.pt", "--index", train_json,
                          "--workers", "0", "--device", "cpu", "--out", UNWRITABLE], train_cli
        else:
            suffix = ".zip" if what == "pack" else ".h5"
            args, main = [what, store, UNWRITABLE + suffix], cache_cli
    res = cli(main, args, expect=1)
    assert "dvfl-cannot-write-here" in one_line_error(res)


def test_sweep_unwritable_out_is_one_line(data):
    res = cli(train_cli, ["sweep", "--dataset", "ucf101", "--root", data, *TINY_STUDENT,
                          "--alphas", "0", "--taus", "1", "--out", UNWRITABLE], expect=1)
    assert "dvfl-cannot-write-here" in one_line_error(res)


@pytest.mark.parametrize("opt,says", [("embed_dim=big", "embed_dim"),
                                      ("no_such_option=1", "no_such_option")])
def test_bad_teacher_opt_is_a_usage_error(opt, says, train_json, tmp_path):
    args = build_args(tmp_path / "c.zarr", "--index", train_json)
    args[args.index("embed_dim=8")] = opt
    res = cli(cache_cli, args, expect=2)
    assert "--teacher-opt" in res.output and says in res.output


def test_head_mismatch_tells_the_command_line_way(tmp_path):
    from dvfl_cache.errors import CheckpointError
    from dvfl_cache.models import create_model, load_pretrained, save_checkpoint

    toy = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_frames": 2, "img_size": 32}
    save_checkpoint(tmp_path / "a.pt", create_model("vfl-nano", num_classes=5, **toy))
    with pytest.raises(CheckpointError, match=r"dvfl-train fit --init"):
        load_pretrained(create_model("vfl-nano", num_classes=3, **toy), tmp_path / "a.pt")


def _interrupt(cmd: list[str], ready, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # A job started in the background of a non-interactive shell (as CI may be) inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler: give the child the default.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_ctrl_c_in_build_says_what_was_kept_and_how_to_resume(train_json, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    out = tmp_path / "c.zarr"
    args = build_args(out, "--index", train_json,
                      extra=("--views-per-video", "16", "--batch-size", "1"))

    def started() -> bool:
        try:
            return int(CacheReader(out).shard_done().sum()) >= 1
        except Exception:
            return False

    res = _interrupt([sys.executable, "-m", "dvfl_cache.cli", *map(str, args)], started)
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr and "Aborted" not in res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")][-1]
    assert "finished shards are kept in" in line and "resume with:" in line
    command = line.split("resume with: ", 1)[1]
    assert command.endswith("--resume")
    # The printed command finishes the store.
    import shlex

    words = shlex.split(command)
    assert words[0] == "dvfl-cache"
    done = CliRunner().invoke(cache_cli, words[1:])
    assert done.exit_code == 0, done.output
    assert CacheReader(out).complete



def test_ctrl_c_never_prints_a_storage_secret(train_json, tmp_path, bucket):
    """Issue 25, 3: the resume command hides --storage-option values as provenance does."""
    from dvfl_cache.cache.store import CacheReader

    url = f"{bucket}/c.zarr"
    secret = "SK-do-not-print-42"
    so = ["--storage-option", "key=testing", f"--storage-option=secret={secret}"]
    args = build_args(url, "--index", train_json,
                      extra=("--views-per-video", "16", "--batch-size", "1", *so))

    def started() -> bool:
        try:
            return int(CacheReader(url).shard_done().sum()) >= 1
        except Exception:
            return False

    res = _interrupt([sys.executable, "-m", "dvfl_cache.cli", *map(str, args)], started)
    assert res.returncode == 130, res.stderr
    assert secret not in res.stdout + res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")][-1]
    import shlex

    command, _, note = line.split("resume with: ", 1)[1].partition(" (")
    assert shlex.split(command)[-4:] == ["--storage-option", "key=***",
                                         "--storage-option=secret=***", "--resume"], line
    assert note == "the --storage-option values are hidden: give them again)"

def test_ctrl_c_in_fit_says_what_was_kept_and_how_to_resume(data, tmp_path):
    run = tmp_path / "run"
    args = ["fit", "--dataset", "ucf101", "--root", str(data), *TINY_STUDENT, "--epochs", "50",
            "--out", str(run)]
    res = _interrupt([sys.executable, "-m", "dvfl_train.cli", *args],
                     lambda: (run / "last.pt").exists())
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr and "Aborted" not in res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")][-1]
    assert "finished epochs are kept in" in line and line.endswith("--resume")


def test_ctrl_c_in_sweep_says_what_was_kept_and_how_to_resume(data, tmp_path):
    out = tmp_path / "sw"
    args = ["sweep", "--dataset", "ucf101", "--root", str(data), *TINY_STUDENT, "--epochs", "50",
            "--alphas", "0", "--taus", "1", "--out", str(out)]
    res = _interrupt([sys.executable, "-m", "dvfl_train.cli", *args],
                     lambda: any(out.glob("runs/*/last.pt")))
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr and "Aborted" not in res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")][-1]
    assert "kept in" in line and line.endswith("--resume")


def _limit_file_size(limit: int):
    """A disk that fills up: writes past `limit` bytes fail with EFBIG (as ENOSPC would)."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("what", ["build", "fit", "pack", "export"])
def test_full_disk_is_one_line_naming_the_output(what, train_json, tmp_path):
    """pack/export also must not hide the disk's error behind a cleanup (or HDF5 close) error."""
    store = tmp_path / "c.zarr"
    if what in ("pack", "export"):
        cli(cache_cli, build_args(store, "--index", train_json))
    target = tmp_path / {"build": "full.zarr", "fit": "run", "pack": "c.zip",
                         "export": "c.h5"}[what]
    if what == "build":
        args = ["dvfl_cache.cli", *build_args(target, "--index", train_json)]
    elif what == "fit":
        args = ["dvfl_train.cli", "fit", "--index", train_json, "--val-index", train_json,
                *TINY_STUDENT, "--out", target]
    else:
        args = ["dvfl_cache.cli", what, store, target]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-m", *map(str, args)], env=env, capture_output=True,
                         text=True, preexec_fn=_limit_file_size(200), timeout=300)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.replace("\r", "\n").splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert f"{target}: cannot write: " in errors[0] and "too large" in errors[0].lower()


def test_sweep_evaluation_fails_past_the_budget_and_resume_finishes_the_report(data, tmp_path):
    from dvfl_cache.data.readers import build_index

    test = build_index("ucf101", data, split=1, subset="test")
    _break(data, test, [0])
    out = tmp_path / "sw"
    args = ["sweep", "--dataset", "ucf101", "--root", data, *TINY_STUDENT, "--alphas", "0",
            "--taus", "1", "--out", out]
    res = cli(train_cli, args, expect=1)
    line = one_line_error(res)
    assert "1 of 8 videos failed to decode" in line and "--resume finishes" in line
    assert list(out.glob("runs/*/eval_1.json")) and not (out / "results.csv").exists()
    cli(train_cli, [*args, "--resume", "--max-failed", "0.2"])
    assert (out / "results.csv").exists()


def test_resume_differences_compare_inputs_by_identity(data, train_json, tmp_path,
                                                       monkeypatch):
    """A moved index with the same digest, a copied cache with the same metadata, or another
    spelling of one path is the same run; another index or setting is not."""
    from dvfl_cache.data.index import load_index, save_index
    from dvfl_train.config import resume_differences

    moved = tmp_path / "moved" / "train.json"
    moved.parent.mkdir()
    shutil.copy(train_json, moved)
    old = {"train_index": str(train_json), "cache": str(tmp_path / "c.zarr"), "tau": 1.0}
    assert resume_differences(old, {**old, "train_index": str(moved)}) == []
    monkeypatch.chdir(tmp_path)
    assert resume_differences(old, {**old, "train_index": "train.json"}) == []

    store = tmp_path / "c.zarr"
    cli(cache_cli, build_args(store, "--index", train_json))
    shutil.copytree(store, tmp_path / "copy.zarr")
    assert resume_differences(old, {**old, "cache": str(tmp_path / "copy.zarr")}) == []

    index = load_index(train_json)
    save_index(index.with_videos(index.videos[:4]), tmp_path / "other.json")
    changed = resume_differences(old, {**old, "train_index": str(tmp_path / "other.json"),
                                       "tau": 2.0})
    assert [c.split(":")[0] for c in changed] == ["tau", "train_index"]


def test_interrupted_line_says_nothing_finished_when_no_epoch_or_shard_was_kept(tmp_path):
    """Ctrl-C before the first epoch (or shard) ended: the line must not claim kept epochs;
    the resume command is the same either way (it starts over in the same folder)."""
    from dvfl_cache.lazycli import interrupted_line

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    line = interrupted_line("dvfl-train", ["fit", "--epochs", "3", "--out", str(run)])
    assert f"no epoch had finished in {run}" in line and line.endswith("--resume")
    (run / "last.pt").write_bytes(b"")
    line = interrupted_line("dvfl-train", ["fit", "--epochs", "3", "--out", str(run)])
    assert f"finished epochs are kept in {run} (last.pt)" in line
    sweep = tmp_path / "sw"
    line = interrupted_line("dvfl-train", ["sweep", f"--out={sweep}"])
    assert "no student had finished an epoch" in line
    (sweep / "runs" / "a0").mkdir(parents=True)
    (sweep / "runs" / "a0" / "last.pt").write_bytes(b"")
    assert "finished students and epochs are kept" in interrupted_line(
        "dvfl-train", ["sweep", f"--out={sweep}"])
    store = tmp_path / "c.zarr"
    assert "no shard had been written" in interrupted_line("dvfl-cache", [
        "build", "--out", str(store)])
    store.mkdir()
    assert "finished shards are kept" in interrupted_line("dvfl-cache", [
        "build", "--out", str(store)])
    assert "finished shards are kept" in interrupted_line("dvfl-cache", [
        "build", "--out", "s3://bucket/c.zarr"])  # remote: not looked at
