"""The quickstart's lock: what `make test` and `make demo` install, and what is newer than it.

`make test` ran with whatever the package index served that day, so a release upstream (PyAV 18)
broke every fresh clone of an unchanged commit. `requirements/lock.txt` is a pip constraints file
with the exact version of every runtime and test dependency; the Makefile installs through it.
`make lock` rebuilds it: a throwaway venv resolves the newest versions setup.cfg allows, then

    python tools/lock.py write requirements/lock.txt    # run by that venv's python

records them. torch is left out on purpose: its build (CPU or one of the CUDA variants, each with
other dependencies) is the machine's choice, made with the Makefile's TORCH variable.

    python tools/lock.py torch-pin                  # `torch==<installed>`: keeps an upgrade off torch
    python tools/lock.py diff requirements/lock.txt # what this venv has beyond the lock (make test-latest)
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

# Never locked: the project itself, the torch build and what only a torch build brings, and
# the installer's own tools.
UNLOCKED = re.compile(r"^(dvfl|torch|triton|nvidia-.*|cuda-.*|pip|setuptools|wheel)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Every distribution in this interpreter's environment: canonical name -> version."""
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[canonical(name)] = dist.version
    return out


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def write(out: Path) -> None:
    pins = {n: v for n, v in sorted(installed().items()) if not UNLOCKED.match(n)}
    head = [f"# Written by `make lock` on {dt.date.today().isoformat()} "
            f"(Python {platform.python_version()}, {platform.machine()}): the newest versions",
            "# setup.cfg allowed that day, resolved in a fresh venv. `make test` and `make demo`",
            "# install through this file (pip -c). torch is chosen by the Makefile's TORCH variable."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head + [f"{n}=={v}" for n, v in pins.items()]) + "\n")
    print(f"{out}: {len(pins)} packages locked")


def torch_pin() -> None:
    print(f"torch=={metadata.version('torch')}")


def diff(lock: Path) -> None:
    pins, have = read_lock(lock), installed()
    newer = [f"{n} {pins[n]} -> {v}" for n, v in sorted(have.items()) if n in pins and pins[n] != v]
    extra = [f"{n} {v}" for n, v in sorted(have.items()) if n not in pins and not UNLOCKED.match(n)]
    print(f"against {lock}: {len(newer)} packages differ from the lock"
          + (": " + ", ".join(newer) if newer else ""))
    if extra:
        print(f"not in the lock: {', '.join(extra)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write").add_argument("out", type=Path)
    sub.add_parser("torch-pin")
    sub.add_parser("diff").add_argument("lock", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "write":
        write(a.out)
    elif a.cmd == "torch-pin":
        torch_pin()
    else:
        diff(a.lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
