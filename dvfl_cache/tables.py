"""The few formatting helpers of reports and command output: percentages, mean ± sample std,
aligned text tables and Markdown tables. One copy, used by the commands, the sweep report and
the benchmarks, so a number prints the same way everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["md_table", "mean_std", "pct", "text_table"]


def pct(x: float | None, sd: float | None = None, *, unit: str = "", missing: str = "–") -> str:
    """``0.1234 -> "12.34"`` (+ ``unit``), with `` ± sd`` when given; ``missing`` for None."""
    if x is None:
        return missing
    return f"{100 * x:.2f}{unit}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned (names), the rest right
    (numbers); a dashed rule under the header."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)]


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]
