"""Serving latency: in-process (eager PyTorch vs ONNX Runtime; model only and encode + model) for 1, 10, 100 and
500 candidates, and HTTP on loopback at a fixed offered load with a bounded request count.

Run: .venv/bin/python benchmarks/serving.py [--artifact runs/demo/model] [--requests 2000] [--rate 100]
Without --artifact it trains a small model on a 200k-row synthetic log first (about 20 s).
Prints p50 / p99 in ms per configuration; all figures come from this one process run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import camoe
from camoe.export import OnnxScorer, ScoringModule, export_onnx


def _percentiles(samples_s: list[float]) -> str:
    ms = np.array(samples_s) * 1e3
    return f"p50 {np.percentile(ms, 50):7.3f} ms  p99 {np.percentile(ms, 99):7.3f} ms"


def _time(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(5):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifact")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests (bounded)")
    parser.add_argument("--rate", type=float, default=100.0, help="offered HTTP load, requests/s")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per HTTP request")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    log = camoe.generate_log(camoe.SyntheticConfig(rows=200_000, seed=0))
    if args.artifact:
        pipe = camoe.CTRPipeline.load(args.artifact)
    else:
        cfg = camoe.load_config(camoe.demo_config_path(), {"train": {"epochs": 1}})
        splits = camoe.split_frame(log, cfg.data.split, cfg.schema.timestamp)
        pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"])
    onnx = OnnxScorer(pipe, export_onnx(pipe, tmp / "onnx"))
    module = ScoringModule(pipe.model_, pipe.layout_.format_task_index, pipe.config.train.negative_sampling_rate).eval()
    print("in-process, 1 thread (model = pre-encoded tensors; full = encode from a DataFrame + model):")
    for n in (1, 10, 100, 500):
        frame = log.sample(n, random_state=n).reset_index(drop=True)
        batch = pipe.encode(frame, "bench", labels=False)
        feeds = {"cat_ids": batch.cat_ids.numpy(), "multi_ids": batch.multi_ids.numpy(),
                 "dense": batch.dense.numpy(), "format_ids": batch.format_ids.numpy()}
        with torch.no_grad():
            eager_model = _time(lambda: module(batch.cat_ids, batch.multi_ids, batch.dense, batch.format_ids), 300)
        onnx_model = _time(lambda: onnx.session.run(["pctr"], feeds), 300)
        onnx_full = _time(lambda: onnx.predict_proba(frame), 100)
        print(f"  {n:4d} candidates  eager model {_percentiles(eager_model)} | onnx model {_percentiles(onnx_model)}"
              f" | onnx full {_percentiles(onnx_full)}", flush=True)

    import httpx
    import uvicorn

    from camoe.serving import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pipe, scorer=onnx), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    rows = log.sample(args.candidates, random_state=1)
    context_cols = ["age_bucket", "country", "device", "hour", "app_in_focus", "interests", "session_minutes"]
    context = {c: (str(rows.iloc[0][c]).split("|") if c == "interests" else rows.iloc[0][c].item()
                   if hasattr(rows.iloc[0][c], "item") else rows.iloc[0][c]) for c in context_cols}
    ad_cols = ["advertiser_id", "ad_category", "content_type", "format", "bid_price", "ad_duration_s"]
    candidates = [{c: (r[c].item() if hasattr(r[c], "item") else r[c]) for c in ad_cols} for _, r in rows.iterrows()]
    body = {"context": context, "candidates": candidates}

    async def run_load() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            async def one() -> None:
                nonlocal errors
                t0 = time.perf_counter()
                r = await client.post("/v1/score", json=body)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200
            tasks = []
            start = time.perf_counter()
            for i in range(args.requests):  # open-loop: fixed offered rate, bounded count
                delay = start + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
        print(f"HTTP loopback, {args.candidates} candidates, offered {args.rate:.0f} req/s, {args.requests} requests: "
              f"{_percentiles(latencies)}, achieved {args.requests / elapsed:.1f} req/s, errors {errors}")
        return latencies, errors

    asyncio.run(run_load())
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
