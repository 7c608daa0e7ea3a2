"""`dvfl-train profile`: parameters, GMACs, latency, throughput and peak memory of a model."""

from __future__ import annotations

import json
from typing import Any

import click

from dvfl_cache.models.registry import MODEL_NAMES


def _parse_model_opts(pairs: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE with JSON values (``depths=[1,1,2,1]``, ``use_checkpoint=true``); a bare
    comma list like ``depths=1,1,2,1`` is read as a JSON list."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--model-opt")
        for candidate in (text, f"[{text}]"):
            try:
                options[key.strip()] = json.loads(candidate)
                break
            except json.JSONDecodeError:
                continue
        else:
            raise click.BadParameter(f"{key}: {text!r} is not a JSON value",
                                     param_hint="--model-opt")
    return options


def _gmacs(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = ("model", "params (M)", "GMACs/clip", "latency (ms)", "clips/s", "peak mem (MiB)")
    body = [(r["model"], f"{r['params'] / 1e6:.2f}", _gmacs(r["gmacs"]),
             f"{r['latency_ms']:.1f}", f"{r['clips_per_s']:.2f}", f"{r['peak_mem_mib']:.0f}")
            for r in rows]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    fmt = lambda row: "  ".join(  # noqa: E731
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    return [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, body)]


@click.command("profile")
@click.option("--model", "model_name", required=True, type=click.Choice([*MODEL_NAMES, "all"]),
              help="Registered model, or 'all' for the efficiency table of every variant.")
@click.option("--frames", default=8, show_default=True, type=click.IntRange(1))
@click.option("--size", default=224, show_default=True, type=click.IntRange(32))
@click.option("--num-classes", default=101, show_default=True, type=click.IntRange(0))
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1))
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE",
              help="Constructor option override, repeatable (JSON value, e.g. embed_dim=32).")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0))
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1),
              help="Timed forwards; the median is reported.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON lines.")
def profile_cmd(model_name: str, frames: int, size: int, num_classes: int, batch_size: int,
                device: str, model_opts: tuple[str, ...], warmup: int, runs: int,
                as_json: bool) -> None:
    """Measure params, GMACs per clip, forward latency, clips/s and peak memory."""
    from dvfl_cache.runtime import resolve_device
    from dvfl_train.profile import profile_model

    device = resolve_device(device)  # one clear error for a device this machine lacks
    overrides = _parse_model_opts(model_opts)
    names = MODEL_NAMES if model_name == "all" else (model_name,)
    rows = []
    for name in names:
        try:
            rows.append(profile_model(name, frames=frames, size=size, num_classes=num_classes,
                                      batch_size=batch_size, device=device, overrides=overrides,
                                      warmup=warmup, runs=runs))
        except (TypeError, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    for line in _table(rows):
        click.echo(line)
    first = rows[0]
    threads = f", {first['threads']} threads" if first["threads"] else ""
    click.echo(f"\n{first['device']}{threads}, batch {batch_size}, {frames}x{size}x{size}, "
               f"median of {runs} runs; peak memory: {first['peak_mem_kind']}")
