"""`dvfl-train`: train, sweep, evaluate and profile students from a teacher-logit cache."""

from __future__ import annotations

from dvfl_cache.lazycli import lazy_main

# name -> "module:click_command". Each command lives beside the library code it calls.
COMMANDS = {
    "profile": "dvfl_train.commands.profile:profile_cmd",
    "fit": "dvfl_train.commands.fit:fit_cmd",
    "sweep": "dvfl_train.commands.sweep:sweep_cmd",
    "eval": "dvfl_train.commands.evaluate:eval_cmd",
    "predict": "dvfl_train.commands.evaluate:predict_cmd",
    "explain": "dvfl_train.commands.explain:explain_cmd",
}


main = lazy_main(prog_name="dvfl-train", commands=COMMANDS,
                 doc="Train small video students from a cached teacher; sweep alpha/tau; evaluate; "
                     "explain; profile.")


if __name__ == "__main__":
    main()
