"""The oldest versions setup.cfg accepts really work (slow: `make test-slow` or `make test-floors`).

A declared floor nobody runs rots: `zarr>=3.0` let users install zarr releases whose `Array`
has no `with_config`, and `build` crashed. Each floor is installed into a throwaway venv layered
over the running one (a .pth file makes this venv's packages visible behind it, so only the
floor package and whatever it needs beyond this venv are installed), and the tests that
exercise that package run there. Needs the package registry (pip).

Measured when the floors were set (zarr: cache tests; 3.0.8-3.1.5 all fail with "'Array'
object has no attribute 'with_config'"; av: decode tests; 15 and 16 fail with
"reformat() got an unexpected keyword argument 'threads'").
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
FLOORS = {
    "zarr": ["tests/test_cache_store.py", "tests/test_cache_format.py",
             "tests/test_cache_build.py"],
    "av": ["tests/test_decode.py", "tests/test_decode_display.py"],
}


def declared_floor(package: str) -> str:
    """The `>=` version of `package` in setup.cfg's install_requires."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    for line in cfg["options"]["install_requires"].splitlines():
        m = re.fullmatch(rf"\s*{re.escape(package)}\s*>=\s*([\w.]+).*", line)
        if m:
            return m.group(1)
    raise AssertionError(f"setup.cfg declares no {package}>= floor")


def test_every_floor_checked_is_declared():
    assert {p: declared_floor(p) for p in FLOORS}  # a renamed requirement fails here, fast


def layered_venv(where: Path, *pins: str) -> Path:
    """A venv in `where` that sees this venv's packages behind its own (a .pth file), with
    `pins` (e.g. "av==17.1.0") and whatever they need beyond this venv installed: its python."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True,
                          check=True).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(site, "zz_dvfl_base.pth").write_text("".join(f"{p}\n" for p in ours))
    if pins:
        pip = subprocess.run([str(py), "-m", "pip", "install", "-q", *pins],
                             capture_output=True, text=True)
        assert pip.returncode == 0, f"pip could not install {pins}:\n{pip.stderr[-2000:]}"
    return py


def installed_version(py: Path, package: str) -> Version:
    return Version(subprocess.run([str(py), "-c", f"import {package}; print({package}.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.strip())


@pytest.mark.slow
@pytest.mark.parametrize("package", list(FLOORS))
def test_declared_floor_passes_its_tests(tmp_path, package):
    floor = declared_floor(package)
    py = layered_venv(tmp_path, f"{package}=={floor}")
    assert installed_version(py, package) == Version(floor)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([str(py), "-m", "pytest", "-q", "-x", "-m", "not slow", "-p",
                          "no:cacheprovider", *FLOORS[package]], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, (f"with {package}=={floor} (the floor in setup.cfg) the tests "
                                 f"fail:\n{run.stdout[-3000:]}")
