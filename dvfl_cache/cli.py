"""`dvfl-cache`: index datasets, generate synthetic data, build and inspect teacher-logit caches."""

from __future__ import annotations

import click

from dvfl_cache import __version__
from dvfl_cache.lazycli import LazyGroup, setup_logging

# name -> "module:click_command". Each command lives beside the library code it calls.
COMMANDS = {
    "index": "dvfl_cache.commands.data:index_cmd",
    "synth": "dvfl_cache.commands.data:synth_cmd",
    "probe": "dvfl_cache.commands.data:probe_cmd",
    "build": "dvfl_cache.commands.build:build_cmd",
    "info": "dvfl_cache.commands.store:info_cmd",
    "verify": "dvfl_cache.commands.store:verify_cmd",
    "export": "dvfl_cache.commands.store:export_cmd",
    "import": "dvfl_cache.commands.store:import_cmd",
    "pack": "dvfl_cache.commands.store:pack_cmd",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="dvfl-cache")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """Run a video teacher once over every sampled clip and cache its raw logits."""
    setup_logging(-1 if quiet else verbose)


if __name__ == "__main__":
    main()
