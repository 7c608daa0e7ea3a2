"""`dvfl-train`: train, sweep, evaluate and profile students from a teacher-logit cache."""

from __future__ import annotations

import click

from dvfl_cache import __version__
from dvfl_cache.lazycli import LazyGroup, setup_logging

# name -> "module:click_command". Each command lives beside the library code it calls.
COMMANDS = {
    "profile": "dvfl_train.commands.profile:profile_cmd",
    "fit": "dvfl_train.commands.fit:fit_cmd",
    "sweep": "dvfl_train.commands.sweep:sweep_cmd",
    "eval": "dvfl_train.commands.evaluate:eval_cmd",
    "predict": "dvfl_train.commands.evaluate:predict_cmd",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="dvfl-train")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """Train small video students from a cached teacher; sweep alpha/tau; evaluate; profile."""
    setup_logging(-1 if quiet else verbose)


if __name__ == "__main__":
    main()
