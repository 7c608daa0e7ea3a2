"""Every `dvfl-cache` / `dvfl-train` command in README.md and docs/*.md parses.

Why: options get renamed and documents do not notice (docs/dataset-index.md once said
`fit --train-index`, an option that never existed). Each command is parsed by click against the
real CLI objects (the entry points' lazy groups), nothing is run: every option must exist for its
sub-command and every value must convert with the option's own type. Paths are not required to
exist, `...` stands for elided arguments, and an upper-case word (`FILE`, `N`, `KEY=VALUE`) is a
placeholder whose value is not converted.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGS = {"dvfl-cache": "dvfl_cache.cli", "dvfl-train": "dvfl_train.cli"}
MODULES = {"dvfl_cache.cli": "dvfl-cache", "dvfl_train.cli": "dvfl-train"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(=[A-Z0-9_.,{}\[\]-]*)?$|^<.*>$")


def _code_lines(text: str):
    """(line number, line) of the document's code: fenced blocks and 4-space indented blocks
    (continuation lines joined), then every inline code span."""
    lines = text.splitlines()
    fenced = False
    prev_blank = True
    in_indented = False
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        indented = line.startswith("    ") and (prev_blank or in_indented) and not line.lstrip().startswith(("-", "*", "|"))
        in_indented = indented or (in_indented and not line.strip())
        prev_blank = not line.strip()
        if fenced or indented:
            joined = line
            while joined.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined.rstrip()[:-1] + " " + lines[i].strip()
            yield start, joined, True
        i += 1
    for n, line in enumerate(lines, 1):
        for span in re.findall(r"`([^`]+)`", line):
            yield n, span, False


def _commands(path: Path):
    """(where, prog, argv) for every dvfl command written in ``path``."""
    text = path.read_text()
    for n, line, block in _code_lines(text):
        if "dvfl-cache" not in line and "dvfl-train" not in line and "dvfl_cache.cli" not in line \
                and "dvfl_train.cli" not in line:
            continue
        code = line.split(" #", 1)[0] if block else line
        for part in re.split(r"\s*(?:;|&&|\|\||\|)\s*", code):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            for k, w in enumerate(words):
                if w in PROGS:
                    prog = w
                elif w in MODULES and k > 0 and words[k - 1] == "-m":
                    prog = MODULES[w]
                else:
                    continue
                argv = words[k + 1:]
                if argv and not argv[0].startswith("-") and argv[0] != "...":
                    yield f"{path.name}:{n}", prog, argv
                break


def _all_commands():
    found = [c for p in DOCS for c in _commands(p)]
    assert len(found) > 40, "the extractor found too few commands: it is broken"
    return found


def _group(prog: str) -> click.Group:
    import importlib

    return importlib.import_module(PROGS[prog]).main


def _loose(ptype: click.ParamType) -> click.ParamType:
    """The type without the checks a document cannot satisfy (files that exist here)."""
    if isinstance(ptype, (click.Path, click.File)):
        return click.STRING
    return ptype


def check_command(prog: str, argv: list[str]) -> None:
    """Raise click.UsageError (or BadParameter) if ``argv`` does not parse for ``prog``."""
    group = _group(prog)
    name, *args = argv
    gctx = click.Context(group, info_name=prog)
    cmd = group.get_command(gctx, name)
    if cmd is None:
        raise click.UsageError(f"no sub-command {name!r}")
    # "[--probe]" is an optional part written in brackets: check the option inside them
    args = [a.strip("[]") for a in args if a.strip("[]") and a != "..." and not a.endswith("...")]
    ctx = click.Context(cmd, info_name=name, parent=gctx)
    parser = cmd.make_parser(ctx)
    opts, _, _ = parser.parse_args(args=list(args))
    for param in cmd.get_params(ctx):
        if param.name not in opts or not isinstance(param, click.Option):
            continue
        value = opts[param.name]
        values = value if isinstance(value, (list, tuple)) else [value]
        flat = [v for vs in values for v in (vs if isinstance(vs, (list, tuple)) else [vs])]
        if any(isinstance(v, str) and (PLACEHOLDER.match(v) or "..." in v) for v in flat):
            continue
        if param.is_flag:
            continue
        loose = copy.copy(param)
        loose.type = _loose(param.type)
        loose.type_cast_value(ctx, value)


COMMANDS = _all_commands()


@pytest.mark.parametrize("where,prog,argv", COMMANDS,
                         ids=[f"{w} {p} {a[0]}" for w, p, a in COMMANDS])
def test_documented_command_parses(where, prog, argv):
    try:
        check_command(prog, argv)
    except click.ClickException as exc:
        pytest.fail(f"{where}: {prog} {shlex.join(argv)}\n  {exc.format_message()}")


def test_checker_catches_unknown_option_and_bad_value():
    """The checker itself fails on what the documents once said (a test that cannot fail proves
    nothing)."""
    with pytest.raises(click.NoSuchOption):
        check_command("dvfl-train", ["fit", "--train-index", "a.json", "--val-index", "b.json"])
    with pytest.raises(click.BadParameter):
        check_command("dvfl-cache", ["build", "--views-per-video", "many", "--out", "x.zarr"])
    with pytest.raises(click.UsageError):
        check_command("dvfl-cache", ["no-such-command"])
    check_command("dvfl-train", ["fit", "--index", "a.json", "--epochs", "3", "..."])


def test_extractor_joins_continuation_lines(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("Text.\n\n    dvfl-cache build --dataset ucf101 \\\n        --views-per-video 4"
                   " --out s.zarr   # note\n\nand `dvfl-train eval --views 1`.\n")
    found = [(p, a) for _, p, a in _commands(doc)]
    assert ("dvfl-cache", ["build", "--dataset", "ucf101", "--views-per-video", "4", "--out",
                           "s.zarr"]) in found
    assert ("dvfl-train", ["eval", "--views", "1"]) in found
