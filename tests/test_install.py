"""A fresh install works: the quickstart installs the lock, the wheel carries every file, and a
cache survives a PyAV upgrade that leaves the pixels alone.

PyAV 18 broke every fresh clone of an unchanged commit because nothing locked what `make test`
installed (tools/lock.py says how the lock is made). The slow tests need the package registry.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import load_tool
from test_floors import installed_version, layered_venv

lock = load_tool("lock")  # tools/lock.py: the lock's own reader

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"


def makefile_extras() -> list[str]:
    m = re.search(r"^EXTRAS := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile has no EXTRAS line"
    return m.group(1).split(",")


def declared_requirements() -> list[Requirement]:
    """install_requires plus the extras the quickstart installs, as setup.cfg states them."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in makefile_extras():
        lines += cfg["options.extras_require"][extra].splitlines()
    return [Requirement(line.strip()) for line in lines
            if line.strip() and not line.strip().startswith("#")]


def test_lock_pins_every_declared_requirement_inside_its_range():
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        assert not line or "==" in line, f"{LOCK}: '{line}' is not an exact pin"
    pins = lock.read_lock(LOCK)
    assert "torch" not in pins and not any(n.startswith("nvidia-") for n in pins), \
        "the lock must leave the torch build to the TORCH variable"
    for req in declared_requirements():
        name = lock.canonical(req.name)
        if name == "torch":
            continue
        assert name in pins, f"setup.cfg asks for {req} but {LOCK.name} does not pin it: make lock"
        assert Version(pins[name]) in req.specifier, \
            f"{LOCK.name} pins {name}=={pins[name]} outside setup.cfg's {req}: make lock"


def _make_dry_run(target: str) -> list[str]:
    """The pip install lines `make TARGET` would run in a venv that does not exist yet."""
    out = subprocess.run(["make", "-n", target, "VENV=/nonexistent/venv", "LATEST=/nonexistent/l"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line for line in out.replace("\\\n", " ").splitlines() if "pip install" in line
            and "--upgrade pip" not in line]


@pytest.mark.parametrize("target", ["test", "demo"])
def test_quickstart_installs_through_the_lock(target):
    lines = _make_dry_run(target)
    assert len(lines) >= 2, lines  # the torch build, then dvfl with its extras
    for line in lines:
        assert "-c requirements/lock.txt" in line, f"make {target} installs without the lock: {line}"


def test_test_latest_installs_without_the_lock():
    lines = _make_dry_run("test-latest")
    assert lines and not any("lock.txt" in line for line in lines), lines
    assert any("--upgrade-strategy eager" in line for line in lines), lines


@pytest.mark.slow
def test_wheel_from_a_clean_clone_installs_and_builds_a_cache(tmp_path):
    """`pip install .` (not -e): a file missing from the package fails here, not for a user."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    py = layered_venv(tmp_path)
    wheel_dir = tmp_path / "dist"
    subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir),
                    str(clone)], check=True, capture_output=True)
    wheels = list(wheel_dir.glob("dvfl-*.whl"))
    assert len(wheels) == 1, wheels
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheels[0])],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import dvfl_cache, dvfl_train; "
                            "print(dvfl_cache.__file__); print(dvfl_train.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where and str(py.parent.parent) in where, where
    bin_dir = py.parent
    for tool in ("dvfl-cache", "dvfl-train"):
        res = subprocess.run([str(bin_dir / tool), "--help"], cwd=work, env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0 and "Usage" in res.stdout, res.stderr
    cache = str(bin_dir / "dvfl-cache")
    subprocess.run([cache, "synth", "--out", "data", "--classes", "2", "--videos-per-class", "2",
                    "--size", "32", "--frames", "8"], cwd=work, env=env, check=True,
                   capture_output=True)
    res = subprocess.run([cache, "build", "--dataset", "ucf101", "--root", "data", "--split", "1",
                          "--teacher", "vfl-nano", "--random-weights", "--teacher-opt",
                          "embed_dim=8", "--teacher-opt", "depths=[1,1,1,1]", "--frames", "4",
                          "--size", "32", "--views-per-video", "2", "--workers", "0",
                          "--out", "c.zarr"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([cache, "verify", "c.zarr"], cwd=work, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 views" in res.stdout + res.stderr or "4 rows" in res.stdout + res.stderr, res.stdout


OTHER_AV = "17.1.0"  # the newest release of the major before the lock's PyAV 18

_FRAMES = """
import hashlib, sys
from dvfl_cache.data.decode import decode_frames, video_info
h = hashlib.sha256()
for path in sys.argv[1:]:
    n = video_info(path).num_frames
    for frame in decode_frames(path, list(range(n))):
        h.update(frame.tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_a_store_built_with_another_pyav_is_not_stale_when_its_frames_are_equal(
        synth_root, tmp_path):
    """Built with PyAV 17, used with this PyAV: same pixels, so same decoder version, no stale
    flag, and the teacher recomputed from today's decode gives the stored logits."""
    import av

    if Version(av.__version__) == Version(OTHER_AV):
        pytest.skip(f"this venv already runs PyAV {OTHER_AV}")
    py = layered_venv(tmp_path, f"av=={OTHER_AV}")
    assert installed_version(py, "av") == Version(OTHER_AV)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    videos = sorted(str(p) for p in (synth_root / "UCF-101").rglob("*.*"))
    theirs = subprocess.run([str(py), "-c", _FRAMES, *videos], env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", _FRAMES, *videos], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert theirs == ours, "the two PyAV releases decode these videos to different pixels"
    out = tmp_path / "old.zarr"
    build = subprocess.run([str(py), "-m", "dvfl_cache.cli", "build", "--dataset", "ucf101",
                            "--root", str(synth_root), "--split", "1", "--teacher", "vfl-nano",
                            "--random-weights", "--teacher-opt", "embed_dim=8", "--teacher-opt",
                            "depths=[1,1,1,1]", "--frames", "4", "--size", "32",
                            "--views-per-video", "2", "--workers", "0", "--dtype", "float32",
                            "--out", str(out)], env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    res = subprocess.run([sys.executable, "-m", "dvfl_cache.cli", "verify", str(out),
                          "--dataset", "ucf101", "--root", str(synth_root), "--recompute", "16",
                          "--teacher", "vfl-nano"], env=env, capture_output=True, text=True)
    text = res.stdout + res.stderr
    assert res.returncode == 0 and "recomputed on 16 rows" in text, text
    assert "stale" not in text.lower() and "decoder version" not in text.lower(), text
