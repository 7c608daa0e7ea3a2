"""CPU compute threads: the cores the decoding workers leave, unless the user chooses."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from dvfl_cache import runtime as th


@pytest.mark.parametrize("cores, workers, local, expected", [
    (2, 1, 1, 1), (2, 0, 1, 2), (16, 4, 1, 12), (16, 4, 2, 4), (1, 3, 1, 1), (8, 8, 1, 1)])
def test_auto_threads(cores, workers, local, expected):
    assert th.auto_threads(cores=cores, workers=workers, local_processes=local) == expected


@pytest.mark.parametrize("cores, workers, local, expected", [
    (2, 1, 1, 2), (2, 4, 1, 2), (16, 4, 1, 16), (16, 4, 2, 8), (1, 3, 1, 1)])
def test_auto_threads_sharing_the_cores_with_the_decoders(cores, workers, local, expected):
    """The cache build's policy: the teacher takes its whole share, decoders or not."""
    assert th.auto_threads(cores=cores, workers=workers, local_processes=local,
                           share_cores=True) == expected


@pytest.mark.parametrize("environ, added", [
    ({}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ({"OMP_WAIT_POLICY": ""}, {"OMP_WAIT_POLICY": "PASSIVE"}),  # empty: not a choice
    ({"OMP_WAIT_POLICY": "active"}, {}), ({"GOMP_SPINCOUNT": "300000"}, {}),
    ({"KMP_BLOCKTIME": "200"}, {}), ({"OMP_NUM_THREADS": "2"}, {"OMP_WAIT_POLICY": "PASSIVE"})])
def test_openmp_waits_are_passive_unless_the_user_chose(environ, added):
    assert th.openmp_wait_env(environ) == added


def test_entry_points_ask_for_passive_waits_before_torch_loads():
    """A fresh interpreter that only imports the entry point has the policy in its
    environment, and torch, imported afterwards, runs under it (libgomp reads it then)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in th.OPENMP_WAIT_VARS}
    code = ("import os, sys; import dvfl_cache.cli; assert 'torch' not in sys.modules; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "PASSIVE"
    env["GOMP_SPINCOUNT"] = "300000"  # the user's choice: left alone
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "None"


def test_build_gives_the_teacher_every_core(machine):
    assert th.set_compute_threads(device=torch.device("cpu"), workers=2, threads=0,
                                  share_cores=True) == 6
    assert torch.get_num_threads() == 6


@pytest.mark.parametrize("kw", [dict(cores=0, workers=0), dict(cores=2, workers=-1),
                                dict(cores=2, workers=0, local_processes=0)])
def test_auto_threads_refuses_nonsense(kw):
    with pytest.raises(ValueError):
        th.auto_threads(**kw)


@pytest.fixture
def machine(monkeypatch):
    """An 8-core machine where torch's own default was 6 threads, no OMP_NUM_THREADS."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(th, "available_cores", lambda: 8)
    monkeypatch.setattr(th, "_torch_default", 6)


def test_cpu_run_gets_the_cores_left_by_the_workers(machine, monkeypatch):
    assert th.set_compute_threads(device=torch.device("cpu"), workers=2, threads=0) == 4
    assert torch.get_num_threads() == 4
    # torchrun with 3 processes on this machine: each gets its share, less its workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert th.set_compute_threads(device=torch.device("cpu"), workers=1, threads=0) == 1
    assert torch.get_num_threads() == 1


def test_auto_resolves_to_the_cpu_here(machine):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto means cuda")
    assert th.set_compute_threads(device=th.resolve_device("auto"), workers=1, threads=0) == 5
    assert th.set_compute_threads(device=th.resolve_device(None), workers=0, threads=0) == 6


def test_user_choice_wins(machine, monkeypatch):
    assert th.set_compute_threads(device=torch.device("cpu"), workers=4, threads=3) == 3
    assert torch.get_num_threads() == 3
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert th.set_compute_threads(device=torch.device("cpu"), workers=1, threads=0) is None
    assert torch.get_num_threads() == 2


def test_accelerators_keep_torch_default(machine):
    torch.set_num_threads(2)
    assert th.set_compute_threads(device=torch.device("cuda:0"), workers=1, threads=0) is None
    assert torch.get_num_threads() == 2
    # asked for explicitly, the count applies to the host threads there too
    assert th.set_compute_threads(device=torch.device("cuda"), workers=1, threads=1) == 1


def test_negative_threads_refused(machine):
    with pytest.raises(ValueError, match="threads must be >= 0"):
        th.set_compute_threads(device=torch.device("cpu"), workers=0, threads=-1)


@pytest.mark.parametrize("prog, command", [("dvfl-cache", "build"), ("dvfl-train", "fit"),
                                           ("dvfl-train", "sweep"), ("dvfl-train", "eval")])
def test_commands_offer_threads(prog, command):
    if prog == "dvfl-cache":
        from dvfl_cache.cli import main
    else:
        from dvfl_train.cli import main
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--threads" in result.output and "decoding --workers" in result.output


# -- the device ---------------------------------------------------------------------------------

def test_resolve_device_on_this_machine():
    assert th.resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present: auto picks it")
    assert th.resolve_device("auto") == th.resolve_device(None) == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
    ("mps", "MPS is not available"), ("tpu9", "use auto, cpu, cuda, cuda:N or mps")])
def test_resolve_device_refuses_what_is_missing(name, message):
    from dvfl_cache.errors import DvflError

    if name.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(DvflError, match=message) as info:
        th.resolve_device(name)
    assert str(info.value).startswith(f"--device {name}: ")


def test_build_command_gives_its_teacher_every_core(machine, synth_root, tmp_path):
    """`dvfl-cache build --threads 0` on a CPU: all cores (8 here, torch's default 6 capped
    by them: 6) beside its decoding worker, where fit and sweep would leave it one less."""
    from dvfl_cache.cli import main

    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, [
            "build", "--dataset", "ucf101", "--root", str(synth_root), "--split", "1",
            "--teacher", "vfl-nano", "--random-weights", "--teacher-opt", "embed_dim=8",
            "--teacher-opt", "depths=[1,1,1,1]", "--frames", "4", "--size", "32",
            "--batch-size", "4", "--workers", "1", "--threads", "0", "--device", "cpu",
            "--out", str(tmp_path / "c.zarr")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 6
    finally:
        torch.set_num_threads(before)
