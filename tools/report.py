"""Write the result tables of docs/benchmarks.md from benchmarks/results/*.json.

    python tools/report.py            # rewrite the tables between the marker comments
    python tools/report.py --check    # exit 1 (and say which) if a table differs from its JSON

Why: a number typed by hand into a report drifts from the run that produced it. Each published
run is one JSON file (its numbers and its conditions: machine, load, OpenMP waits, commit,
date; see tools/_conditions.py), and each table in the report lies between

    <!-- results:NAME -->  ...  <!-- /results:NAME -->

where NAME is the file's stem; everything between the markers is generated. A result file
with no marker of its own goes to the block ``<!-- results:other -->``, one generic table per
file under its kind, so a new benchmark's results show up without editing this script. The
block ``<!-- results:summary -->`` is the table of goals: one row per ``headline`` entry
(``what``, ``goal``, ``result``, ``order``) of any file, with the file's date.

A result file is a JSON object with:
- ``kind`` (which benchmark), ``title`` (one line), ``source`` (``"tool"`` when the benchmark
  wrote it, else where the numbers were transcribed from), ``conditions``;
- the table: ``rows`` (a list of objects; ``columns`` optionally gives their order and headers
  as ``[[key, header], ...]``); without ``rows``, every scalar of the file (outside
  ``conditions``) becomes a row of a key / value table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
META = ("kind", "title", "source", "conditions", "columns", "rows", "note", "headline")
MARK = re.compile(r"<!-- results:(?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /results:(?P=name) -->",
                  re.S)


def load_results(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """stem -> result, every ``*.json`` of ``folder``. A file that is not JSON is an error naming
    it; JSON in another shape is taken as it is (a benchmark's raw output copied in: its kind is
    its file name, a list becomes ``values``), so a new tool's results never break the report."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            data = {"values": data}
        out[path.stem] = {"kind": path.stem, **data}
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value) if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _openmp(cond: dict[str, Any], by_tool: bool) -> str:
    """The wait policy: what the environment set, libgomp's spinning default where a tool
    recorded an empty environment, "not recorded" for a transcribed run."""
    env = cond.get("openmp_env") or {}
    set_ = [f"{k}={v}" for k, v in env.items() if v is not None and k != "OMP_NUM_THREADS"]
    if set_:
        return ", ".join(set_)
    if by_tool and env:
        return "libgomp default (spinning)"
    return "not recorded"


def conditions_line(name: str, result: dict[str, Any]) -> str:
    """One line: when, on what, under which load and waits, from which commit."""
    c = result.get("conditions") or {}
    nr = "not recorded"
    date = c.get("date_utc") or nr
    if c.get("end_utc"):
        date = f"{date} to {c['end_utc'][11:]}"
    cores = c.get("cores")
    machine = c.get("cpu_model") or "CPU model " + nr
    machine += f", {cores} cores" if cores else ""
    threads = c.get("threads")
    lb, la = c.get("load_before"), c.get("load_after")
    load = (f"{fmt(lb[0] if isinstance(lb, list) else lb)} -> "
            f"{fmt(la[0] if isinstance(la, list) else la)}") if lb or la else nr
    commit = c.get("git_commit")
    commit = commit[:7] + (" (with local changes)" if c.get("git_dirty") else "") if commit else nr
    torch = (c.get("packages") or {}).get("torch")
    src = result.get("source", "tool")
    parts = [f"date {date}", f"machine: {machine}",
             f"threads {threads if threads is not None else nr}",
             f"OpenMP waits: {_openmp(c, src == 'tool')}", f"load average {load}", f"commit {commit}"]
    if torch:
        parts.append(f"torch {torch}")
    origin = "" if src == "tool" else f"; {src}"
    return (f"*Run: {'; '.join(parts)}{origin}. "
            f"Data: [{name}.json](../benchmarks/results/{name}.json).*")


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [kv for i, v in enumerate(value) for kv in _flatten(v, f"{prefix}{i}.")]
    return [(prefix[:-1], value)]


def table(result: dict[str, Any]) -> str:
    rows = result.get("rows")
    if rows:
        cols = result.get("columns") or [[k, k] for k in dict.fromkeys(k for r in rows for k in r)]
        lines = ["| " + " | ".join(h for _, h in cols) + " |",
                 "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
        return "\n".join(lines)
    pairs = _flatten({k: v for k, v in result.items() if k not in META})
    lines = ["| value | |", "|---|---:|"] + [f"| {k} | {fmt(v)} |" for k, v in pairs]
    return "\n".join(lines)


def block(name: str, result: dict[str, Any]) -> str:
    parts = [conditions_line(name, result)]
    if result.get("note"):
        parts.append(result["note"])
    parts.append(table(result))
    return "\n\n".join(parts)


def other_block(results: dict[str, dict[str, Any]], named: set[str]) -> str:
    rest = [n for n in results if n not in named]
    if not rest:
        return "No other result files."
    out = []
    for kind in sorted({results[n]["kind"] for n in rest}):
        for n in (n for n in rest if results[n]["kind"] == kind):
            out.append(f"**{kind}: {results[n].get('title', n)}**\n\n{block(n, results[n])}")
    return "\n\n".join(out)


def summary_block(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, r in results.items():
        date = ((r.get("conditions") or {}).get("date_utc") or "")[:10] or "not recorded"
        for h in r.get("headline") or []:
            rows.append((h.get("order", 1000), h["what"], h["goal"], h["result"],
                         f"{date}, [data](../benchmarks/results/{name}.json)"))
    lines = ["| what | goal | newest result | date |", "|---|---|---|---|"]
    lines += [f"| {w} | {g} | {fmt(res)} | {d} |" for _, w, g, res, d in sorted(rows)]
    return "\n".join(lines)


def render(doc: str, results: dict[str, dict[str, Any]]) -> str:
    """``doc`` with every marked block regenerated from ``results``; a marker naming no result
    file is an error."""
    named = {m["name"] for m in MARK.finditer(doc)} - {"other", "summary"}
    missing = sorted(named - set(results))
    if missing:
        raise SystemExit(f"{DOC.name}: markers name no file in benchmarks/results/: {missing}")

    def sub(m: re.Match) -> str:
        name = m["name"]
        body = (other_block(results, named) if name == "other" else
                summary_block(results) if name == "summary" else block(name, results[name]))
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    return MARK.sub(sub, doc)


def differences(doc: str, results: dict[str, dict[str, Any]]) -> list[str]:
    """Names of the marked blocks whose committed text differs from the generated one."""
    new = {m["name"]: m["body"] for m in MARK.finditer(render(doc, results))}
    old = {m["name"]: m["body"] for m in MARK.finditer(doc)}
    return sorted(n for n in old if old[n] != new.get(n))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if a table differs from its JSON")
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    doc = args.doc.read_text()
    results = load_results(args.results)
    if args.check:
        bad = differences(doc, results)
        for name in bad:
            print(f"{args.doc}: the table '{name}' differs from {args.results / name}.json; "
                  "run python tools/report.py", file=sys.stderr)
        return 1 if bad else 0
    new = render(doc, results)
    if new != doc:
        args.doc.write_text(new)
    print(f"{args.doc}: {len(MARK.findall(new))} tables from {len(results)} result files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
