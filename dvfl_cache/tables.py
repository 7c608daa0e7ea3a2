"""The few formatting helpers of reports and command output: percentages, mean ± sample std,
aligned text tables and Markdown tables, and the paired 95% interval the benchmarks judge by.
One copy, used by the commands, the sweep report and the benchmarks, so a number prints (and is
judged) the same way everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["md_table", "mean_std", "paired_interval", "pct", "text_table"]

# two-sided 95% Student t quantiles by degrees of freedom (1..10); 1.96 beyond
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


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


def paired_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired by position, e.g. the same seed) and its two-sided 95%
    t-interval ``(low, high)``; NaN bounds for a single pair. Unequal lengths raise ValueError."""
    if len(a) != len(b):
        raise ValueError(f"paired_interval needs equal lengths, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    m, sd = mean_std(d)
    if sd is None:
        return m, math.nan, math.nan
    half = _T975.get(len(d) - 1, 1.96) * sd / math.sqrt(len(d))
    return m, m - half, m + half


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
