"""A click group whose sub-commands are imported only when used.

Why: importing torch, av and zarr costs seconds; `dvfl-cache --help` and a typo should not.
"""

from __future__ import annotations

import importlib
import logging

import click

from dvfl_cache.errors import DvflError


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

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            module_name, attr = self.lazy_commands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


def lazy_main(*, prog_name: str, doc: str, commands: dict[str, str]) -> click.Group:
    """The top-level group of one dvfl entry point: --version, -v/-q logging, lazy commands."""
    from dvfl_cache import __version__

    @click.group(cls=LazyGroup, lazy_commands=commands, help=doc,
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
