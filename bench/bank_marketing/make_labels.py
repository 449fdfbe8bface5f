"""Make a stratified labels CSV for `crmsync eval` from the UCI Bank Marketing file (y = yes → qualified).

    python make_labels.py ../../../shared/data/bank-marketing/Bank-bias-data.csv.gz -o labels.csv --n 400

Stratified: the sample keeps the file's subscription rate (11.7%) unless --positive-share says otherwise.
Stdlib only; deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import sys
from pathlib import Path

COLUMNS = [
    "age",
    "job",
    "marital",
    "education",
    "default",
    "balance",
    "housing",
    "loan",
    "contact",
    "day",
    "month",
    "campaign",
    "pdays",
    "previous",
    "poutcome",
]  # `duration` left out: it leaks the label


def read_rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as fh:  # type: ignore[operator]
        return list(csv.DictReader(fh))


def sample(rows: list[dict[str, str]], n: int, seed: int, positive_share: float | None) -> list[tuple[int, dict[str, str]]]:
    """(row number in the file, row) pairs; positives and negatives drawn separately."""
    pos = [(i, r) for i, r in enumerate(rows, 1) if r["y"].strip() == "yes"]
    neg = [(i, r) for i, r in enumerate(rows, 1) if r["y"].strip() != "yes"]
    share = len(pos) / len(rows) if positive_share is None else positive_share
    n_pos = min(len(pos), round(n * share))
    n_neg = min(len(neg), n - n_pos)
    rng = random.Random(seed)
    picked = rng.sample(pos, n_pos) + rng.sample(neg, n_neg)
    return sorted(picked, key=lambda p: p[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="Bank-bias-data.csv.gz (or an uncompressed bank-full CSV with a y column)")
    ap.add_argument("-o", "--output", type=Path, default=Path("labels.csv"))
    ap.add_argument("--n", type=int, default=400, help="rows in the sample (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--positive-share", type=float, help="override the share of y=yes rows (default: the file's rate)")
    args = ap.parse_args(argv)
    rows = read_rows(args.data)
    missing = [c for c in [*COLUMNS, "y"] if c not in rows[0]]
    if missing:
        print(f"{args.data}: missing columns {missing}", file=sys.stderr)
        return 2
    picked = sample(rows, args.n, args.seed, args.positive_share)
    with open(args.output, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *COLUMNS, "outcome"])
        for i, r in picked:
            w.writerow([f"B{i:05d}", *(r[c].strip() for c in COLUMNS), "qualified" if r["y"].strip() == "yes" else "unqualified"])
    q = sum(1 for _, r in picked if r["y"].strip() == "yes")
    print(f"{len(picked)} rows ({q} qualified, {q / len(picked):.1%}) written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
