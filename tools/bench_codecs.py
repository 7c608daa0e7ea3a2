"""Storage codecs: bytes per view and the error each costs, on fixed seeded data.

Prints a markdown table (the one in docs/cache-format.md):
- logits at 101 classes: worst and mean KL(softmax(l/tau) || softmax(decoded/tau)) at tau 1, 5,
  10, 20 on N(0, s) logits (s = 3, 10, 30, 100), on N(0, 3) rows with one class 1000 below, and
  on the logits of a softmax classifier trained
  here by gradient descent on 101 Gaussian class clusters ("trained"); "affine8" is per-row
  8-bit affine (the q8-affine codec applied to logits), the baseline the issue names;
- 1024-d features: worst and mean 1 - cosine on N(0, 1) and on ReLU(N(0.2, 1)) rows;
- encode and decode time per million rows of 101 logits (single process).

    python tools/bench_codecs.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dvfl_cache.cache import codecs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/_conditions.py
import _conditions  # noqa: E402


def trained_logits(n: int, classes: int = 101, dim: int = 48, steps: int = 300
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 (n, classes), labels) of a linear softmax classifier trained (seeded)
    by full-batch gradient descent on ``classes`` Gaussian clusters: peaked rows with
    near-ties between neighbouring classes, as trained logits have (tests/test_cache_codecs.py
    uses the same set)."""
    rng = np.random.default_rng(1)
    means = rng.normal(0, 1, (classes, dim))
    y = rng.integers(0, classes, n)
    x = means[y] + rng.normal(0, 1.5, (n, dim))
    w, b = np.zeros((dim, classes)), np.zeros(classes)
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(n), y] -= 1
        w -= 0.5 * x.T @ p / n
        b -= 0.5 * p.mean(0)
    return (x @ w + b).astype(np.float32), y


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--speed-rows", type=int, default=1_000_000,
                    help="rows of 101 logits timed for encode/decode (reported per million)")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the results (with the run's conditions) here")
    args = ap.parse_args(argv)
    cond = _conditions.start("bench_codecs", argv)
    found: dict = {"rows_per_set": args.rows, "logits": [], "features": [], "speed": []}
    rng = np.random.default_rng(0)
    sets = {f"std {s}": rng.normal(0, s, (args.rows, 101)).astype(np.float32)
            for s in (3, 10, 30)}
    sets["std 100"] = rng.normal(0, 100, (args.rows, 101)).astype(np.float32)
    outlier = rng.normal(0, 3, (args.rows, 101)).astype(np.float32)
    outlier[:, 0] -= 1000  # one class far below the rest
    sets["std 3, one -1000"] = outlier
    sets["trained"], y = trained_logits(args.rows)
    print(f"trained classifier: train top-1 {(sets['trained'].argmax(1) == y).mean():.3f}, "
          f"mean row range {np.ptp(sets['trained'], 1).mean():.1f}, mean row std "
          f"{sets['trained'].std(1).mean():.2f}")
    forms = {"float32": "float32", "float16": "float16", "affine8": "q8-affine",
             "q8-logit": "q8-logit"}
    print("\n| form | bytes/view (101) | logits | worst KL tau 1 / 5 / 10 / 20 | mean KL "
          "tau 1 / 5 / 10 / 20 |\n|---|---|---|---|---|")
    for label, name in forms.items():
        for data, x in sets.items():
            e = codecs.logit_error(name, x)
            worst = " / ".join(f"{v:.1e}" for v in e["kl_worst"].values())
            mean = " / ".join(f"{v:.1e}" for v in e["kl_mean"].values())
            print(f"| {label} | {codecs.bytes_per_row(name, 101)} | {data} | {worst} | {mean} |")
            found["logits"].append({"form": label, "bytes_per_view": codecs.bytes_per_row(name, 101),
                                    "logits": data, "kl_worst": e["kl_worst"],
                                    "kl_mean": e["kl_mean"]})
    feats = {"N(0,1)": rng.normal(0, 1, (args.rows // 4, 1024)).astype(np.float32),
             "ReLU(N(0.2,1))": np.maximum(rng.normal(0.2, 1, (args.rows // 4, 1024)),
                                          0).astype(np.float32)}
    print("\n| form | bytes/view (1024-d) | features | worst 1 - cos | mean 1 - cos |\n"
          "|---|---|---|---|---|")
    for name in ("float16", "q8-affine"):
        for data, x in feats.items():
            e = codecs.feature_error(name, x)
            print(f"| {name} | {codecs.bytes_per_row(name, 1024)} | {data} | "
                  f"{e['cos_worst']:.1e} | {e['cos_mean']:.1e} |")
            found["features"].append({"form": name, "bytes_per_view": codecs.bytes_per_row(name, 1024),
                                      "features": data, "cos_worst": e["cos_worst"],
                                      "cos_mean": e["cos_mean"]})
    big = rng.normal(0, 10, (args.speed_rows, 101)).astype(np.float32)
    for name in ("q8-logit", "q8-affine"):
        t0 = time.perf_counter()
        parts = codecs.encode(name, big)
        t1 = time.perf_counter()
        codecs.decode(name, parts)
        t2 = time.perf_counter()
        per_m = 1e6 / args.speed_rows
        print(f"\n{name}: encode {(t1 - t0) * per_m:.2f} s, decode {(t2 - t1) * per_m:.2f} s "
              "per 1M rows x 101")
        found["speed"].append({"form": name, "rows": args.speed_rows,
                               "encode_s_per_1m": (t1 - t0) * per_m,
                               "decode_s_per_1m": (t2 - t1) * per_m})
    out = _conditions.record("bench_codecs", found, cond)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return out


if __name__ == "__main__":
    main()
