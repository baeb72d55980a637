"""Daily retraining: a day-2 model warm-started from day 1 vs a cold start, at the same number of steps.

Two days of one synthetic population (same users, ads and effects; impressions drawn afresh each day) with drift on
day 2: video formats click 1.6x more, the app-in-focus effect of display halves, and new ads appear (``ad_id`` is a
vocabulary feature, so day 2 extends the vocabulary). Day 1: a model trained on day 1. Day 2: (a) warm start from
the day-1 artifact, (b) cold start; both for the same ``--steps`` optimizer steps on day 2's training split, then
evaluated on day 2's test split. Repeated for ``--seeds`` seeds; prints test AUC-PR (mean over tasks and per task).

Run: .venv/bin/python benchmarks/warm_start.py [--rows 600000] [--steps 100] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import camoe
from camoe.data.synthetic import DEFAULT_FORMATS


def day_log(seed: int, day: int, rows: int):  # noqa: ANN201
    formats = DEFAULT_FORMATS
    cfg = camoe.SyntheticConfig(rows=rows * 2, seed=seed)
    if day == 1:  # drift: video clicks more, display's in-focus effect halves
        formats = tuple(dataclasses.replace(f, ctr=f.ctr * 1.6) if f.modality == "video" else f for f in formats)
        cfg = dataclasses.replace(cfg, formats=formats, focus_effect={**cfg.focus_effect, "display": 0.55})
    frame = camoe.generate_log(cfg, shard=day, num_shards=2)  # population from the seed, impressions per day
    frame["ts"] += day * cfg.days * 86400
    return frame


def config(path: Path, **train: object) -> camoe.RunConfig:
    cfg = camoe.load_config(camoe.demo_config_path(), {
        "data": {"path": str(path)}, "train": {"epochs": 2, **train}})
    cfg.schema.features.append(camoe.config.FeatureSpec(name="ad_id", type="categorical", min_count=2))
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=600_000, help="impressions per day")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps on day 2 (warm and cold alike)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp())
    results: dict[str, list[float]] = {"warm": [], "cold": []}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for day in (0, 1):
            day_log(seed, day, args.rows).to_parquet(tmp / f"s{seed}d{day}.parquet")
        _, _ = camoe.train_and_evaluate(config(tmp / f"s{seed}d0.parquet", seed=seed), output_dir=tmp / f"s{seed}d0")
        line = [f"seed {seed}:"]
        for kind in ("warm", "cold"):
            cfg = config(tmp / f"s{seed}d1.parquet", seed=seed, max_steps=args.steps)
            _, metrics = camoe.train_and_evaluate(cfg, output_dir=tmp / f"s{seed}{kind}",
                                                  warm_start=tmp / f"s{seed}d0" if kind == "warm" else None)
            test = metrics["test"]
            results[kind].append(test["macro"]["auc_pr"])
            per_task = " ".join(f"{t}={m['auc_pr']:.4f}" for t, m in test["tasks"].items())
            line.append(f"{kind} AUC-PR {test['macro']['auc_pr']:.4f} ({per_task})")
        print("  ".join(line), flush=True)
    warm, cold = results["warm"], results["cold"]
    print(f"\nday-2 test AUC-PR (mean over tasks) after {args.steps} steps, {len(args.seeds)} seeds, "
          f"{args.rows:,} impressions per day ({time.perf_counter() - t0:.0f} s):")
    print(f"  warm start {statistics.mean(warm):.4f} ± {statistics.pstdev(warm):.4f}   "
          f"cold start {statistics.mean(cold):.4f} ± {statistics.pstdev(cold):.4f}   "
          f"warm better in {sum(w > c for w, c in zip(warm, cold))} of {len(warm)} seeds; mean lift "
          f"{statistics.mean(w / c - 1 for w, c in zip(warm, cold)):+.1%}")


if __name__ == "__main__":
    main()
