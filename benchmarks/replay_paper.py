"""The paper's online comparison, offline: CAMoE vs a pooled single-task model vs one model per format, replayed in
the ad auction on a synthetic auction log with ground truth.

Run (about 15 minutes on 2 cores):

    nice -n 5 .venv/bin/python benchmarks/replay_paper.py [--world-rows 1500000] [--requests 1000000]

1. The world: the synthetic impression log of ``--world-rows`` rows (seed 0), split by time as the demo config does
   (train 70% / valid 10% / test 20%).
2. Three models of the same size (DCN-v2 experts: 2 cross layers, MLP 64-32, embeddings 8), two epochs each:
   * ``pooled``: one DCN-v2 model, one head, on every impression (``grouping single``, ``model dcn_v2``): the
     "production baseline" of the paper;
   * ``camoe``: CAMoE with 3 experts, the paper's deployed 2-head modality grouping (audio + display, video:
     ``grouping modality2``) and adaptive loss masking (each row trains its own head only);
   * ``per_format``: one single-task DCN-v2 per format, each trained on its format's rows only
     (``models/<format>/``, scored as one policy: each candidate by its format's model).
3. An auction log of ``--requests`` requests × 20 candidates in the same world (``camoe generate --auctions``), logged
   by the noisy-truth policy with softmax exploration.
4. Replay of the three models (baseline: pooled), second price, 200 paired bootstrap replicates: per modality and per
   format the true CTR lift and eCPC change of camoe and per_format over pooled with CIs, and the DR estimate from
   the logged clicks beside each -- next to the paper's online figures (audio CTR +14.5%, video CTR +1.3%,
   audio-slot eCPC −4.8%).
5. What drives the numbers: each model's offline AUC-PR and calibration ratio (Σ pCTR / Σ p_true) per modality on
   the test split, and in the auction its calibration ratio over all candidates and over its winners, per format.
6. Calibration in the auction: camoe calibrated (Platt, on the validation split) and uncalibrated, replayed side by
   side on a ``--calibration-requests`` log (eCPC and spend per format).

Writes the replay folders (``replay.json``, ``replay.html``) and ``summary.json`` under ``--output``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import camoe
from camoe.data.synthetic import SyntheticConfig, synthetic_population
from camoe.replay import AuctionLogConfig, generate_auction_log, load_replay_model, replay
from camoe.replay.report import format_lifts, format_tables, paper_form, write_replay_report

SIZE = {"embedding_dim": 8, "num_cross_layers": 2, "expert_hidden": [64, 32], "tower_hidden": [32]}
PAPER = {"audio CTR": "+14.5%", "video CTR": "+1.3%", "audio eCPC": "−4.8% (audio slot)"}


def _config(out: Path, **overrides):
    return camoe.load_config(camoe.demo_config_path(), {"data": {"path": str(out)}, "train": {"epochs": 2},
                                                        **overrides})


def train_all(frame: pd.DataFrame, out: Path, log) -> dict[str, Path]:
    """pooled, camoe and per_format artifacts under ``out`` (kept: a rerun reuses finished ones)."""
    dirs = {"pooled": out / "pooled", "camoe": out / "camoe", "per_format": out / "per_format"}
    specs = {"pooled": {"grouping": {"strategy": "single"}, "model": {"name": "dcn_v2", **SIZE}},
             "camoe": {"grouping": {"strategy": "modality2"}, "model": {"name": "camoe", "num_experts": 3, **SIZE}}}
    for name, over in specs.items():
        if not (dirs[name] / "manifest.json").is_file():
            t0 = time.perf_counter()
            pipe, _ = camoe.train_and_evaluate(_config(dirs[name], **over), frame=frame, output_dir=dirs[name])
            log(f"trained {name} in {time.perf_counter() - t0:.0f} s ({pipe.train_result_.rows_per_s:,.0f} rows/s)")
    # one model per format: the demo config's split of the whole log, then each format's rows (the same rows the
    # pooled model trained on, per format)
    splits = camoe.load_splits(_config(out), frame)
    single = {"grouping": {"strategy": "single"}, "model": {"name": "dcn_v2", **SIZE}}
    for fmt in sorted(frame["format"].unique()):
        folder = dirs["per_format"] / fmt
        if (folder / "manifest.json").is_file():
            continue
        t0 = time.perf_counter()
        cfg = _config(folder, **single)
        part = {s: splits[s][splits[s]["format"] == fmt] for s in ("train", "valid", "test")}
        pipe = camoe.CTRPipeline(cfg).fit(part["train"], part["valid"])
        pipe.save(folder, metrics={"test": pipe.evaluate(part["test"], split="test")})
        log(f"trained per_format/{fmt} on {len(part['train']):,} rows in {time.perf_counter() - t0:.0f} s")
    return dirs


def offline_metrics(dirs: dict[str, Path], test: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """AUC-PR and calibration ratio vs the truth (Σ pCTR / Σ p_true) per modality on the test split."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, folder in dirs.items():
        model = load_replay_model(folder, name)
        pctr = model.score(test, "test")
        from sklearn.metrics import average_precision_score

        out[name] = {}
        for mod, rows in test.groupby("modality"):
            idx = rows.index.to_numpy()
            out[name][str(mod)] = {"auc_pr": float(average_precision_score(rows["click"], pctr[idx])),
                                   "calibration_vs_truth": float(pctr[idx].sum() / rows["p_true"].sum())}
    return out


def auction_calibration(dirs: dict[str, Path], log_path: Path, requests: int) -> pd.DataFrame:
    """Per model and format, on the first ``requests`` requests of the auction log: Σ pCTR / Σ p_true over every
    candidate, and over the model's own winners (the auction picks over-predicted candidates: winner's curse)."""
    table = pq.read_table(log_path, filters=[("request_id", "<", requests)]).to_pandas()
    fmt = table["format"].astype(str).to_numpy()
    ids = table["request_id"].to_numpy()
    rows = []
    for name, folder in dirs.items():
        model = load_replay_model(folder, name)
        pctr = model.score(table, "auction sample")
        ecpm = table["bid"].to_numpy() * pctr
        winner = pd.Series(ecpm).groupby(ids).idxmax().to_numpy()
        for f in sorted(set(fmt)):
            every = fmt == f
            won = winner[fmt[winner] == f]
            rows.append({"model": name, "format": f,
                         "all candidates": pctr[every].sum() / table["p_true"].to_numpy()[every].sum(),
                         "its winners": pctr[won].sum() / table["p_true"].to_numpy()[won].sum() if len(won) else np.nan,
                         "win share": len(won) / requests})
    return pd.DataFrame(rows).pivot(index="format", columns="model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-rows", type=int, default=1_500_000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--calibration-requests", type=int, default=200_000, help="0: skip step 6")
    parser.add_argument("--output", default="runs/bench_replay_paper")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:.0f} s] {msg}", flush=True)

    world = SyntheticConfig(rows=args.world_rows, seed=0)
    frame = camoe.generate_log(world)
    log(f"impression log: {len(frame):,} rows")
    dirs = train_all(frame, out / "models", log)
    splits = camoe.load_splits(_config(out), frame)
    test = splits["test"].reset_index(drop=True)
    valid = out / "valid.parquet"  # fits the calibration of step 6
    splits["valid"].to_parquet(valid)
    offline = offline_metrics(dirs, test)
    del frame, splits

    population = synthetic_population(world)
    auction_dir = out / "auctions"
    if not (auction_dir / "auctions.parquet").is_file():
        generate_auction_log(population, AuctionLogConfig(requests=args.requests, candidates=args.candidates, seed=7),
                             auction_dir)
    log(f"auction log: {args.requests:,} requests x {args.candidates} candidates")
    models = [load_replay_model(dirs[name], name) for name in ("pooled", "camoe", "per_format")]
    result = replay(auction_dir, models, bootstrap=args.bootstrap, seed=0)
    log(f"replayed {result.requests:,} requests with 3 models in {result.seconds:.0f} s "
        f"({result.candidates_per_s:,.0f} candidates scored per second)")
    write_replay_report(result, out / "replay", extra={"models": {k: str(v) for k, v in dirs.items()}})
    print()
    print(format_tables(result))
    print(format_lifts(result))

    # ---- the paper's comparison table
    print("THE PAPER'S COMPARISON (baseline: pooled single-task DCN-v2; true = exact expected values from p_true; "
          "DR = doubly robust estimate from the logged clicks; 95% CIs, paired bootstrap over requests)")
    pct = lambda x: f"{100 * x:+.1f}%".replace("-", "−") if np.isfinite(x) else "n/a"
    rows = []
    order = [g for lv, g in result.groups if lv == "modality"] + [g for lv, g in result.groups if lv == "format"] + \
        ["total"]
    for g in order:
        row = {"group": g, "pooled CTR (true)": f"{100 * result.value('pooled', 'truth_ctr', g):.3f}%",
               "pooled eCPC (true)": f"{result.value('pooled', 'truth_ecpc', g):.3f}"}
        for name in ("camoe", "per_format"):
            for metric, label in (("ctr", "CTR"), ("ecpc", "eCPC")):
                v, lo, hi = result.interval(name, f"truth_{metric}", g, lift=True)
                dv, dlo, dhi = result.interval(name, f"dr_{metric}", g, lift=True)
                row[f"{name} {label} true"] = f"{pct(v)} [{pct(lo)}, {pct(hi)}]"
                row[f"{name} {label} DR"] = f"{pct(dv)} [{pct(dlo)}, {pct(dhi)}]"
            row[f"{name} wins"] = pct(result.interval(name, "wins", g, lift=True)[0])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("group")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    for name in ("camoe", "per_format"):
        print(f"\n{name} over pooled:")
        print(table[[c for c in table.columns if c.startswith((name, "pooled"))]].to_string())
        print(f"  in the paper's form (true): {paper_form(result, name, 'truth')}")
        print(f"  in the paper's form (DR):   {paper_form(result, name, 'dr')}")
    print(f"  the paper (online A/B, CAMoE over the production model): audio CTR {PAPER['audio CTR']}, video CTR "
          f"{PAPER['video CTR']}, audio eCPC {PAPER['audio eCPC']}")

    print("\nWHAT DRIVES IT: offline, on the impression log's test split (AUC-PR; calibration = Σ pCTR / Σ p_true)")
    off = pd.DataFrame({(m, k): {mod: v[k] for mod, v in per.items()} for m, per in offline.items()
                        for k in ("auc_pr", "calibration_vs_truth")})
    print(off.round(4).to_string())
    cal = auction_calibration(dirs, auction_dir / "auctions.parquet", min(50_000, args.requests))
    print("\nin the auction (first 50,000 requests): Σ pCTR / Σ p_true over every candidate and over the model's own "
          "winners, and the model's win share, per format")
    print(cal.round(3).to_string())

    summary = {"settings": vars(args), "offline": offline, "replay": str(out / "replay" / "replay.json"),
               "auction_calibration": json.loads(cal.to_json()), "table": json.loads(table.to_json(orient="index"))}
    if args.calibration_requests:
        cal_dir = out / "models" / "camoe_calibrated"
        if not (cal_dir / "manifest.json").is_file():
            from camoe.cli import main as cli

            cli(["calibrate", str(dirs["camoe"]), "--data", str(valid), "--method", "platt", "--output", str(cal_dir)])
        small = out / "auctions_calibration"
        if not (small / "auctions.parquet").is_file():
            generate_auction_log(population, AuctionLogConfig(requests=args.calibration_requests,
                                                              candidates=args.candidates, seed=8), small)
        pair = [load_replay_model(cal_dir, "camoe (uncalibrated)", calibrated=False),
                load_replay_model(cal_dir, "camoe (calibrated)")]
        cal_result = replay(small, [load_replay_model(dirs["pooled"], "pooled"), *pair], bootstrap=args.bootstrap)
        write_replay_report(cal_result, out / "replay_calibration",
                            calibration_pairs=[("camoe (uncalibrated)", "camoe (calibrated)")])
        print(f"\nCALIBRATION IN THE AUCTION ({args.calibration_requests:,} requests): camoe uncalibrated vs "
              f"Platt-calibrated (validation split), true values")
        crow = []
        for lv, g in cal_result.groups:
            crow.append({"group": g, **{f"{k} {short}": cal_result.value(f"camoe ({k})", metric, g)
                                        for k in ("uncalibrated", "calibrated")
                                        for metric, short in (("wins", "wins"), ("truth_ctr", "CTR"),
                                                              ("truth_ecpc", "eCPC"), ("truth_spend", "spend"))}})
        ctab = pd.DataFrame(crow).set_index("group")
        print(ctab.round(4).to_string())
        summary["calibration"] = json.loads(ctab.to_json(orient="index"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    valid.unlink(missing_ok=True)
    log(f"wrote {out / 'summary.json'}, {out / 'replay' / 'replay.html'}")


if __name__ == "__main__":
    main()
