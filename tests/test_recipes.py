"""The dvfl-net preset against a table of the reference's values, kept here so drift is caught."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest

from dvfl_cache.errors import DvflError
from dvfl_cache.recipes import RecipeError, apply_recipe, get_recipe, list_recipes

# What DVFL-Net trains with, setting by setting, and where it comes from. "paper": arXiv
# 2507.12426; "yaml": configs/<dataset>/video-focalnet_nano_kd.yaml; "pipeline": the train
# pipeline of datasets/build.py and datasets/pipeline.py; "upstream": Video-FocalNets' main.py
# and config.py, which main_KD.py extends; "issue 14": the project's reading of main_KD.py and
# optimizer.py (not in the search index, so not re-verified). docs/reference-differences.md.
REFERENCE_TRAIN = {
    "model": "vfl-nano",             # yaml MODEL.TYPE videofocalnet_nano
    "num_frames": 8,                 # yaml DATA.NUM_FRAMES, scripts DATA.NUM_FRAMES 8
    "size": 224,                     # pipeline: Resize to INPUT_SIZE 224
    "drop_path": 0.1,                # yaml MODEL.DROP_PATH_RATE
    "alpha": 0.3,                    # paper (and yaml KD.ALPHA); scripts pass 0.2
    "tau": 10.0,                     # paper, yaml KD.TEMPERATURE, scripts
    "kd_form": "kl",                 # the paper's forward KL; the code's criterion is a defect
    "label_smoothing": 0.1,          # upstream config AUG.LABEL_SMOOTH (inside the blender)
    "mixup": 0.8,                    # yaml AUG.MIXUP
    "cutmix": 1.0,                   # upstream config AUG.CUTMIX
    "mix_prob": 1.0,                 # upstream main.py never passes MIXUP_PROB (yaml 0.5) on
    "optimizer": "sgd",              # yaml TRAIN.OPTIMIZER.NAME
    "momentum": 0.9,                 # issue 14
    "nesterov": True,                # issue 14
    "base_lr": 0.1,                  # yaml TRAIN.BASE_LR; upstream main.py scales it by batch/512
    "warmup_lr": 0.001,              # yaml TRAIN.WARMUP_LR
    "min_lr": 0.001,                 # yaml TRAIN.MIN_LR
    "epochs": 120,                   # yaml TRAIN.EPOCHS
    "warmup_epochs": 20,             # yaml TRAIN.WARMUP_EPOCHS
    "batch_size": 24,                # yaml DATA.BATCH_SIZE 8 x torchrun --nproc_per_node 3
    "weight_decay": 1e-4,            # yaml TRAIN.WEIGHT_DECAY (the code's ~0 is a defect)
    "clip_grad": 5.0,                # upstream config TRAIN.CLIP_GRAD
}
REFERENCE_BUILD = {
    "teacher": "vfn-base",           # yaml TEACHER_MODEL.TYPE videofocalnet_base
    "views_per_video": 120,          # the online teacher sees one fresh view per epoch, 120 epochs
    "frames": 8, "size": 224,
    "mixup": 0.8, "cutmix": 1.0, "mix_prob": 1.0,
}
REFERENCE_SAMPLER = {
    "temporal": "segment",           # pipeline: SampleFrames clip_len 1, num_clips 8 (TSN)
    "num_frames": 8,
    "short_side": 256,               # pipeline: Resize(-1, int(256 / 224 * 224))
    "crop_size": 224,                # pipeline: RandomResizedCrop then Resize 224 x 224
    "area": (0.08, 1.0),             # pipeline RandomResizedCrop defaults
    "ratio": (3 / 4, 4 / 3),
    "flip": 0.5,                     # yaml AUG.FLIP_RATIO
    "jitter": (0.4, 0.4, 0.2, 0.1),  # pipeline ColorJitter's defaults
    "jitter_p": 0.8,                 # yaml AUG.COLOR_JITTER (one coin per clip)
    "jitter_mode": "frame",          # pipeline: torchvision ColorJitter called once per frame
    "gray_p": 0.2,                   # yaml AUG.GRAY_SCALE
}
# FitConfig.mix_prob arrives with the student-side mixed replay (un-pend it then)
PENDING: set[str] = set()


def test_preset_equals_the_reference_table():
    recipe = get_recipe("dvfl-net")
    assert dict(recipe.train) == REFERENCE_TRAIN
    assert dict(recipe.build) == REFERENCE_BUILD
    assert dict(recipe.sampler) == REFERENCE_SAMPLER
    assert set(recipe.pending) == PENDING
    assert "init" in recipe.needs  # the ImageNet weights are the user's file
    for stage in ("fit", "sweep"):
        assert apply_recipe("dvfl-net", {}, stage=stage) == {**REFERENCE_TRAIN,
                                                              "sampler": REFERENCE_SAMPLER}
    assert apply_recipe("dvfl-net", {}, stage="build") == {**REFERENCE_BUILD,
                                                           "sampler": REFERENCE_SAMPLER}


def test_settings_name_real_fields_unless_pending():
    from dvfl_cache.cache.build import BuildConfig
    from dvfl_cache.data.views import ViewSampler
    from dvfl_train.config import FitConfig

    recipe = get_recipe("dvfl-net")
    for prefix, values, cls in (("train", recipe.train, FitConfig),
                                ("build", recipe.build, BuildConfig),
                                ("sampler", recipe.sampler, ViewSampler)):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = {k for k in values if k not in names and f"{prefix}.{k}" not in recipe.pending}
        assert not unknown, f"{prefix} settings that are no {cls.__name__} field: {unknown}"
        # a pending setting that now exists must be un-pended, or --recipe would skip it
        landed = {k for k in values if k in names and f"{prefix}.{k}" in recipe.pending}
        assert not landed, f"{prefix} settings still pending but now fields: {landed}"
    # what exists today builds: a sampler and a FitConfig from the preset's present fields
    present = {k: v for k, v in recipe.sampler.items() if f"sampler.{k}" not in recipe.pending}
    assert ViewSampler(**present).jitter == (0.4, 0.4, 0.2, 0.1)
    train = {k: v for k, v in recipe.train.items() if f"train.{k}" not in recipe.pending}
    cfg = FitConfig(dataset="ucf101", data_root="/d", out_dir="/r", **train)
    assert cfg.scaled_lrs() == pytest.approx((0.1 * 24 / 512, 0.001 * 24 / 512,
                                              0.001 * 24 / 512))


def test_explicit_settings_win_and_nothing_is_shared():
    out = apply_recipe("dvfl-net", {"alpha": 0.5, "epochs": 3, "sampler": {"flip": 0.0}})
    assert out["alpha"] == 0.5 and out["epochs"] == 3 and out["tau"] == 10.0
    assert out["sampler"]["flip"] == 0.0 and out["sampler"]["gray_p"] == 0.2
    out["sampler"]["gray_p"] = 1.0
    assert get_recipe("dvfl-net").sampler["gray_p"] == 0.2
    # a flag equal to today's built-in default is still explicit and still wins
    assert apply_recipe("dvfl-net", {"weight_decay": 0.0})["weight_decay"] == 0.0
    assert apply_recipe("dvfl-net", {"mixup": 0.0}, stage="build")["mixup"] == 0.0


def test_unknown_recipe_and_stage_fail_loudly():
    assert list_recipes() == ("dvfl-net",)
    with pytest.raises(RecipeError, match=r"unknown recipe 'dvfl'; known recipes: dvfl-net"):
        apply_recipe("dvfl", {})
    with pytest.raises(RecipeError, match=r"unknown stage 'train'; known: build, fit, sweep"):
        apply_recipe("dvfl-net", {}, stage="train")
    assert issubclass(RecipeError, DvflError)  # the CLI prints one line, no traceback


def test_recipes_module_does_not_import_torch():
    code = "import sys, dvfl_cache.recipes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- through the command line: --recipe, --print-config ------------------------------------------

TINY_STUDENT = ["--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1", "--frames", "2",
                "--size", "32", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4",
                "--workers", "0", "--device", "cpu"]


def _json(value):
    """A table value as JSON records it (tuples are lists)."""
    return json.loads(json.dumps(value))


def _invoke(entry: str, args: list[str]):
    from click.testing import CliRunner

    if entry == "dvfl-train":
        from dvfl_train.cli import main
    else:
        from dvfl_cache.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _printed(entry: str, args: list[str]) -> dict:
    result = _invoke(entry, [*args, "--print-config"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _present(table: dict, prefix: str) -> dict:
    return {k: v for k, v in table.items() if f"{prefix}.{k}" not in PENDING}


def _check_sampler(sampler: dict, *, frames: int) -> None:
    expected = _json(REFERENCE_SAMPLER)
    assert frames == expected.pop("num_frames")  # the run's --frames sets the sampler's
    assert sampler == expected


def test_fit_print_config_is_the_reference_table(tmp_path, caplog):
    out = tmp_path / "run"
    base = ["fit", "--recipe", "dvfl-net", "--dataset", "ucf101", "--root", tmp_path,
            "--out", out]
    # plain CE (no teacher): every setting but the KD weight, which FitConfig's rule makes 0
    with caplog.at_level(logging.WARNING):
        config = _printed("dvfl-train", base)
    for key, value in _present(REFERENCE_TRAIN, "train").items():
        assert config[key] == (0.0 if key == "alpha" else _json(value)), key
    _check_sampler(config["sampler"], frames=config["num_frames"])
    assert not out.exists()  # nothing written
    # --init is the user's file: the preset names it in a warning
    assert "ImageNet-1K FocalNet-T" in caplog.text and "--init FILE" in caplog.text
    # with a cache: the recipe's alpha, and the cache's mixing (none from the recipe)
    config = _printed("dvfl-train", [*base, "--cache", tmp_path / "some.zarr"])
    assert (config["alpha"], config["tau"]) == (0.3, 10.0)
    assert (config["mixup"], config["cutmix"]) == (0.0, 0.0)
    assert config["optimizer"] == "sgd" and config["nesterov"] is True
    assert not out.exists()


def test_fit_print_config_is_what_the_run_records(synth_root, tmp_path, caplog):
    """--print-config prints the config.json the same command writes; --init silences the
    warning."""
    from dvfl_cache.models import create_model, save_checkpoint

    save_checkpoint(tmp_path / "init.pt", create_model("vfl-nano", num_classes=4, num_frames=2,
                                                       img_size=32, embed_dim=8,
                                                       depths=[1, 1, 1, 1]))
    args = ["fit", "--recipe", "dvfl-net", "--dataset", "ucf101", "--root", synth_root,
            *TINY_STUDENT, "--init", tmp_path / "init.pt", "--out", tmp_path / "run"]
    with caplog.at_level(logging.WARNING):
        printed = _printed("dvfl-train", args)
    assert "FocalNet-T" not in caplog.text
    assert not (tmp_path / "run").exists()
    result = _invoke("dvfl-train", args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == printed
    assert printed["label_smoothing"] == 0.1 and printed["mixup"] == 0.8  # the recipe's
    assert printed["epochs"] == 1 and printed["size"] == 32  # the user's


def test_explicit_flags_win_over_the_recipe(tmp_path):
    # each flag equals the built-in default, so only its source tells it from a default
    config = _printed("dvfl-train", [
        "fit", "--recipe", "dvfl-net", "--dataset", "ucf101", "--root", tmp_path,
        "--out", tmp_path / "r", "--label-smoothing", "0", "--no-nesterov", "--tau", "2",
        "--sampler-opt", "flip=0", "--cache", tmp_path / "c.zarr", "--alpha", "0.7"])
    assert (config["label_smoothing"], config["nesterov"], config["tau"]) == (0.0, False, 2.0)
    assert config["alpha"] == 0.7
    assert config["sampler"]["flip"] == 0 and config["sampler"]["gray_p"] == 0.2
    record = _printed("dvfl-cache", ["build", "--recipe", "dvfl-net", "--dataset", "ucf101",
                                     "--root", tmp_path, "--out", tmp_path / "c.zarr",
                                     "--gray", "0", "--views-per-video", "1", "--mixup", "0"])
    assert record["sampler"]["params"]["gray_p"] == 0.0
    assert record["sampler"]["params"]["jitter_mode"] == "frame"  # the recipe's, not given
    assert record["views_per_video"] == 1
    assert record["mix"] == {"mixup": 0.0, "cutmix": 1.0, "prob": 1.0, "seed": 0}


def test_build_print_config_is_the_reference_table_and_does_no_work(tmp_path):
    out = tmp_path / "c.zarr"
    # no --weights and no --random-weights: a build would refuse to load a teacher
    record = _printed("dvfl-cache", ["build", "--recipe", "dvfl-net", "--dataset", "ucf101",
                                     "--root", tmp_path, "--out", out])
    assert not out.exists()
    build = record["build"]
    for key, value in _present(REFERENCE_BUILD, "build").items():
        assert build[key] == _json(value), key
    params = dict(record["sampler"]["params"])
    assert params.pop("size") == REFERENCE_BUILD["size"]
    assert {k: params[k] for k in REFERENCE_SAMPLER} == _json(REFERENCE_SAMPLER)
    assert record["mix"]["mixup"] == 0.8 and record["mix"]["cutmix"] == 1.0


def test_build_recipe_asks_for_weights_only_when_the_teacher_needs_a_file(tmp_path, caplog):
    base = ["build", "--recipe", "dvfl-net", "--dataset", "ucf101", "--root", tmp_path,
            "--out", tmp_path / "c.zarr", "--print-config"]
    with caplog.at_level(logging.WARNING):
        assert _invoke("dvfl-cache", base).exit_code == 0
    assert "--weights FILE" in caplog.text
    caplog.clear()
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"")
    for extra in (["--random-weights"], ["--teacher", str(ckpt)]):
        with caplog.at_level(logging.WARNING):
            assert _invoke("dvfl-cache", [*base, *extra]).exit_code == 0
        assert "--weights FILE" not in caplog.text, extra


def test_build_print_config_is_the_stored_metadata(synth_index, tmp_path):
    """The sampler and mixing sections printed are those the same build stores."""
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.index import save_index

    save_index(synth_index, tmp_path / "train.json")
    args = ["build", "--recipe", "dvfl-net", "--index", tmp_path / "train.json",
            "--teacher", "vfl-nano", "--random-weights", "--teacher-opt", "embed_dim=8",
            "--teacher-opt", "depths=1,1,1,1", "--frames", "2", "--size", "32",
            "--views-per-video", "1", "--workers", "0", "--device", "cpu",
            "--out", tmp_path / "c.zarr"]
    printed = _printed("dvfl-cache", args)
    assert not (tmp_path / "c.zarr").exists()
    result = _invoke("dvfl-cache", args)
    assert result.exit_code == 0, result.output
    meta = CacheReader(tmp_path / "c.zarr").meta.to_dict()
    for key in ("sampler", "mix", "views_per_video", "num_frames", "dtype", "views_per_shard"):
        assert printed[key] == meta[key], key


def test_sweep_print_config_is_the_reference_point(tmp_path):
    out = tmp_path / "sweep"
    plan = _printed("dvfl-train", ["sweep", "--recipe", "dvfl-net", "--dataset", "ucf101",
                                   "--root", tmp_path, "--cache", tmp_path / "c.zarr",
                                   "--seeds", "0,1", "--out", out])
    assert not out.exists()
    kd = [(p["alpha"], p["tau"]) for p in plan["points"] if p["alpha"] > 0]
    assert kd == [(0.3, 10.0)] * 2  # the grid is the recipe's point
    for key, value in _present(REFERENCE_TRAIN, "train").items():
        if key not in ("alpha", "tau", "mixup", "cutmix"):  # per student; from the cache
            assert plan["base"][key] == _json(value), key
    _check_sampler(plan["base"]["sampler"], frames=plan["base"]["num_frames"])
    # an explicit grid wins
    plan = _printed("dvfl-train", ["sweep", "--recipe", "dvfl-net", "--dataset", "ucf101",
                                   "--root", tmp_path, "--cache", tmp_path / "c.zarr",
                                   "--alphas", "0.5", "--out", out])
    assert sorted((p["alpha"], p["tau"]) for p in plan["points"]) == [(0.0, None), (0.5, 10.0)]


@pytest.mark.parametrize("entry,command", [("dvfl-train", "fit"), ("dvfl-train", "sweep"),
                                           ("dvfl-cache", "build")])
def test_unknown_recipe_is_one_line_listing_the_known(entry, command, tmp_path):
    result = _invoke(entry, [command, "--recipe", "dvfl", "--dataset", "ucf101", "--root",
                             tmp_path, "--out", tmp_path / "o", "--print-config"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: unknown recipe 'dvfl'; known recipes: dvfl-net"]


def test_sweep_print_config_is_the_sweep_json_it_writes(synth_root, tmp_path):
    args = ["sweep", "--recipe", "dvfl-net", "--dataset", "ucf101", "--root", synth_root,
            *TINY_STUDENT, "--alphas", "0", "--eval-views", "1", "--out", tmp_path / "s"]
    printed = _printed("dvfl-train", args)
    assert not (tmp_path / "s").exists()
    result = _invoke("dvfl-train", args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "sweep.json").read_text()) == printed
    assert printed["base"]["label_smoothing"] == 0.1 and printed["base"]["epochs"] == 1
