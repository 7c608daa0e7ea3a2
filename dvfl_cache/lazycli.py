"""A click group whose sub-commands are imported only when used.

Why: importing torch, av and zarr costs seconds; `dvfl-cache --help` and a typo should not.
"""

from __future__ import annotations

import errno
import importlib
import logging
import shlex
import sys
from pathlib import Path

import click

from dvfl_cache.errors import DvflError
from dvfl_cache.redact import SECRET_OPTIONS, hide_argv


# What an interrupted command keeps, for the commands that can resume.
KEPT = {"build": "finished shards are kept in {out}",
        "fit": "finished epochs are kept in {out} (last.pt)",
        "sweep": "finished students and epochs are kept in {out}"}
# Said instead when a local --out shows that nothing had finished (the resume command still
# works: it starts the run in the folder the interrupted one began).
NOTHING_KEPT = {"build": "no shard had been written to {out}",
                "fit": "no epoch had finished in {out}",
                "sweep": "no student had finished an epoch in {out}"}


def _kept_anything(command: str, out: str) -> bool:
    """Whether a local ``out`` holds finished work of ``command`` (a remote store: assumed)."""
    if "://" in out:
        return True
    path = Path(out)
    if command == "fit":
        return (path / "last.pt").is_file()
    if command == "sweep":
        return any(path.glob("runs/*/last.pt"))
    return path.exists()


class Interrupted(click.ClickException):
    """Ctrl-C: what was kept and how to go on, exit status 130 (128 + SIGINT) like a shell."""

    exit_code = 130


def _out_of(argv: list[str]) -> str | None:
    """The --out of a command line (None without one)."""
    out = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"), None)
    for a in argv:
        if a.startswith("--out="):
            out = a.split("=", 1)[1]
    return out


def interrupted_line(prog: str, argv: list[str]) -> str:
    """'interrupted; <what was kept>; resume with: <the exact command>' from the command line."""
    command = next((a for a in argv if not a.startswith("-")), "")
    out = _out_of(argv)
    if command not in KEPT or out is None:
        return "interrupted; nothing was kept to resume, run the command again"
    words, hid = hide_argv([a for a in argv if a != "--overwrite"])
    if "--resume" not in words and "--repair" not in words:
        words.append("--resume")
    kept = (KEPT if _kept_anything(command, out) else NOTHING_KEPT)[command].format(out=out)
    again = (f" (the {' and '.join(SECRET_OPTIONS)} values are hidden: give them again)"
             if hid else "")
    return (f"interrupted; {kept}; resume with: "
            f"{shlex.join([prog, *words])}{again}")


# Errors only a write can cause: without a file name in the error, they are --out's.
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
                errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}


def os_error_line(exc: OSError, *, out: str | None = None) -> str:
    """One line for an operating-system error: the file, and what the disk said."""
    reason = WRITE_ERRNOS.get(exc.errno) or exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    if exc.errno in WRITE_ERRNOS and out is not None:
        return f"{out}: cannot write: {reason}"
    return f"{reason} ({exc})" if str(exc) != reason else reason


class LazyGroup(click.Group):
    """Sub-commands given as ``name -> "module:attribute"``, imported on first use.

    Also the one place where a library ``DvflError`` becomes a command-line error: one line
    on stderr ("Error: ..."), exit status 1, no traceback.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DvflError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            prog = self.prog_name or ctx.info_name or "dvfl"
            raise Interrupted(interrupted_line(prog, sys.argv[1:])) from None
        except OSError as exc:  # a read-only or full disk, a vanished folder: say which
            raise click.ClickException(os_error_line(exc, out=_out_of(sys.argv[1:]))) from None

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None,
                 prog_name: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})
        self.prog_name = prog_name  # how users type it (however it was launched)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            module_name, attr = self.lazy_commands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


def lazy_main(*, prog_name: str, doc: str, commands: dict[str, str]) -> click.Group:
    """The top-level group of one dvfl entry point: --version, -v/-q logging, lazy commands.

    Called when the entry point's module is imported, before any command imports torch, so
    it is where passive OpenMP waiting is asked for (``runtime.passive_openmp_waits``)."""
    from dvfl_cache import __version__
    from dvfl_cache.runtime import passive_openmp_waits

    passive_openmp_waits()

    @click.group(cls=LazyGroup, lazy_commands=commands, prog_name=prog_name, help=doc,
                 context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
    @click.version_option(__version__, prog_name=prog_name)
    @click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
    def main(verbose: int, quiet: bool) -> None:
        setup_logging(-1 if quiet else verbose)

    return main


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Storage clients narrate every credential lookup and retry at INFO; our own messages say
    # what failed, and at -v (DEBUG) theirs come back.
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "gcsfs"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
