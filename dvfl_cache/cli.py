"""`dvfl-cache`: index datasets, generate synthetic data, build and inspect teacher-logit caches."""

from __future__ import annotations

from dvfl_cache.lazycli import lazy_main

# name -> "module:click_command". Each command lives beside the library code it calls.
COMMANDS = {
    "index": "dvfl_cache.commands.data:index_cmd",
    "synth": "dvfl_cache.commands.data:synth_cmd",
    "probe": "dvfl_cache.commands.data:probe_cmd",
    "build": "dvfl_cache.commands.build:build_cmd",
    "extend": "dvfl_cache.commands.extend:extend_cmd",
    "info": "dvfl_cache.commands.store:info_cmd",
    "verify": "dvfl_cache.commands.store:verify_cmd",
    "export": "dvfl_cache.commands.store:export_cmd",
    "import": "dvfl_cache.commands.store:import_cmd",
    "pack": "dvfl_cache.commands.store:pack_cmd",
    "card": "dvfl_cache.commands.store:card_cmd",
}


main = lazy_main(prog_name="dvfl-cache", commands=COMMANDS,
                 doc="Run a video teacher once over every sampled clip and cache its raw logits.")


if __name__ == "__main__":
    main()
