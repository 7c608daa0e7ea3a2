"""`dvfl-train profile`: parameters, GMACs, latency, throughput and peak memory of a model."""

from __future__ import annotations

import json
from typing import Any

import click

from dvfl_cache.commands.options import ChoiceOrSpec, check_model_options, key_values_option
from dvfl_cache.models.registry import MODEL_NAMES
from dvfl_cache.tables import text_table


def _gmacs(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = ("model", "params (M)", "GMACs/clip", "latency (ms)", "clips/s", "peak mem (MiB)")
    body = [(r["model"], f"{r['params'] / 1e6:.2f}", _gmacs(r["gmacs"]),
             f"{r['latency_ms']:.1f}", f"{r['clips_per_s']:.2f}", f"{r['peak_mem_mib']:.0f}")
            for r in rows]
    return text_table(header, body)


@click.command("profile")
@click.option("--model", "model_name", required=True,
              type=ChoiceOrSpec([*MODEL_NAMES, "all"], ("hf:", "py:")),
              help="Registered model, 'all' for the efficiency table of every variant, or "
                   "hf:PATH / py:MODULE:FUNCTION (built at --frames/--size, options from "
                   "--model-opt).")
@click.option("--frames", default=8, show_default=True, type=click.IntRange(1),
              help="Frames per clip.")
@click.option("--size", default=224, show_default=True, type=click.IntRange(32),
              help="Input side in pixels (square).")
@click.option("--num-classes", default=101, show_default=True, type=click.IntRange(0),
              help="Classifier outputs (0: no head).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1),
              help="Clips per forward.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@key_values_option("--model-opt", "model_opts",
                   help="Constructor option override, repeatable (e.g. embed_dim=32, "
                        "depths=1,1,2,1).")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0),
              help="Untimed forwards before the timed ones.")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1),
              help="Timed forwards; the median is reported.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON lines.")
def profile_cmd(model_name: str, frames: int, size: int, num_classes: int, batch_size: int,
                device: str, model_opts: dict[str, Any], warmup: int, runs: int,
                as_json: bool) -> None:
    """Measure params, GMACs per clip, forward latency, clips/s and peak memory."""
    from dvfl_cache.runtime import resolve_device
    from dvfl_train.profile import profile_model

    device = resolve_device(device)  # one clear error for a device this machine lacks
    names = MODEL_NAMES if model_name == "all" else (model_name,)
    for name in names:
        check_model_options(name, model_opts, "--model-opt")
    rows = []
    for name in names:
        try:
            rows.append(profile_model(name, frames=frames, size=size, num_classes=num_classes,
                                      batch_size=batch_size, device=device, overrides=model_opts,
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
