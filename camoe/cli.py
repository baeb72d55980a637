"""Command line: ``camoe generate | train | evaluate | predict | export | calibrate | prune | serve | demo | replay``.

Every command has ``--help``. Errors in the user's data or config print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _print(msg: str = "") -> None:
    print(msg, flush=True)


def _log_entry(entry: dict[str, Any]) -> None:
    score = entry.get("valid_score")
    tasks = " ".join(
        f"{k.split('/', 1)[1]}={v:.4f}" if v is not None else f"{k.split('/', 1)[1]}=no-rows"
        for k, v in entry.items() if k.startswith("loss/")
    )
    valid = f" valid mean AUC-PR={score:.4f}" if score is not None else ""
    total = entry.get("total")
    _print(f"  step {entry['step']} epoch {entry['epoch']}: loss={total:.4f} [{tasks}]{valid}" if total is not None
           else f"  step {entry['step']}: no steps")


def _add_common_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 --set model.expert_type=mlp")
    p.add_argument("--output", help="artifact folder (default: output_dir from the config)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_mlflow(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlflow", metavar="URI", help="also log the run to this MLflow tracking URI (e.g. "
                   "file:///abs/mlruns, or an MLflow server); needs the mlflow extra")
    p.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: camoe)")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from camoe.config import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.epochs=2), got '{pair}'")
        key, value = pair.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' was already set to a value, not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: value is not valid YAML ({err})") from None
    return out


def _progress(args: argparse.Namespace) -> bool:
    """Progress bar only on a terminal (a log file would fill with carriage returns) and without --no-progress."""
    return not args.no_progress and sys.stderr.isatty()


def _int_in(low: int, high: int) -> Any:
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number), got '{text}'") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _check_output_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"output {path} exists and is a file; give a folder path")


def _check_output_file(path: str, data: str | None = None, artifact: str | None = None) -> None:
    """Refuse an output path that is a folder, lacks a .csv / .parquet name, or would overwrite the input data or a
    file of the artifact."""
    from camoe.data.readers import expand_paths

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--output {p} is a folder; give a file name ending in .csv or .parquet")
    if not p.name.endswith((".csv", ".parquet")):
        raise ValueError(f"--output {p}: give a file name ending in .csv or .parquet")
    if any(parent.exists() and not parent.is_dir() for parent in p.parents):
        raise ValueError(f"--output {p}: a parent path is a file, not a folder")
    target = p.resolve()
    if artifact is not None and Path(artifact).resolve() in target.parents:
        raise ValueError(f"--output {p} is inside the artifact folder {artifact}; write predictions elsewhere")
    if data is not None:
        try:
            inputs = {f.resolve() for f in expand_paths(data)}
        except FileNotFoundError:
            return
        if target in inputs:
            raise ValueError(f"--output {p} is the input data file; it would be overwritten")


def _synthetic_config(args: argparse.Namespace) -> Any:
    """The ``SyntheticConfig`` of ``camoe generate`` / ``demo`` arguments (rows, seed, preset)."""
    from camoe.data.synthetic import PRESETS, SyntheticConfig

    return SyntheticConfig(rows=args.rows, seed=args.seed, formats=PRESETS[getattr(args, "preset", "audio_centric")])


def cmd_generate(args: argparse.Namespace) -> int:
    from camoe.data.synthetic import generate_log

    if getattr(args, "auctions", None) is not None:
        return _generate_auctions(args)
    if getattr(args, "shards", None):
        return _generate_shards(args)
    t0 = time.perf_counter()
    frame = generate_log(_synthetic_config(args))
    out = Path(args.output or "runs/log.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = args.format or {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(out.suffix)
    if fmt is None:
        raise ValueError(f"--output {out}: name the file .parquet or .csv, or pass --format")
    if fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    dt = time.perf_counter() - t0
    _print(f"wrote {len(frame):,} rows to {out} ({fmt}) in {dt:.1f} s ({len(frame) / dt:,.0f} rows/s)")
    return 0


def _generate_auctions(args: argparse.Namespace) -> int:
    """Write the synthetic auction log (``camoe.replay.log``) of ``--auctions`` requests into the ``--output`` folder."""
    from camoe.replay.log import AuctionLogConfig, generate_auction_log

    if args.format == "csv":
        raise ValueError("--auctions writes Parquet only")
    out = Path(args.output or "runs/auctions")
    if out.suffix in (".csv", ".parquet", ".pq"):
        raise ValueError(f"--output {out}: with --auctions give a folder; it receives auctions.parquet and "
                         f"auctions.json")
    cfg = AuctionLogConfig(
        requests=args.auctions, candidates=args.candidates, seed=args.seed if args.auction_seed is None else
        args.auction_seed, cpm=args.cpm, policy="model" if args.logging_model else "noisy_truth",
        policy_model=args.logging_model, noise_sigma=args.noise_sigma, exploration=args.exploration,
        temperature=args.temperature, epsilon=args.epsilon)
    world = _synthetic_config(args)
    shards = args.shards or 1
    t0 = time.perf_counter()
    progress = None if args.no_progress else _tenths(t0, "requests")

    _print(f"auction log: {cfg.requests:,} requests x {cfg.candidates} candidates in the world of the impression log "
           f"--rows {args.rows:,} --seed {args.seed}" + (f" --shards {shards}" if shards > 1 else "")
           + f"; logging policy {cfg.policy}" + (f" ({cfg.policy_model})" if cfg.policy_model else
                                                  f" (sigma {cfg.noise_sigma:g})")
           + f", {cfg.exploration} exploration"
           + (f" (temperature {cfg.temperature:g})" if cfg.exploration == "softmax" else f" (epsilon {cfg.epsilon:g})"))
    info = generate_auction_log(world, cfg, out, num_shards=shards, progress=progress)
    dt = time.perf_counter() - t0
    _print(f"wrote {info.rows:,} rows ({info.requests:,} requests) to {info.path} and {info.sidecar} in {dt:.1f} s "
           f"({info.rows / dt:,.0f} rows/s)")
    return 0


def _generate_shards(args: argparse.Namespace) -> int:
    """Write ``--rows`` rows as ``--shards`` Parquet files in the ``--output`` folder, one shard in memory at a time."""
    from camoe.data.synthetic import generate_log

    out = Path(args.output or "runs/log")
    if args.shards < 1:
        raise ValueError(f"--shards {args.shards}: give a positive number of files")
    if out.suffix in (".csv", ".parquet", ".pq") or out.is_file():
        raise ValueError(f"--output {out}: with --shards give a folder; it receives part-00000.parquet ...")
    if args.format == "csv":
        raise ValueError("--shards writes Parquet only")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = _synthetic_config(args)
    total = 0
    for shard in range(args.shards):
        frame = generate_log(cfg, shard=shard, num_shards=args.shards)
        frame.to_parquet(out / f"part-{shard:05d}.parquet", index=False, row_group_size=131_072)  # streamable
        total += len(frame)
        del frame
    dt = time.perf_counter() - t0
    _print(f"wrote {total:,} rows in {args.shards} Parquet files to {out}/ in {dt:.1f} s ({total / dt:,.0f} rows/s)")
    return 0


def _train(
    cfg: Any, output: str | None, progress: bool, resume: bool = False, allow_changes: list[str] | None = None,
    warm_start: str | None = None, mlflow: str | None = None, experiment: str | None = None,
) -> tuple[Any, Any, Path]:
    from camoe.evaluation.report import format_table
    from camoe.run import train_and_evaluate
    from camoe.training.distributed import init_distributed

    out = Path(output or cfg.output_dir)
    _check_output_dir(out)
    ctx = init_distributed()  # rank 0 of 1 unless started by torchrun
    if not ctx.is_main:
        warnings.simplefilter("ignore")  # rank 0 reports
    t0 = time.perf_counter()
    try:
        pipe, metrics = train_and_evaluate(cfg, output_dir=out, progress=progress, log=_log_entry, resume=resume,
                                           dist_ctx=ctx, announce=_print, allow_changes=allow_changes or [],
                                           warm_start=warm_start)
    finally:
        if ctx.enabled:
            import torch.distributed

            torch.distributed.destroy_process_group()
    if not ctx.is_main:
        return pipe, metrics, out
    result = pipe.train_result_
    if ctx.enabled:
        _print(f"data parallel: {ctx.world_size} ranks, global batch {cfg.train.batch_size}")
    _print(f"trained {cfg.model.name} ({cfg.model.expert_type} experts, grouping '{pipe.layout_.strategy}', "
           f"tasks {list(pipe.layout_.tasks)}) in {time.perf_counter() - t0:.1f} s, "
           f"{result.rows_per_s:,.0f} rows/s, best step {result.best_step}")
    if result.resumed_from_step is not None:
        _print(f"resumed from the checkpoint at step {result.resumed_from_step} of {result.steps}")
    if "test" in metrics:
        _print("\ntest split:")
        _print(format_table(metrics["test"]))
    _print(f"\nartifact, metrics.json and report.html written to {out}")
    if mlflow:
        from camoe.tracking import log_training

        run_id = log_training(mlflow, experiment or "camoe", out.name, cfg.to_dict(), result.history, metrics, out)
        _print(f"logged to MLflow {mlflow} (experiment '{experiment or 'camoe'}', run {run_id})")
    return pipe, metrics, out


def cmd_train(args: argparse.Namespace) -> int:
    if args.allow_change and not args.resume:
        raise ValueError("--allow-change applies to --resume only")
    if args.baseline:
        return _train_baseline(args)
    if args.warm_start and args.resume:
        raise ValueError("--warm-start starts a new run from an artifact; --resume continues an interrupted one: "
                         "give one of them")
    from camoe.config import load_config

    _train(load_config(args.config, _overrides(args.set)), args.output, _progress(args), resume=args.resume,
           allow_changes=args.allow_change, warm_start=args.warm_start, mlflow=args.mlflow,
           experiment=args.mlflow_experiment)
    return 0


def _train_baseline(args: argparse.Namespace) -> int:
    """``camoe train --baseline pooled|single_task|per_task``."""
    from camoe.config import load_config
    from camoe.evaluation.report import format_table
    from camoe.run import baseline_config, train_per_format

    if args.resume or args.warm_start:
        raise ValueError("--baseline trains afresh: leave out --resume and --warm-start")
    original = load_config(args.config, _overrides(args.set))  # its grouping names the tasks of per_task
    cfg = baseline_config(original, args.baseline)
    out = Path(args.output or f"{cfg.output_dir.rstrip('/')}_{args.baseline}")
    _check_output_dir(out)
    if args.baseline == "pooled":  # an ordinary run of the pooled config
        _train(cfg, str(out), _progress(args), mlflow=args.mlflow, experiment=args.mlflow_experiment)
        return 0
    t0 = time.perf_counter()
    per = "format" if args.baseline == "single_task" else "task"
    models, metrics = train_per_format(original, out, progress=_progress(args), log=_log_entry, announce=_print,
                                       per=per)
    _print(f"trained {len(models)} single-task {cfg.model.name} models (one per {per}) in "
           f"{time.perf_counter() - t0:.1f} s")
    if "test" in metrics:
        _print(f"\ntest split (each row scored by its {per}'s model):")
        _print(format_table(metrics["test"]))
    _print(f"\nmodels in {out / (per + 's')}; metrics.json and report.html in {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from camoe.evaluation.report import format_table
    from camoe.evaluation.run_report import write_run_report
    from camoe.files import write_json
    from camoe.pipeline import CTRPipeline
    from camoe.run import data_splits, open_rows, run_facts

    pipe = CTRPipeline.load(args.artifact)
    if args.data:
        rows, split, name = open_rows(pipe.config, args.data, stream=_parquet(args.data)), Path(args.data).name, args.data
    else:
        splits = data_splits(pipe.config)
        rows, split, name = splits.get(args.split), args.split, splits.names[args.split]
    if rows is None or rows.count_rows() == 0:
        raise ValueError(f"{args.data or args.split}: no rows to evaluate")
    metrics = pipe.evaluate(rows, split=split, source=name)
    out = Path(args.output or f"{str(args.artifact).rstrip('/')}_eval/{Path(split).stem}")  # never inside the artifact
    _check_output_dir(out)
    write_json(out / "metrics.json", metrics)
    write_run_report(out / "report.html", f"camoe evaluate: {args.artifact} on {name}", metrics,
                     facts=run_facts(pipe), gates=pipe.diagnostics_)
    _print(format_table(metrics))
    skipped = metrics["macro"]["skipped"]
    if skipped:
        _print(f"\nmacro averages skip NaN values: {skipped}")
    _print(f"\nmetrics.json and report.html written to {out}")
    if args.mlflow:
        from camoe.tracking import log_evaluation

        run_id = log_evaluation(args.mlflow, args.mlflow_experiment or "camoe", f"evaluate {Path(args.artifact).name}",
                                str(args.artifact), metrics, out)
        _print(f"logged to MLflow {args.mlflow} (run {run_id})")
    return 0


def _parquet(path: str) -> bool:
    """Whether every file of ``path`` is Parquet (then it is streamed: bounded memory, the same results)."""
    from camoe.data.readers import expand_paths
    from camoe.data.sources import is_parquet

    return all(is_parquet(f) for f in expand_paths(path))


def cmd_predict(args: argparse.Namespace) -> int:
    from camoe.pipeline import CTRPipeline
    from camoe.run import open_rows
    from camoe.scoring import write_predictions

    _check_output_file(args.output, args.data, args.artifact)
    pipe = CTRPipeline.load(args.artifact)
    reader = None if args.reader == "auto" else args.reader
    stream = args.reader in ("auto", "parquet") and _parquet(args.data)
    rows = open_rows(pipe.config, args.data, stream=stream, reader=reader)
    written, quality = write_predictions(pipe.scorer(args.backend), rows, args.output, keep=args.keep)
    counts = quality.to_dict(nonzero=True)
    _print(f"wrote {written:,} pCTRs to {args.output}; per feature, rows with out-of-vocabulary values: "
           f"{counts['out_of_vocabulary'] or 'none'}; missing values (imputed): {counts['missing'] or 'none'}; values "
           f"clipped to the training range: {counts['clipped'] or 'none'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from camoe.export import export_folder
    from camoe.pipeline import CTRPipeline

    out = Path(args.output or Path(args.artifact) / "onnx")
    _check_output_dir(out)
    path = export_folder(CTRPipeline.load(args.artifact), out)
    _print(f"wrote {path} and {out / 'inputs.json'} (inputs: cat_ids, multi_ids, dense, format_ids -> pctr)")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import pandas as pd

    from camoe.pipeline import CTRPipeline
    from camoe.prune import expert_latency_ms, prune_pipeline, prune_sweep, select_experts
    from camoe.run import read_for_config

    pipe = CTRPipeline.load(args.artifact)
    assert pipe.layout_ is not None
    gates = pipe.diagnostics_.get("mean_gate_weight")
    if not gates:
        raise ValueError(f"{args.artifact}: no validation gate weights in the artifact (trained without validation "
                         f"rows?); retrain with a validation split")
    frame = read_for_config(pipe.config, args.data) if args.data else None
    if args.sweep:
        if frame is None:
            raise ValueError("--sweep needs --data FILE (labelled rows to measure the AUC-PR change on)")
        table = prune_sweep(pipe, frame)
        pd.set_option("display.width", 200)
        _print(table.T.round(4).to_string())
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.output)
            _print(f"wrote {args.output}")
        return 0
    if args.top_k is None and args.threshold is None:
        raise ValueError("give --top-k K or --threshold W (or --sweep --data FILE)")
    keep = select_experts(gates, pipe.layout_.tasks, top_k=args.top_k, threshold=args.threshold)
    pruned = prune_pipeline(pipe, keep)
    label = f"top{args.top_k}" if args.top_k is not None else f"w{args.threshold:g}"
    out = Path(args.output or f"{str(args.artifact).rstrip('/')}_{label}")
    _check_output_dir(out)
    report: dict[str, object] = {"kept_experts": pruned.diagnostics_["pruned"]["kept_experts"],
                                 "gate_mask": pruned.diagnostics_["pruned"]["gate_mask"]}
    for task, row in report["gate_mask"].items():  # type: ignore[union-attr]
        _print(f"  task {task}: experts {[e for e, k in enumerate(row) if k]}")
    if frame is not None:
        full, small = pipe.evaluate(frame, split="prune")["formats"], pruned.evaluate(frame, split="prune")["formats"]
        report["delta_auc_pr"] = {f: small[f]["auc_pr"] - full[f]["auc_pr"] for f in full}
        mixed = frame.sample(min(100, len(frame)), random_state=0)
        (f50, f99), (p50, p99) = expert_latency_ms(pipe, mixed, backend="onnx"), expert_latency_ms(pruned, mixed, backend="onnx")
        report["latency_ms_100_mixed_onnx"] = {"full_p50": f50, "full_p99": f99, "pruned_p50": p50, "pruned_p99": p99}
        for f in full:
            _print(f"  {f:28s} AUC-PR {full[f]['auc_pr']:.4f} -> {small[f]['auc_pr']:.4f} "
                   f"({report['delta_auc_pr'][f]:+.4f})")  # type: ignore[index]
        _print(f"  100 mixed-format candidates, ONNX Runtime: p50 {f50:.3f} -> {p50:.3f} ms, p99 {f99:.3f} -> {p99:.3f} ms")
    pruned.save(out, metrics={"gates": pruned.diagnostics_, "prune": report})
    _print(f"wrote pruned artifact {out}: {pruned.config.model.num_experts} of "
           f"{pruned.diagnostics_['pruned']['from_experts']} experts kept")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from camoe.pipeline import CTRPipeline
    from camoe.run import data_splits, open_rows

    pipe = CTRPipeline.load(args.artifact)
    if args.data:
        rows, source = open_rows(pipe.config, args.data, stream=_parquet(args.data)), str(args.data)
    else:
        splits = data_splits(pipe.config)
        rows, source = splits.valid, splits.names["valid"]
    if rows is None or rows.count_rows() == 0:
        raise ValueError(f"{args.data or 'valid split'}: no rows to fit the calibration on; give --data FILE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics on the fitting rows are expected here
        before = pipe.evaluate(rows, split="calibration", source=source)["tasks"]
    pipe.calibrate(rows, args.method, source)  # its warnings (single-class or few-click tasks) reach the user
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        after = pipe.evaluate(rows, split="calibration", source=source)["tasks"]
    for task in before:
        _print(f"  task {task:12s} calib ratio {before[task]['calibration_ratio']:.3f} -> "
               f"{after[task]['calibration_ratio']:.3f}, ECE {before[task]['ece']:.5f} -> {after[task]['ece']:.5f} "
               f"({source}, {args.method})")
    out = Path(args.output or f"{str(args.artifact).rstrip('/')}_calibrated")  # never in place unless asked
    _check_output_dir(out)
    metrics = pipe.diagnostics_ and {"gates": pipe.diagnostics_}
    pipe.save(out, metrics={**(metrics or {}), "calibration": {"method": args.method, "fitted_on": source,
                                                               "before": before, "after": after}})
    _print(f"(the figures above are on the rows the map was fitted on)\nwrote {out}: scores from it (predict, "
           f"evaluate, export, serve) apply the {args.method} map; judge it on the test split with "
           f"`camoe evaluate {out}`")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import json

    import uvicorn

    from camoe.pipeline import CTRPipeline
    from camoe.serving import ServiceLimits, check_port, create_app, run_workers

    limits = ServiceLimits(max_body_bytes=args.max_body_bytes, max_candidates=args.max_candidates,
                           require_features=tuple(args.require_features or ()), body_timeout_s=args.body_timeout,
                           header_timeout_s=args.header_timeout, concurrency=args.concurrency)
    # load and build once here: a bad artifact or option fails now with one clear message, not inside a worker
    create_app(CTRPipeline.load(args.artifact).scorer(args.backend, threads=args.threads), limits)
    os.environ["CAMOE_SERVE_ARTIFACT"] = str(Path(args.artifact).resolve())
    os.environ["CAMOE_SERVE_OPTIONS"] = json.dumps({"backend": args.backend, "threads": args.threads,
                                                    "limits": {**limits.__dict__,
                                                               "require_features": list(limits.require_features)}})
    os.environ["CAMOE_HEADER_TIMEOUT_S"] = str(args.header_timeout)
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="camoe-metrics-")  # /metrics merges workers
    if args.workers > 1 and args.port == 0:
        raise ValueError("--workers N needs a fixed --port (with port 0 each worker would listen on its own port)")
    check_port(args.host, args.port)
    _print(f"serving {args.artifact} on http://{args.host}:{args.port} with {args.workers} worker process(es), "
           f"{args.backend} backend (POST /v1/score, GET /healthz, /v1/metadata, /metrics)")
    options = {"http": "camoe.serving:GuardedHttpToolsProtocol", "log_level": "warning",
               "timeout_keep_alive": int(max(1, args.header_timeout))}
    if args.workers > 1:  # one listening socket per worker process: connections spread over the workers
        return run_workers(args.host, args.port, args.workers, options)
    uvicorn.run("camoe.serving:app_from_env", factory=True, host=args.host, port=args.port, **options)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from camoe.config import demo_config_path

    if args.rows < 10_000:
        raise ValueError(f"--rows {args.rows}: the demo needs at least 10,000 rows for a train/valid/test split")
    out = Path(args.output)
    log_path = out / "log.parquet"
    _print(f"[1/3] generating the synthetic audio-centric log ({args.rows:,} rows, seed {args.seed})")
    cmd_generate(argparse.Namespace(rows=args.rows, seed=args.seed, output=str(log_path), format="parquet"))
    _print("[2/3] training CAMoE (DCN-v2 experts, modality grouping, adaptive loss masking)")
    from camoe.config import deep_merge, load_config

    overrides = deep_merge({"data": {"path": str(log_path)}, "output_dir": str(out / "model")}, _overrides(args.set))
    _, metrics, model_dir = _train(load_config(demo_config_path(), overrides), None, _progress(args))
    _print("[3/3] CAMoE vs the oracle (true click probability) on the test split, per modality:")
    for name, m in metrics["test"]["modality"].items():
        ratio = m["auc_pr"] / m["oracle_auc_pr"]
        _print(f"  {name:8s} AUC-PR {m['auc_pr']:.4f}  oracle {m['oracle_auc_pr']:.4f}  ratio {ratio:.3f}  "
               f"calibration ratio {m['calibration_ratio']:.3f}")
    _print(f"\nartifact: {model_dir}\nscore new rows (a CSV or Parquet file with the log's columns): "
           f"camoe predict {model_dir} ROWS.csv --output pctr.csv  (from the repository: ./run camoe predict ...)")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from camoe.tuning import tune

    t0 = time.perf_counter()
    outcome = tune(args.config, args.trials, args.output, space=args.space, overrides=_overrides(args.set),
                   seed=args.seed, log=_print, timeout_s=args.timeout)
    fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")  # noqa: E731
    _print(f"\n{outcome.trials_run} trials run ({outcome.trials_total} in the study {outcome.study}) in "
           f"{time.perf_counter() - t0:.0f} s")
    _print(f"defaults: mean validation AUC-PR {fmt(outcome.default_valid)}, test {fmt(outcome.default_test)}")
    _print(f"best:     mean validation AUC-PR {fmt(outcome.best_valid)}, test {fmt(outcome.best_test)}  "
           f"{outcome.best_params}")
    _print(f"wrote {outcome.best_config}: train it with `camoe train {outcome.best_config}`")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from camoe.experiments import run_experiment

    t0 = time.perf_counter()
    outcome = run_experiment(args.config, quick=args.quick, output_dir=args.output, log=_print,
                             mlflow_uri=args.mlflow, report_only=args.report_only)
    _print(f"experiment done in {time.perf_counter() - t0:.1f} s: {len(outcome.trained)} runs trained, "
           f"{len(outcome.cached)} cached; report: {outcome.output_dir / 'report' / 'index.html'}")
    return 0


def _model_specs(values: list[str]) -> list[tuple[str | None, str]]:
    """--model [NAME=]PATH -> (name or None, path)."""
    specs = []
    for value in values:
        if "=" in value and not Path(value).exists():
            name, path = value.split("=", 1)
            if not name.strip():
                raise ValueError(f"--model {value}: empty name before '='")
            specs.append((name.strip(), path))
        else:
            specs.append((None, value))
    return specs


def _tenths(t0: float, unit: str) -> Any:
    """A progress callback (done, total) printing a line at each tenth of the total."""
    state = {"next": 0.1}

    def progress(done: int, total: int) -> None:
        if total and done / total >= state["next"]:
            state["next"] = int(done / total * 10 + 1) / 10
            _print(f"  {done:,} / {total:,} {unit} ({time.perf_counter() - t0:.0f} s)")

    return progress


def cmd_replay(args: argparse.Namespace) -> int:
    from camoe.replay.engine import replay
    from camoe.replay.models import load_replay_model
    from camoe.replay.open_bandit import BEHAVIORS, is_open_bandit_root, open_bandit_log
    from camoe.replay.report import format_lifts, format_tables, write_replay_report

    if args.reserve < 0:
        raise ValueError(f"--reserve {args.reserve}: a reserve price is >= 0")
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap {args.bootstrap}: give 0 (no CIs) or more replicates")
    if not Path(args.log).exists():
        raise FileNotFoundError(f"no such file or folder: {args.log}")
    out = Path(args.output or "runs/replay")
    _check_output_dir(out)
    models, pairs, paths = [], [], {}
    for name, path in _model_specs(args.model):
        calibrated = load_replay_model(path, name, args.backend, calibrated=args.calibration != "off",
                                       threads=args.threads)
        if args.calibration == "both" and calibrated.has_calibration:
            raw = load_replay_model(path, f"{calibrated.name} (uncalibrated)", args.backend, calibrated=False,
                                    threads=args.threads)
            models.append(raw)
            pairs.append((raw.name, calibrated.name))
            paths[raw.name] = path
        elif args.calibration == "both":
            _print(f"note: {path} holds no calibration (camoe calibrate); replayed once")
        models.append(calibrated)
        paths[calibrated.name] = path
    open_bandit = is_open_bandit_root(args.log)
    if open_bandit:
        logs = [(b, open_bandit_log(args.log, b, args.split, models[0].config.data.split if models[0].config else None))
                for b in (args.behavior or BEHAVIORS)]
    else:
        if args.behavior:
            raise ValueError("--behavior applies to the Open Bandit dataset folder only")
        logs = [(None, args.log)]
    for behavior, log in logs:
        t0 = time.perf_counter()
        title = f"Open Bandit '{behavior}' log ({args.split} rows)" if behavior else str(args.log)
        _print(f"replaying {title} with {', '.join(m.name for m in models)} ({args.pricing} price, reserve "
               f"{args.reserve:g}, {args.bootstrap} bootstrap replicates)")
        progress = None if args.no_progress else _tenths(t0, "candidates")

        result = replay(log, models, reserve=args.reserve, pricing=args.pricing, bootstrap=args.bootstrap,
                        seed=args.seed, baseline=args.baseline, workers=args.workers,
                        group_by=args.group_by or ("campaign" if behavior else "modality"), progress=progress)
        if behavior:
            result.log = f"{args.log} ({behavior}, {args.split} rows)"
        scored = sum(result.diagnostics[m.name]["candidates_scored"] for m in models)
        _print(f"scored {scored:,} candidates ({result.requests:,} requests x {len(models)} model(s)) in "
               f"{result.seconds:.1f} s: {result.candidates_per_s:,.0f} candidates scored per second")
        _print("")
        _print(format_tables(result))
        if result.lifts:
            _print(format_lifts(result))
        folder = out / behavior if behavior else out
        files = write_replay_report(result, folder, pairs, extra={"models": paths})
        _print(f"wrote {files[0]} and {files[1]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camoe", description="Multi-format ad CTR prediction with CAMoE.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write the synthetic audio-centric impression log, or an auction log "
                                        "(--auctions)")
    p.add_argument("--rows", type=int, default=1_000_000, help="impressions (default 1,000,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the population and impressions (default: 0)")
    p.add_argument("--preset", choices=["audio_centric", "rare_task"], default="audio_centric",
                   help="format table: audio_centric (the paper's blueprint) or rare_task (display 5%% of impressions; "
                        "configs/experiments/rare_task.yaml) (default: %(default)s)")
    p.add_argument("--output", help="output file (.parquet or .csv; default runs/log.parquet); with --shards or "
                                    "--auctions a folder (default runs/log, runs/auctions)")
    p.add_argument("--format", choices=["parquet", "csv"], help="default: from the output suffix")
    p.add_argument("--shards", type=int,
                   help="write S Parquet files into the --output folder, generated one at a time (any size log)")
    a = p.add_argument_group("auction log (camoe replay)", "--auctions N writes N ad requests with K candidates each "
                             "in the world (users, ads, effects) of the impression log --rows / --seed / --shards, so "
                             "models trained on that log are replayed on the same world")
    a.add_argument("--auctions", type=_int_in(1, 10**10), metavar="N", help="ad requests to write")
    a.add_argument("--candidates", type=_int_in(2, 10_000), default=20, metavar="K",
                   help="candidates per request (default: %(default)s)")
    a.add_argument("--auction-seed", type=int, help="seed of the requests, bids and logging choices (default --seed)")
    a.add_argument("--cpm", type=float, default=2.0, help="mean eCPM every format is bid at (default: %(default)s)")
    a.add_argument("--logging-model", metavar="ARTIFACT",
                   help="the logging policy's pCTR from this model (default: the true probability with log-normal "
                        "noise)")
    a.add_argument("--noise-sigma", type=float, default=0.5,
                   help="sigma of the noisy-truth logging policy's log-normal noise (default: %(default)s)")
    a.add_argument("--exploration", choices=["softmax", "epsilon"], default="softmax",
                   help="softmax: P(show) proportional to eCPM^(1/temperature); epsilon: epsilon-greedy "
                        "(default: %(default)s)")
    a.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default: %(default)s)")
    a.add_argument("--epsilon", type=float, default=0.2, help="epsilon-greedy share (default: %(default)s)")
    a.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train and evaluate a model from a YAML config; writes the artifact folder")
    p.add_argument("config", help="YAML run config (see camoe/configs/synthetic.yaml)")
    _add_common_train(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from <output>/checkpoints/last.pt (written at each epoch end and every "
                        "train.checkpoint_every_steps steps) after an interruption; refused when the checkpoint is "
                        "damaged or the config or data changed")
    _add_mlflow(p)
    p.add_argument("--baseline", choices=["pooled", "single_task", "per_task"],
                   help="train a baseline instead of the config's model: pooled = one DCN-v2 head over every format; "
                        "single_task = one DCN-v2 model per format; per_task = one DCN-v2 model per task of the "
                        "config's grouping (default output: <output_dir>_<baseline>)")
    p.add_argument("--warm-start", metavar="ARTIFACT",
                   help="start from this artifact's weights (daily retraining): its vocabularies are extended with the "
                        "new values, its task layout and architecture must match the config")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                   help="with --resume: accept a changed value of KEY (train.epochs, train.patience, train.max_steps, "
                        "train.eval_every_steps)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="per-format / per-task metrics of an artifact; writes metrics.json")
    p.add_argument("artifact", help="artifact folder written by camoe train")
    p.add_argument("--data", help="labelled CSV/Parquet to evaluate (default: the config's split)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split of the config's data")
    p.add_argument("--output", help="folder for metrics.json and report.html (default: <artifact>_eval/<split>, beside "
                                    "the artifact: the artifact itself is never written, so it may be read-only)")
    _add_mlflow(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="write one pCTR per row, from the row's own task head")
    p.add_argument("artifact", help="artifact folder written by camoe train")
    p.add_argument("data", help="CSV/Parquet file, folder or glob")
    p.add_argument("--output", default="predictions.csv", help=".csv or .parquet (default: %(default)s)")
    p.add_argument("--reader", default="auto", help="auto | csv | parquet | open_bandit | ipinyou_fm")
    p.add_argument("--keep", nargs="*", help="input columns to copy into the output (e.g. an impression id)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: score with ONNX Runtime (the same scoring head, exported)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export an artifact for serving (ONNX, dynamic batch)")
    p.add_argument("artifact", help="artifact folder written by camoe train")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", help="folder for model.onnx and inputs.json (default: <artifact>/onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate", help="fit a post-hoc per-task calibration (isotonic or Platt) into an artifact")
    p.add_argument("artifact", help="artifact folder written by camoe train")
    p.add_argument("--method", choices=["platt", "isotonic"], default="platt",
                   help="platt keeps each task's ranking; isotonic is a step function (ties can lower AUC-PR) "
                        "(default: %(default)s)")
    p.add_argument("--data", help="labelled rows to fit on (default: the config's validation split)")
    p.add_argument("--output", help="artifact folder to write (default: <artifact>_calibrated; give ARTIFACT itself "
                                    "to update it in place)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("prune", help="inference-time expert masking: keep each task's top experts, drop the rest")
    p.add_argument("artifact", help="artifact folder written by camoe train")
    p.add_argument("--top-k", type=int, help="experts kept per task (by mean validation gate weight)")
    p.add_argument("--threshold", type=float, help="keep experts with mean gate weight >= this (and the top one)")
    p.add_argument("--data", help="labelled rows (CSV/Parquet) to report the per-format AUC-PR change and latency")
    p.add_argument("--sweep", action="store_true", help="with --data: report K = 1..E, write nothing but --output")
    p.add_argument("--output", help="pruned artifact folder (default <artifact>_top<K>); with --sweep: a CSV file")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("serve", help="HTTP scoring service for an artifact (FastAPI + uvicorn)")
    p.add_argument("artifact", help="artifact folder written by camoe train (read only, never written)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=_int_in(0, 65535), default=8000, help="TCP port (default: %(default)s)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="onnx",
                   help="scoring backend (default: %(default)s)")
    p.add_argument("--workers", type=_int_in(1, 256), default=1,
                   help="worker processes, each on its own SO_REUSEPORT socket (Linux) so connections spread over them; "
                        "one per core serves the most requests (default: %(default)s)")
    p.add_argument("--threads", type=_int_in(1, 256), default=1,
                   help="intra-op threads of one scoring call (default: %(default)s)")
    p.add_argument("--concurrency", type=_int_in(1, 256), default=1,
                   help="scoring calls running at once per worker, off the event loop (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=_int_in(1, 2**40), default=1_000_000,
                   help="larger request bodies get 413 (default: %(default)s)")
    p.add_argument("--max-candidates", type=_int_in(1, 10**7), default=1000,
                   help="requests with more candidates get 422 (default: %(default)s)")
    p.add_argument("--require-features", nargs="*", metavar="FEATURE",
                   help="candidates missing any of these features get 422 (default: none; missing values are imputed "
                        "and reported)")
    p.add_argument("--body-timeout", type=_seconds, default=10.0,
                   help="seconds for a request body to arrive, else 408 (default: %(default)s)")
    p.add_argument("--header-timeout", type=_seconds, default=10.0,
                   help="seconds for request headers to arrive, else the connection is closed (default: %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="generate the synthetic log, train CAMoE, compare with the oracle")
    p.add_argument("--rows", type=int, default=4_000_000, help="impressions generated (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated log (default: %(default)s)")
    p.add_argument("--output", default="runs/demo", help="folder for the log and the artifact (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("tune", help="hyper-parameter search (Optuna TPE, median pruning, resumable SQLite study)")
    p.add_argument("config", help="YAML run config whose validation split the trials are judged on")
    p.add_argument("--trials", type=_int_in(1, 100_000), default=20,
                   help="finished trials wanted in the study, earlier runs included (default: %(default)s)")
    p.add_argument("--space", help="search-space YAML (default: learning rate, batch size, weight decay, sizes, "
                                   "dropout; see camoe.tuning.DEFAULT_SPACE)")
    p.add_argument("--output", default="runs/tune", help="folder of study.db, best.yaml, trials.csv (default: "
                                                          "%(default)s); run again to resume")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("replay", help="replay a logged auction with models: wins, CTR, spend, eCPC per format and "
                                      "modality (truth and IPS / SNIPS / DR) and lifts with CIs")
    p.add_argument("log", help="auction log (folder or Parquet file of camoe generate --auctions, or a CSV / Parquet "
                               "log with request_id, format, bid, shown, click, propensity and/or p_true), or the "
                               "Open Bandit dataset folder")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                   help="artifact folder (or a folder of per-format artifacts); repeat to compare; the first is the "
                        "baseline of the lifts (with one model: the logged policy)")
    p.add_argument("--calibration", choices=["on", "off", "both"], default="on",
                   help="apply the artifacts' calibration (camoe calibrate); both: replay each calibrated model "
                        "uncalibrated too, side by side (default: %(default)s)")
    p.add_argument("--pricing", choices=["second", "first"], default="second",
                   help="second: CPC = next eCPM / own pCTR (at least the reserve); first: CPC = own bid "
                        "(default: %(default)s)")
    p.add_argument("--reserve", type=float, default=0.0,
                   help="CPC reserve price; lower bids are ineligible (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates over requests for the CIs "
                                                              "(default: %(default)s; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--baseline", help="policy the lifts are over (a model name, or 'logged')")
    p.add_argument("--group-by", help="format attribute of the second grouping (default: modality; campaign for "
                                      "Open Bandit)")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                   help="scoring backend (default: %(default)s)")
    p.add_argument("--threads", type=_int_in(1, 256), help="intra-op threads per scoring call")
    p.add_argument("--workers", type=_int_in(1, 64), default=1,
                   help="threads scoring chunks of the log at once (2 overlaps encoding and the forward pass on an "
                        "idle 2-core machine; the results are the same) (default: %(default)s)")
    p.add_argument("--behavior", action="append", choices=["random", "bts"],
                   help="Open Bandit: the logging policy's log to replay (default: both)")
    p.add_argument("--split", choices=["test", "valid", "train", "all"], default="test",
                   help="Open Bandit: rows of the model config's split to replay (default: %(default)s)")
    p.add_argument("--output", help="folder for replay.json and replay.html (default runs/replay; Open Bandit: "
                                    "<output>/<behavior>/)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("experiment", help="run a grid of models × groupings × ablations × seeds and write a report")
    p.add_argument("config", help="experiment YAML, e.g. configs/experiments/paper.yaml")
    p.add_argument("--quick", action="store_true", help="fewer rows, one seed, fewer bootstrap resamples")
    p.add_argument("--output", help="experiment folder (default: output_dir of the file; --quick adds -quick)")
    p.add_argument("--mlflow", metavar="URI", help="also log runs and report to this MLflow tracking URI "
                   "(e.g. file:///abs/mlruns); needs the mlflow extra")
    p.add_argument("--report-only", action="store_true", help="train nothing; report on the runs finished so far")
    p.set_defaults(func=cmd_experiment)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"camoe: {category.__name__}: {message}\n"


def _version() -> str:
    from camoe.version import __version__

    return f"camoe {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input or config)."""
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = _one_line_warning
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FloatingPointError) as err:  # ConfigError, ArtifactError, CheckpointError too
        print(f"camoe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: one line, and what to run to continue
        if os.environ.get("CAMOE_DEBUG"):
            raise
        print(f"camoe {args.command}: interrupted. {RESUME_HINTS.get(args.command, '')}".rstrip(), file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - last resort: one line, not a traceback; CAMOE_DEBUG=1 re-raises
        if os.environ.get("CAMOE_DEBUG"):
            raise
        print(f"camoe {args.command}: error: {type(err).__name__}: {err} (set CAMOE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2


RESUME_HINTS = {
    "tune": "Finished trials are kept in the study; run the same command again to continue it.",
    "train": "Run the same command with --resume to continue from the last checkpoint.",
    "experiment": "Finished runs are cached; run the same command again to continue.",
}


if __name__ == "__main__":
    sys.exit(main())
