"""CLI wiring: every option of `dvfl-train fit`, `dvfl-train sweep` and `dvfl-cache build` is set
to a non-default value and found in what the command wrote (config.json, sweep.json, the cache
metadata), or, for options that are not recorded, seen by its effect. A table entry per option:
a new option without one fails `test_every_option_has_a_wiring_entry`."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner

TINY = {"embed_dim": 8, "depths": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def files(synth_root, synth_index, synth_test_index, tmp_path_factory):
    """A 4-frame teacher checkpoint with a 2-view features cache of it, a 2-frame init checkpoint and
    the train/test index files."""
    from dvfl_cache.cache.build import BuildConfig, build_cache
    from dvfl_cache.data.index import save_index
    from dvfl_cache.models import create_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("wiring")
    torch.manual_seed(0)
    save_checkpoint(tmp / "teacher.pt", create_model("vfl-nano", num_classes=4, num_frames=4,
                                                     img_size=32, **TINY))
    save_checkpoint(tmp / "init.pt", create_model("vfn-tiny", num_classes=4, num_frames=2,
                                                  img_size=32, **TINY))
    build_cache(BuildConfig(out=str(tmp / "c.zarr"), teacher=str(tmp / "teacher.pt"),
                            frames=4, size=32, dtype="float32", features=True, workers=0,
                            device="cpu", views_per_video=2), synth_index)
    save_index(synth_index, tmp / "train.json")
    save_index(synth_test_index, tmp / "test.json")
    return tmp


# -- fit and sweep ------------------------------------------------------------------------------

# Options shared by fit and sweep: option -> (value on the command line, value in config.json),
# in three runs that cannot be one: a cache (A), an online teacher mixing per row (B), mixup
# without a teacher on half of the rows (C). Every value differs from the default.
SHARED = {
    "A": {
        "dataset": ("ucf101", "ucf101"),
        "split": ("2", 2),
        "val_index": ("{files}/test.json", "{files}/test.json"),
        "train_index": ("{files}/train.json", "{files}/train.json"),
        "val_subset": ("3", 3),
        "val_every": ("3", 3),
        "test_span": ("3", 3),
        "model": ("vfn-tiny", "vfn-tiny"),
        "model_opts": (["embed_dim=8", "depths=1,1,1,1"], TINY),
        "init": ("{files}/init.pt", "{files}/init.pt"),
        "drop_path": ("0.05", 0.05),
        "num_frames": ("2", 2),
        "size": ("32", 32),
        "sampler": (["temporal=stride", "stride=1"], {"temporal": "stride", "stride": 1}),
        "cache": ("{files}/c.zarr", ["{files}/c.zarr"]),
        # the cache has 2 views: ignored, the run would pin all 2; --teacher-mix needs two
        # caches: test_teacher_mix_reaches_fit_and_sweep_records
        "views_subset": ("1", 1),
        "beta": ("0.5", 0.5),
        "label_smoothing": ("0.1", 0.1),
        "epochs": ("1", 1),
        "warmup_epochs": ("1", 1),
        "batch_size": ("4", 4),
        "base_lr": ("0.2", 0.2),
        "warmup_lr": ("0.01", 0.01),
        "min_lr": ("0.002", 0.002),
        "momentum": ("0.8", 0.8),
        "nesterov": (True, True),
        "weight_decay": ("0.001", 0.001),
        "clip_grad": ("2.5", 2.5),
        "workers": ("0", 0),
        "device": ("cpu", "cpu"),
        "amp": (False, False),
        # its event files: test_tensorboard.py (read back with TensorBoard's reader)
        "tensorboard": (True, True),
        "kd_form": ("reference", "reference"),
        "rep_loss": ("sum", "sum"),
    },
    "B": {
        "teacher": ("vfl-nano", "vfl-nano"),
        "teacher_weights": ("{files}/teacher.pt", "{files}/teacher.pt"),
        "teacher_opts": (["embed_dim=8", "depths=1,1,1,1", "num_frames=4"],
                         {**TINY, "num_frames": 4}),
        "optimizer": ("adamw", "adamw"),
        "pred_loss": ("mse", "mse"),
        "mixup": ("0.8", 0.8),
        "cutmix": ("1.0", 1.0),
    },
    "C": {
        "mixup": ("0.2", 0.2),
        "cutmix": ("0.3", 0.3),
        "mix_prob": ("0.5", 0.5),  # its effect: test_train_mix.py (the epoch's mixed fraction)
    },
}
# What every run needs besides the options under test.
BASE = {"A": ["--root", "{root}/UCF-101"],  # with --index: where its videos are now
        "B": ["--dataset", "ucf101", "--root", "{root}", "--frames", "2", "--size", "32",
              "--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1", "--epochs", "1",
              "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0", "--device", "cpu"],
        "C": ["--dataset", "ucf101", "--root", "{root}", "--frames", "2", "--size", "32",
              "--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1", "--epochs", "1",
              "--warmup-epochs", "0", "--batch-size", "4", "--workers", "0", "--device", "cpu"]}
# fit's own options, recorded in config.json (run A).
FIT_ONLY = {"alpha": ("0.6", 0.6), "tau": ("3", 3.0), "seed": ("5", 5)}
# Options whose effect is checked by behaviour (test named), not by a recorded value.
FIT_BEHAVIOUR = {
    "data_root": "every run here: --root is where the videos are found",
    "out_dir": "every run here: config.json is read from --out",
    "threads": "test_fit_options_reach_config_json: torch threads after the run",
    "log_every": "test_fit_options_reach_config_json: one step record per step",
    "overwrite": "test_trainer.py::test_cli_fit_prints_epoch_lines_and_refuses_mixup_with_a_cache",
    "resume": "test_trainer.py::test_cli_fit_prints_epoch_lines_and_refuses_mixup_with_a_cache"
              " (the refusal names --resume); test_resume_* for the library",
    "recipe": "test_recipes.py::test_fit_print_config_is_the_reference_table (every value of "
              "the preset), test_explicit_flags_win_over_the_recipe",
    "print_config": "test_recipes.py::test_fit_print_config_is_what_the_run_records (the "
                    "config.json of the same command; nothing written)",
    "max_failed": "test_reliability.py::test_fit_past_max_failed_fails_and_never_checkpoints_"
                  "zero_steps (1 of 8 fails at 0.05, passes at 0.2)",
    "teacher_mix": "test_teacher_mix_reaches_fit_and_sweep_records (two caches); its effect: "
                   "test_ensemble.py::test_cli_fit_distils_from_two_caches",
    "storage_opts": "test_refusals.py::test_fit_and_sweep_read_an_s3_cache_by_storage_option "
                    "(no endpoint or credentials in the environment; never recorded)",
    "model_input": "test_any_teacher.py::test_py_teacher_build_verify_fit_eval (a channels-"
                   "first py: student fails without it)",
    "teacher_input": "test_any_teacher.py::test_py_online_teacher_needs_its_input",
    "teacher_classes": "test_any_teacher.py::test_online_teacher_labels_refused_or_mapped",
}
SWEEP_ONLY = {"alphas", "taus", "seeds", "baseline", "parallel", "eval_views", "seed"}
# recipe, print_config: test_recipes.py::test_sweep_print_config_is_the_reference_point;
# max_failed: test_reliability.py::test_sweep_evaluation_fails_past_the_budget
SWEEP_BEHAVIOUR = {"data_root", "out_dir", "threads", "log_every", "overwrite", "resume",
                   "recipe", "print_config", "max_failed", "teacher_mix", "storage_opts",
                   "model_input", "teacher_input", "teacher_classes"}


def _flag(cmd, name: str) -> str:
    return next(p for p in cmd.params if p.name == name).opts[0]


def _args(cmd, options: dict, fmt: dict) -> list[str]:
    out: list[str] = []
    for name, (value, _) in options.items():
        param = next(p for p in cmd.params if p.name == name)
        if value is True or value is False:  # a --x/--no-x pair
            out.append(param.opts[0] if value else param.secondary_opts[0])
        elif isinstance(value, list):
            for v in value:
                out += [param.opts[0], v]
        else:
            out += [param.opts[0], value.format(**fmt)]
    return out


def _expected(value, fmt: dict):
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.format(**fmt) for v in value]
    return value.format(**fmt) if isinstance(value, str) else value


def test_every_option_has_a_wiring_entry():
    from dvfl_cache.commands.build import build_cmd
    from dvfl_train.commands.fit import fit_cmd
    from dvfl_train.commands.sweep import sweep_cmd

    shared = {name for run in SHARED.values() for name in run}
    fit_params = {p.name for p in fit_cmd.params}
    assert fit_params == shared | set(FIT_ONLY) | set(FIT_BEHAVIOUR)
    sweep_params = {p.name for p in sweep_cmd.params}
    assert sweep_params == shared | SWEEP_ONLY | SWEEP_BEHAVIOUR
    assert {p.name for p in build_cmd.params} == set(BUILD_META) | set(BUILD_BEHAVIOUR)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_fit_options_reach_config_json(synth_root, files, tmp_path, threads):
    from dvfl_train.cli import main
    from dvfl_train.commands.fit import fit_cmd

    fmt = {"files": files, "root": synth_root}
    for run in "ABC":
        out = tmp_path / run
        options = {**SHARED[run], **(FIT_ONLY if run == "A" else {})}
        args = ["fit", *[a.format(**fmt) for a in BASE[run]], *_args(fit_cmd, options, fmt),
                "--out", str(out)]
        if run == "A":
            args += ["--threads", "2", "--log-every", "1"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        config = json.loads((out / "config.json").read_text())
        for name, (_, value) in options.items():
            assert config[name] == _expected(value, fmt), (run, name)
        if run == "A":
            assert config["data_root"] == str(synth_root / "UCF-101")
            assert torch.get_num_threads() == 2  # --threads
            steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            steps = [r for r in steps if r["type"] == "step"]
            assert len(steps) == 2  # --log-every 1: both steps of 8 videos in batches of 4
            # --momentum and --nesterov reach the optimizer itself, not just the record
            group = torch.load(out / "last.pt", weights_only=True)["optimizer"]["param_groups"][0]
            assert (group["momentum"], group["nesterov"]) == (0.8, True)
            torch.set_num_threads(1)
        if run == "C":
            assert config["alpha"] == 0.0  # no teacher: --alpha defaults to plain CE


@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_teacher_mix_reaches_fit_and_sweep_records(command, tmp_path):
    """--teacher-mix combines two or more caches (one or none is refused: test_refusals.py)."""
    from dvfl_train.cli import main

    args = [command, "--dataset", "ucf101", "--root", str(tmp_path), "--out", str(tmp_path / "r"),
            "--cache", str(tmp_path / "a.zarr"), "--cache", str(tmp_path / "b.zarr"),
            "--teacher-mix", "mean-probs", "--print-config"]
    result = CliRunner().invoke(main, args + (["--alphas", "0.5"] if command == "sweep" else []))
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert (record["base"] if command == "sweep" else record)["teacher_mix"] == "mean-probs"


def test_sweep_options_reach_every_students_config(synth_root, files, tmp_path, threads):
    from dvfl_train.cli import main
    from dvfl_train.commands.sweep import sweep_cmd

    fmt = {"files": files, "root": synth_root}
    for run in "ABC":
        out = tmp_path / run
        grid = (["--alphas", "0", "--seeds", "1,2", "--parallel", "1"] if run == "C" else
                ["--alphas", "0.5", "--taus", "2", "--seeds", "1", "--no-baseline"])
        args = ["sweep", *[a.format(**fmt) for a in BASE[run]],
                *_args(sweep_cmd, SHARED[run], fmt), *grid, "--seed", "7",
                "--eval-views", "1x1", "--out", str(out)]
        if run == "A":
            args += ["--threads", "2", "--log-every", "1"]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        plan = json.loads((out / "sweep.json").read_text())
        runs = sorted(p.name for p in (out / "runs").iterdir())
        assert runs == (["ce_s1", "ce_s2"] if run == "C" else ["a0.5_t2_s1"])  # --no-baseline
        assert plan["eval_views"] == ["1"]  # --eval-views 1x1 is the 1-view layout
        assert plan["parallel"] == (1 if run == "C" else None)
        assert "alpha" not in plan["base"] and "tau" not in plan["base"]  # per student only
        for name in runs:
            config = json.loads((out / "runs" / name / "config.json").read_text())
            for option, (_, value) in SHARED[run].items():
                assert config[option] == _expected(value, fmt), (run, name, option)
                assert plan["base"][option] == _expected(value, fmt), (run, option)
            assert config["data_seed"] == 7  # --seed is the data seed of every student
            assert (out / "runs" / name / "eval_1.json").exists()
        if run == "C":
            assert [json.loads((out / "runs" / n / "config.json").read_text())["seed"]
                    for n in runs] == [1, 2]  # --seeds
            assert "group 2/2: 1 student(s)" in result.output  # --parallel 1
        else:
            config = json.loads((out / "runs" / "a0.5_t2_s1" / "config.json").read_text())
            assert (config["alpha"], config["tau"], config["seed"]) == (0.5, 2.0, 1)
        if run == "A":
            assert torch.get_num_threads() == 2
            records = (out / "runs" / "a0.5_t2_s1" / "metrics.jsonl").read_text().splitlines()
            assert sum(json.loads(r)["type"] == "step" for r in records) == 2
            torch.set_num_threads(1)


# -- build --------------------------------------------------------------------------------------

# option -> (command-line value, where it shows in CacheMeta.to_dict(), expected value there)
BUILD_META = {
    "kind": ("ucf101", "dataset.kind", "ucf101"),
    "split": ("2", "dataset.split", 2),
    "subset": ("test", "dataset.subset", "test"),
    "teacher": ("vfn-tiny", "teacher.name", "vfn-tiny"),
    "random_weights": (True, "teacher.weights_sha256", None),
    "teacher_opts": (["embed_dim=8", "depths=1,1,1,1", "img_size=32"], "teacher.config.depths",
                     [1, 1, 1, 1]),
    "views_per_video": ("2", "views_per_video", 2),
    "frames": ("3", "num_frames", 3),
    "temporal": ("stride", "sampler.params.temporal", "stride"),
    "stride": ("2", "sampler.params.stride", 2),
    "flip": ("0.25", "sampler.params.flip", 0.25),
    "area": ("0.5,0.75", "sampler.params.area", [0.5, 0.75]),
    "jitter": ("0.1,0.2,0.3,0.05", "sampler.params.jitter", [0.1, 0.2, 0.3, 0.05]),
    "gray_p": ("0.3", "sampler.params.gray_p", 0.3),
    "jitter_mode": ("frame", "sampler.params.jitter_mode", "frame"),
    "mixup": ("0.5", "mix.mixup", 0.5),
    "cutmix": ("0.7", "mix.cutmix", 0.7),
    "mix_prob": ("0.5", "mix.prob", 0.5),
    "seed": ("9", "sampler.seed", 9),
    "dtype": ("float32", "dtype", "float32"),
    "features": (True, "feature_dim", 64),
    "views_per_shard": ("5", "views_per_shard", 5),
}
BUILD_BEHAVIOUR = {
    "views_from": "test_cache_sameviews.py::test_views_from_runs_another_teacher_on_the_same_views",
    "root": "test_build_options_reach_the_cache_metadata: --videos/--annotations under "
            "another --root",
    "videos_dir": "same", "annotations": "same",
    "index_path": "test_build_index_option_names_the_videos",
    "weights": "test_cache_build.py::test_build_stores_teacher_logits_of_the_stored_views "
               "(--weights / checkpoint teacher) and the sha256 check below",
    "size": "test_build_options_reach_the_cache_metadata: the stored crop is replayed at --size",
    "out": "every build here", "batch_size": "a debug record per teacher batch",
    "workers": "the build's start record", "device": "an unavailable --device is refused",
    "threads": "torch threads after the build",
    "resume": "test_cache_build.py (resume after a kill)",
    "overwrite": "test_cache_build.py (refuses an existing store without it)",
    "storage_opts": "test_cache_build_remote.py::test_build_into_s3_then_info_verify_card_and_fit"
                    " (the endpoint reaches the S3 server; its value is never recorded)",
    "claim_ttl_s": "test_cache_concurrent.py::test_claim_ttl_option_sets_the_claims_time_to_live",
    "recipe": "test_recipes.py::test_build_print_config_is_the_reference_table_and_does_no_work",
    "print_config": "test_recipes.py::test_build_print_config_is_the_stored_metadata",
    "max_failed": "test_cache_build.py::test_build_records_failed_videos (fails at 0.05, passes "
                  "at 0.2)",
    "repair": "test_reliability.py::test_repair_fixes_a_flipped_byte_and_equals_the_original",
    "teacher_input": "test_any_teacher.py::test_py_teacher_build_verify_fit_eval (the build "
                     "fails without layout=channels-first)",
    "teacher_classes": "test_any_teacher.py::test_teacher_labels_matched_refused_or_mapped",
    "check_teacher": "test_any_teacher.py::test_check_teacher_refuses_chance_and_force_records",
    "force": "test_any_teacher.py::test_check_teacher_refuses_chance_and_force_records",
    "check_index": "test_any_teacher.py::test_check_teacher_refuses_chance_and_force_records "
                   "(the test index's 8 videos are scored and named)",
}


def _at(d: dict, path: str):
    for key in path.split("."):
        d = d[key]
    return d


def test_build_options_reach_the_cache_metadata(synth_root, tmp_path, caplog, threads):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.cli import main
    from dvfl_cache.commands.build import build_cmd

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    args = ["build", "--root", str(empty), "--videos", str(synth_root / "UCF-101"),
            "--annotations", str(synth_root / "ucfTrainTestlist"), "--size", "64",
            "--batch-size", "3", "--workers", "0", "--device", "cpu", "--threads", "2",
            "--out", str(tmp_path / "c.zarr")]
    for name, (value, _, _) in BUILD_META.items():
        param = next(p for p in build_cmd.params if p.name == name)
        if value is True:
            args.append(param.opts[0])
        elif isinstance(value, list):
            for v in value:
                args += [param.opts[0], v]
        else:
            args += [param.opts[0], value]
    with caplog.at_level(logging.DEBUG, logger="dvfl_cache.cache.build"):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    meta = CacheReader(tmp_path / "c.zarr").meta.to_dict()
    for name, (_, path, expected) in BUILD_META.items():
        assert _at(meta, path) == pytest.approx(expected), name
    assert torch.get_num_threads() == 2
    batches = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher on")]
    rows = CacheReader(tmp_path / "c.zarr").meta.num_rows
    assert rows >= 4 and batches == [f"teacher on {min(3, rows - i)} views"
                                     for i in range(0, rows, 3)]  # --batch-size 3
    assert any("0 decoding workers" in r.getMessage() for r in caplog.records)
    # --size: replaying a stored view at 64 px through the same seeded teacher gives its logits
    from dvfl_cache.cache.build import load_teacher
    from dvfl_cache.data import mixes_from_arrays, replay_clip, views_from_arrays
    from dvfl_cache.data.readers import build_index
    from dvfl_cache.data.transforms import to_float

    reader = CacheReader(tmp_path / "c.zarr")
    block = reader.epoch_block(0)
    view = views_from_arrays(block)[0]
    mix = mixes_from_arrays(block, block["view"])[0]  # --mixup/--cutmix: row 0 may be mixed
    teacher, _ = load_teacher("vfn-tiny", weights=None, random_weights=True, num_classes=4,
                              num_frames=3, opts={**TINY, "img_size": 32}, seed=9)
    index = build_index("ucf101", synth_root, split=2, subset="test")
    clip = to_float(replay_clip(index, view, mix, 64))
    with torch.inference_mode():
        logits = teacher(clip[None])[0].numpy()
    assert abs(block["logits"][0] - logits).max() < 1e-5

    other = [str(tmp_path / "d.zarr") if a == str(tmp_path / "c.zarr") else a for a in args]
    refused = CliRunner().invoke(main, [*other, "--device", "cuda:7"])
    assert refused.exit_code == 1 and "--device cuda:7" in refused.output


def test_build_index_option_names_the_videos(synth_root, synth_test_index, tmp_path):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.cli import main
    from dvfl_cache.data.index import save_index

    save_index(synth_test_index, tmp_path / "test.json")
    args = ["build", "--index", str(tmp_path / "test.json"), "--teacher", "vfl-nano",
            "--random-weights", "--teacher-opt", "embed_dim=8", "--teacher-opt", "depths=1,1,1,1",
            "--frames", "2", "--size", "32", "--workers", "0", "--device", "cpu",
            "--out", str(tmp_path / "c.zarr")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert CacheReader(tmp_path / "c.zarr").meta.dataset.index_digest == synth_test_index.digest


# -- extend -------------------------------------------------------------------------------------

# Every `dvfl-cache extend` option, by its effect: the store records the settings extend takes
# from it, and a teacher or videos other than the store's are refused, so a wrongly passed
# dataset or teacher option fails the run below.
EXTEND_BEHAVIOUR = {
    "store": "every extend here",
    "kind": "test_extend_options_reach_the_run: a store of split 2 / test videos under another "
            "--root (--videos/--annotations) is extended; any of them lost changes the index "
            "digest and extend refuses",
    "root": "same", "split": "same", "subset": "same", "videos_dir": "same", "annotations": "same",
    "index_path": "test_extend_options_reach_the_run: the second extend names the videos by "
                  "--index",
    "teacher": "test_extend_options_reach_the_run: the store's checkpoint teacher by name (the "
               "default vfn-base is refused)",
    "weights": "test_extend_options_reach_the_run: the store's checkpoint (its sha256 is checked)",
    "random_weights": "test_cache_extend.py: every extend there runs a seeded random teacher",
    "teacher_opts": "test_cache_extend.py::test_extend_refuses_another_teacher_and_fewer_views",
    "views_per_video": "every extend here: the store's new views per video",
    "claim_ttl_s": "test_extend_options_reach_the_run: 'claims live 7 s'",
    "max_failed": "test_cache_extend.py::test_extend_past_max_failed_fails_and_keeps_the_store",
    "batch_size": "test_extend_options_reach_the_run: a debug record per teacher batch",
    "workers": "test_extend_options_reach_the_run: the start record",
    "device": "test_extend_options_reach_the_run: an unavailable --device is refused",
    "threads": "test_extend_options_reach_the_run: torch threads after the run",
    "storage_opts": "test_cache_build_remote.py::test_build_into_s3_then_info_verify_card_and_fit"
                    " (extend on the S3 server; the value is recorded hidden)",
    "teacher_input": "test_any_teacher.py::test_py_teacher_build_verify_fit_eval (extend "
                     "refuses another layout)",
    "teacher_classes": "test_any_teacher.py::test_teacher_labels_matched_refused_or_mapped "
                       "(extend of a mapped store needs the mapping)",
}


def test_every_extend_option_has_a_wiring_entry():
    from dvfl_cache.commands.extend import extend_cmd

    assert {p.name for p in extend_cmd.params} == set(EXTEND_BEHAVIOUR)


def test_extend_options_reach_the_run(synth_root, files, tmp_path, caplog, threads):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.cli import main

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = ["--dataset", "ucf101", "--root", str(empty), "--videos",
             str(synth_root / "UCF-101"), "--annotations", str(synth_root / "ucfTrainTestlist"),
             "--split", "2", "--subset", "test"]
    teacher = ["--teacher", "vfl-nano", "--weights", str(files / "teacher.pt"),
               "--teacher-opt", "embed_dim=8", "--teacher-opt", "depths=1,1,1,1"]
    store = tmp_path / "c.zarr"
    build = CliRunner().invoke(main, ["build", *where, *teacher, "--frames", "4", "--size", "32",
                                      "--views-per-shard", "3", "--workers", "0",
                                      "--device", "cpu", "--out", str(store)],
                               catch_exceptions=False)
    assert build.exit_code == 0, build.output
    run = ["extend", str(store), *where, *teacher, "--views-per-video", "2", "--batch-size", "2",
           "--workers", "0", "--device", "cpu", "--threads", "2", "--claim-ttl", "7",
           "--max-failed", "0"]
    refused = CliRunner().invoke(main, [*run, "--device", "cuda:7"])
    assert refused.exit_code == 1 and "--device cuda:7" in refused.output
    with caplog.at_level(logging.DEBUG, logger="dvfl_cache.cache"):
        result = CliRunner().invoke(main, run, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = CacheReader(store)
    assert r.complete and r.meta.views_per_video == 2
    assert torch.get_num_threads() == 2
    messages = [rec.getMessage() for rec in caplog.records]
    # rows n..2n-1 are new, and the partial shard's batches start at its first new row
    assert [m for m in messages if m.startswith("teacher on")] and all(
        m in ("teacher on 2 views", "teacher on 1 views")
        for m in messages if m.startswith("teacher on"))
    assert any("0 decoding workers, claims live 7 s" in m for m in messages)
    # --index: the same videos named by an index file; one more view
    from dvfl_cache.data.index import save_index
    from dvfl_cache.data.readers import build_index

    save_index(build_index("ucf101", synth_root, split=2, subset="test"), tmp_path / "test.json")
    idx = ["extend", str(store), "--index", str(tmp_path / "test.json"), *teacher,
           "--views-per-video", "3", "--workers", "0", "--device", "cpu"]
    result = CliRunner().invoke(main, idx, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert CacheReader(store).meta.views_per_video == 3 and CacheReader(store).complete


def test_every_option_of_every_command_has_help_text():
    """`--help` of each sub-command of both entry points explains every option (defaults are
    shown by the groups' show_default)."""
    import click

    from dvfl_cache.cli import COMMANDS as CACHE
    from dvfl_cache.cli import main as cache_main
    from dvfl_train.cli import COMMANDS as TRAIN
    from dvfl_train.cli import main as train_main

    bare = []
    for group, commands in ((cache_main, CACHE), (train_main, TRAIN)):
        ctx = click.Context(group)
        for name in commands:
            for p in group.get_command(ctx, name).params:
                if isinstance(p, click.Option) and not (p.help or "").strip():
                    bare.append(f"{name} {max(p.opts, key=len)}")
    assert bare == []
