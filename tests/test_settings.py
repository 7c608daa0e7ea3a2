"""Settings declared once: the KEY=VALUE rule, config versions, Nesterov, the CLI's one-line
errors, and the module graph (no import circles; the config module imports neither torch nor
click)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dvfl_cache.errors import DvflError
from dvfl_cache.settings import parse_key_values

ROOT = Path(__file__).resolve().parents[1]


# -- KEY=VALUE ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("depths=1,1", [1, 1]), ("depths=[1,1,2,1]", [1, 1, 2, 1]), ("embed_dim=8", 8),
    ("drop=0.1", 0.1), ("use_checkpoint=true", True), ("temporal=stride", "stride"),
    ("area=0.5,1", [0.5, 1]), ("name=a,b", "a,b"), ("x=", ""), ("x=null", None),
])
def test_one_key_value_rule(text, value):
    assert parse_key_values([text], "--opt") == {text.partition("=")[0]: value}


@pytest.mark.parametrize("text, message", [("depths", "expected KEY=VALUE"),
                                           ("=3", "expected KEY=VALUE"),
                                           ("depths={", "not a JSON value"),
                                           ('x="a', "not a JSON value")])
def test_bad_key_values_are_one_error_naming_the_flag(text, message):
    with pytest.raises(DvflError, match=message) as info:
        parse_key_values([text], "--model-opt")
    assert str(info.value).startswith("--model-opt: ")


# -- the command line: one line per problem, the same rule everywhere ---------------------------

def _one_line(result, exit_code: int, *needles: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("Usage:"), result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.mark.parametrize("command, flag", [("fit", "--model-opt"), ("sweep", "--model-opt"),
                                           ("build", "--teacher-opt"),
                                           ("profile", "--model-opt")])
@pytest.mark.parametrize("value, message", [
    ("embed_dim=abc", "embed_dim=\"abc\": model 'vfl-nano' expects an integer"),
    ("depths=x", "expects a comma list like"),
    ("use_checkpoint=3", "expects true or false"),
    ("embed_dims=8", "unknown option(s) embed_dims"),
])
def test_model_options_of_the_wrong_name_or_type_are_one_line(command, flag, value, message,
                                                              tmp_path, synth_root):
    from dvfl_cache.cli import main as cache_cli
    from dvfl_train.cli import main as train_cli

    data = ["--dataset", "ucf101", "--root", str(synth_root)]
    args = {"fit": [*data, "--model", "vfl-nano", "--out", str(tmp_path / "r")],
            "sweep": [*data, "--alphas", "0", "--out", str(tmp_path / "s")],
            "build": [*data, "--teacher", "vfl-nano", "--random-weights",
                      "--out", str(tmp_path / "c.zarr")],
            "profile": ["--model", "vfl-nano"]}[command]
    cli = cache_cli if command == "build" else train_cli
    result = CliRunner().invoke(cli, [command, *args, flag, value])
    _one_line(result, 2, flag, message)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_dvfl_error_is_a_plain_exception_and_the_cli_prints_it_as_one_line(tmp_path):
    from dvfl_train.cli import main

    assert issubclass(DvflError, Exception) and not issubclass(DvflError, click.ClickException)
    result = CliRunner().invoke(main, ["fit", "--out", str(tmp_path / "r")])
    _one_line(result, 1, "Error: name the training videos: --dataset KIND --root DIR")


def test_cli_choices_come_from_the_registries():
    from dvfl_cache.data.readers import KINDS
    from dvfl_cache.models.registry import MODEL_NAMES
    from dvfl_train.commands.fit import fit_cmd
    from dvfl_train.config import KD_FORMS, OPTIMIZERS, PRED_LOSSES, REP_LOSSES, TEACHER_MIXES

    choices = {p.name: tuple(p.type.choices) for p in fit_cmd.params
               if isinstance(p.type, click.Choice)}
    assert choices == {"dataset": KINDS, "model": MODEL_NAMES, "optimizer": OPTIMIZERS,
                       "kd_form": KD_FORMS, "pred_loss": PRED_LOSSES, "rep_loss": REP_LOSSES,
                       "teacher_mix": TEACHER_MIXES}


# -- config versions ----------------------------------------------------------------------------

def _round1_config() -> dict:
    """A config.json as round 1 wrote it: version 1, no nesterov."""
    return {"version": 1, "dataset": "ucf101", "data_root": "data", "out_dir": "run",
            "cache": "c.zarr", "momentum": 0.9, "optimizer": "sgd"}


def test_a_round_one_config_loads_with_its_old_behaviour():
    from dvfl_train.config import CONFIG_VERSION, FitConfig

    cfg = FitConfig.from_dict(_round1_config())
    assert cfg.nesterov is False and cfg.momentum == 0.9
    assert cfg.to_dict()["version"] == CONFIG_VERSION == 3
    assert cfg.cache == ("c.zarr",) and cfg.to_dict()["cache"] == ["c.zarr"]
    assert FitConfig.from_dict(cfg.to_dict()) == cfg


def test_a_field_newer_than_the_files_version_is_one_clear_error():
    from dvfl_train.config import ConfigError, FitConfig

    with pytest.raises(ConfigError, match=r"^x/config.json: field 'nesterov' is from config "
                                          r"version 2, but the file says version 1$"):
        FitConfig.from_dict({**_round1_config(), "nesterov": True}, source="x/config.json")
    with pytest.raises(ConfigError, match="unknown field.*'warp'.*newer dvfl"):
        FitConfig.from_dict({**_round1_config(), "version": 2, "warp": 1})


def test_round_one_configs_load_from_config_json_and_from_a_checkpoint(tmp_path):
    """Version-1 configs in config.json and in a checkpoint load, and a run directory holding
    one accepts it back on resume (its upgraded form compares equal)."""
    import torch

    from dvfl_train.checkpoint import RunDir
    from dvfl_train.config import FitConfig, load_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**_round1_config(), "out_dir": str(run)}))
    old = load_config(run / "config.json")
    RunDir(run, resume=True).write_config(old)  # same config: resuming is allowed
    torch.save({"config": _round1_config()}, tmp_path / "last.pt")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert FitConfig.from_dict(state["config"]).nesterov is False


def _version2_config(run) -> dict:
    """A config.json as version 2 wrote it: one cache path (or null), no teacher_mix or
    views_subset."""
    cfg = {**_round1_config(), "version": 2, "out_dir": str(run), "nesterov": True,
           "kd_form": "kl", "pred_loss": "kl", "rep_loss": "mean", "mix_prob": 1.0,
           "mix_scheme": "row"}
    return cfg


def test_a_version_two_config_loads_resumes_and_is_compared_by_its_cache(tmp_path):
    """Version 2 stored `cache` as one path or null: it loads as a list of one (or none), a run
    directory holding it resumes with the same cache (also named another way), and a version-2
    sweep.json base compares equal to the same sweep today."""
    from dvfl_train.checkpoint import RunDir, RunDirError
    from dvfl_train.config import ConfigError, FitConfig, load_config, resume_differences

    run = tmp_path / "run"
    run.mkdir()
    old = _version2_config(run)
    (run / "config.json").write_text(json.dumps(old))
    cfg = load_config(run / "config.json")
    assert cfg.cache == ("c.zarr",) and cfg.teacher_mix == "mean-logits"
    assert cfg.views_subset is None  # all the cache's views, as version 2 ran (cache_views.py)
    RunDir(run, resume=True).write_config(cfg)
    assert json.loads((run / "config.json").read_text())["cache"] == ["c.zarr"]
    assert FitConfig.from_dict({**old, "cache": None}).cache == ()
    # a version-2 record (one path) against today's (a list of one): no difference
    assert resume_differences({"cache": "c.zarr"}, {"cache": ["c.zarr"]}) == []
    assert resume_differences({"cache": None}, {"cache": []}) == []
    assert resume_differences({"cache": "c.zarr"}, {"cache": ["c.zarr", "d.zarr"]}) == [
        "cache: ['c.zarr'] -> ['c.zarr', 'd.zarr']"]
    with pytest.raises(RunDirError, match="cache"):
        RunDir(run, resume=True).write_config(FitConfig.from_dict({**old, "cache": "d.zarr"}))
    with pytest.raises(ConfigError, match="'teacher_mix' is from config version 3"):
        FitConfig.from_dict({**old, "teacher_mix": "mean-probs"})
    with pytest.raises(ConfigError, match="'cache' expects a list of strings"):
        FitConfig.from_dict({**old, "cache": ["c.zarr", 3]})


def test_nesterov_needs_sgd_with_momentum():
    from dvfl_train.config import ConfigError, FitConfig

    base = dict(dataset="ucf101", data_root="d", out_dir="o", alpha=0.0, nesterov=True)
    FitConfig(**base).validate()
    for change in ({"optimizer": "adamw"}, {"momentum": 0.0}):
        with pytest.raises(ConfigError, match="nesterov needs optimizer=sgd with momentum > 0"):
            FitConfig(**{**base, **change}).validate()


def test_from_cli_takes_kind_and_root_from_the_index_and_alpha_from_the_teacher(synth_index,
                                                                                tmp_path):
    from dvfl_cache.data.index import save_index
    from dvfl_train.config import FitConfig

    save_index(synth_index, tmp_path / "train.json")
    cfg = FitConfig.from_cli({"train_index": str(tmp_path / "train.json"), "dataset": None,
                              "data_root": None, "out_dir": tmp_path / "r", "alpha": None})
    assert (cfg.dataset, cfg.data_root, cfg.alpha) == ("ucf101", synth_index.root, 0.0)
    cfg = FitConfig.from_cli({"dataset": "ucf101", "data_root": "d", "out_dir": "r",
                              "alpha": None, "cache": "c.zarr"})
    assert cfg.alpha == 0.3 and cfg.out_dir == "r"
    assert cfg.cache == (os.path.abspath("c.zarr"),)  # named absolutely: resumable anywhere
    cfg = FitConfig.from_cli({"dataset": "ucf101", "data_root": "d", "out_dir": "r",
                              "alpha": None, "cache": ("a.zarr", "s3://b/c.zarr")})
    assert cfg.cache == (os.path.abspath("a.zarr"), "s3://b/c.zarr")
    cfg = FitConfig.from_cli({"dataset": "ucf101", "data_root": "d", "out_dir": "r",
                              "alpha": None, "cache": ()})  # `fit` without --cache
    assert cfg.cache == () and cfg.alpha == 0.0


# -- the module graph ---------------------------------------------------------------------------

def _imports() -> dict[str, set[str]]:
    """Module -> the dvfl modules it imports anywhere (lazy imports in functions included)."""
    mods = {}
    for pkg in ("dvfl_cache", "dvfl_train"):
        for p in (ROOT / pkg).rglob("*.py"):
            if p.name != "__init__.py":
                mods[".".join(p.relative_to(ROOT).with_suffix("").parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            graph[m] |= {n for n in names if n in mods and n != m}
    return graph


def test_no_import_circles():
    graph = _imports()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, path + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    # the graph is the real one: the dispatcher imports the per-kind readers, the loop the plan
    assert "dvfl_cache.data.readers_web" in graph["dvfl_cache.data.readers"]
    assert "dvfl_train.sweep_plan" in graph["dvfl_train.sweep"]


def test_the_config_module_imports_neither_torch_nor_click():
    code = ("import sys, dvfl_train.config, dvfl_cache.data.views; "
            "print(sorted(m for m in ('torch', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "[]"
    # and the commands whose options come from the settings still start without torch
    code = ("import sys, dvfl_cache.commands.build, dvfl_train.commands.fit, "
            "dvfl_train.commands.sweep; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("option, message", [("strid=2", "unknown option(s) strid for ViewSampler"),
                                             ("temporal=zigzag", "temporal sampler must be")])
def test_bad_sampler_options_are_refused_before_any_data_is_read(option, message, tmp_path):
    from dvfl_train.cli import main

    result = CliRunner().invoke(main, ["fit", "--dataset", "ucf101", "--root", str(tmp_path),
                                       "--out", str(tmp_path / "run"), "--sampler-opt", option])
    _one_line(result, 1, "Error: invalid run config", message)
    assert not (tmp_path / "run").exists()
