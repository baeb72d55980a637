"""Serving latency and load.

1. In-process, 1 thread, for 1, 10, 100 and 500 candidates: eager PyTorch vs ONNX Runtime (model only, on encoded
   tensors), full vs pruned (``camoe prune --top-k``), and the full request path (encode {column: values} + ONNX).
2. HTTP on loopback against a ``camoe serve`` subprocess (uvicorn, ONNX backend), driven from this process (the load
   generator never shares the server's interpreter):
   * open loop: a fixed offered rate (default 100 requests/s of 100 mixed-format candidates), bounded count;
   * closed loop: N requests from C concurrent keep-alive connections (default 10,000 requests, concurrency 32),
     once per worker count (``--workers 1 2``);
   * slow clients: connections that send their headers a byte per second while /healthz is polled.
   Each prints p50 / p99 latency in ms, the achieved rate and the error count (any non-200 is an error).

Run: .venv/bin/python benchmarks/serving.py [--artifact runs/demo/model] [--top-k 1]
     [--requests 2000 --rate 100] [--load-requests 10000 --concurrency 32] [--skip-http]
Without --artifact it trains a small model on a 200k-row synthetic log first (about 30 s).
All figures come from this one run; compare them as ratios (full vs pruned, eager vs ONNX) on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import camoe
from camoe.prune import prune_pipeline, select_experts
from camoe.serving import wait_until_healthy


HEADERS = {"content-type": "application/json"}


def _percentiles(samples_s: list[float]) -> str:
    ms = np.array(samples_s) * 1e3
    return f"p50 {np.percentile(ms, 50):7.3f} ms  p99 {np.percentile(ms, 99):7.3f} ms"


def _time(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(10):
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


def _request_body(pipe: camoe.CTRPipeline, rows: pd.DataFrame) -> dict[str, Any]:
    """One listener's context (the first row's user-side features) and the rows' ads as candidates."""
    schema = pipe.config.schema
    names = [f.name for f in schema.features]
    multi = {f.name: f.separator for f in schema.features if f.type == "multi_categorical"}

    def value(v: Any, name: str) -> Any:
        if name in multi:
            return [x for x in str(v).split(multi[name]) if x] if isinstance(v, str) else []
        if isinstance(v, float) and np.isnan(v):
            return None
        return v.item() if hasattr(v, "item") else v

    user_side = [n for n in names if n in {"age_bucket", "country", "device", "hour", "app_in_focus", "interests",
                                           "session_minutes", "user_id"}]
    first = rows.iloc[0]
    context = {n: value(first[n], n) for n in user_side}
    candidates = [{schema.format: r[schema.format], **{n: value(r[n], n) for n in names if n not in user_side}}
                  for _, r in rows.iterrows()]
    return {"context": context, "candidates": candidates}


def _in_process(pipe: camoe.CTRPipeline, pruned: camoe.CTRPipeline, log: pd.DataFrame) -> None:
    torch.set_num_threads(1)
    scorers = {name: {"torch": p.scorer("torch"), "onnx": p.scorer("onnx")}
               for name, p in (("full", pipe), ("pruned", pruned))}
    print(f"in-process, 1 thread; pruned = top-{pruned.config.model.gate_mask and sum(pruned.config.model.gate_mask[0])}"
          f" per task, {pruned.config.model.num_experts} of {pipe.config.model.num_experts} experts kept. "
          f"model = encoded tensors in, pCTR out (the Scorer's backend); request = Scorer.score({{column: values}}), "
          f"ONNX")
    for n in (1, 10, 100, 500):
        frame = log.sample(n, random_state=n).reset_index(drop=True)
        columns = {c: frame[c].tolist() for c in frame.columns}
        batch = scorers["full"]["onnx"].encode(frame, "bench").batch
        line = [f"  {n:4d} mixed-format candidates"]
        for name in ("full", "pruned"):
            eager = _time(lambda: scorers[name]["torch"].backend(batch), 300)
            onnx = _time(lambda: scorers[name]["onnx"].backend(batch), 300)
            line.append(f"{name}: eager {_percentiles(eager)} | onnx {_percentiles(onnx)}")
        request = _time(lambda: scorers["full"]["onnx"].score(columns, "bench"), 2000)  # p99 = the 20th slowest
        line.append(f"request path (full, onnx): {_percentiles(request)}")
        print("\n      ".join(line), flush=True)
    # one format only: the pruned model computes only that task's experts
    fmt = log[pipe.config.schema.format].value_counts().index[0]
    frame = log[log[pipe.config.schema.format] == fmt].sample(100, random_state=0)
    for name in ("full", "pruned"):
        scorer = scorers[name]["onnx"]
        b = scorer.encode(frame, "bench").batch
        print(f"   100 candidates of one format ({fmt}), {name}: onnx {_percentiles(_time(lambda: scorer.backend(b), 300))}")


class _Recorder:
    """Posts one scoring request and records its latency; any non-200 or transport error counts as an error."""

    def __init__(self, client: Any, body: dict[str, Any]) -> None:
        self.client, self.payload = client, json.dumps(body).encode()  # encoded once: CPU goes to sending
        self.latencies: list[float] = []
        self.errors = 0

    async def post(self) -> None:
        import httpx

        t0 = time.perf_counter()
        try:
            r = await self.client.post("/v1/score", content=self.payload, headers=HEADERS)
            self.errors += r.status_code != 200
        except httpx.HTTPError:
            self.errors += 1
        self.latencies.append(time.perf_counter() - t0)


async def _open_loop(url: str, body: dict[str, Any], requests: int, rate: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        rec = _Recorder(client, body)
        tasks = []
        start = time.perf_counter()
        for i in range(requests):  # open loop: request i is sent at start + i / rate, whatever the replies do
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(rec.post()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    print(f"HTTP open loop: {len(body['candidates'])} candidates, offered {rate:.0f} req/s, {requests} requests: "
          f"{_percentiles(rec.latencies)}, achieved {requests / elapsed:.1f} req/s, errors {rec.errors}", flush=True)


class _RawConnection:
    """One keep-alive HTTP/1.1 connection sending a pre-encoded request and reading the reply by Content-Length.

    The load generator shares the 2-core machine with the server, so its cost per request matters: httpx spends
    about as much CPU per request as the server's scoring; this reads and writes bytes only.
    """

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.writer.close()
            self.writer = None
        return status


async def _closed_loop(url: str, body: dict[str, Any], requests: int, concurrency: int, label: str = "") -> dict:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    request = (f"POST /v1/score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    remaining, latencies, errors = requests, [], 0

    async def worker() -> None:
        nonlocal remaining, errors
        conn = _RawConnection(host, int(port), request)
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                errors += await conn.post() != 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn.writer = None
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    rate = requests / elapsed
    print(f"HTTP closed loop{label}: {len(body['candidates'])} candidates, {requests} requests, concurrency "
          f"{concurrency}: {_percentiles(latencies)}, achieved {rate:.1f} req/s, errors {errors}", flush=True)
    return {"rate": rate, "p99_ms": float(np.percentile(np.array(latencies) * 1e3, 99)), "errors": errors}


async def _slow_clients(url: str, connections: int, seconds: float) -> None:
    """``connections`` clients that send their headers one byte per second, held for ``seconds``, while /healthz is
    polled every 50 ms: prints how many polls answered and the slowest one."""
    host, port = url.removeprefix("http://").split(":")
    line = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n".encode()
    stop = time.perf_counter() + seconds
    closed = 0

    async def slow() -> None:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return
        i = 0
        while time.perf_counter() < stop:
            try:
                writer.write(line[i % len(line): i % len(line) + 1])
                await writer.drain()
                if reader.at_eof():
                    closed += 1
                    return
                await asyncio.sleep(1.0)
                i += 1
            except (ConnectionError, OSError):
                closed += 1
                return
        writer.close()

    async def probe() -> tuple[int, int, float]:
        ok = failed = 0
        worst = 0.0
        conn_request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
                writer.write(conn_request)
                answer = await asyncio.wait_for(reader.read(200), 2)
                writer.close()
                ok += answer.startswith(b"HTTP/1.1 200")
                failed += not answer.startswith(b"HTTP/1.1 200")
            except (OSError, asyncio.TimeoutError):
                failed += 1
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.05)
        return ok, failed, worst

    results = await asyncio.gather(probe(), *(slow() for _ in range(connections)))
    ok, failed, worst = results[0]
    print(f"slow clients: {connections} connections sending headers at 1 byte/s for {seconds:.0f} s: /healthz answered "
          f"{ok} of {ok + failed} polls (slowest {worst * 1e3:.1f} ms); the server closed {closed} slow connections",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact")
    parser.add_argument("--top-k", type=int, default=1, help="experts kept per task in the pruned model")
    parser.add_argument("--requests", type=int, default=2000, help="open-loop HTTP requests (bounded)")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop offered load, requests/s")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per HTTP request")
    parser.add_argument("--load-requests", type=int, default=10_000, help="closed-loop HTTP requests")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop concurrent clients")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to load, in turn")
    parser.add_argument("--slow-connections", type=int, default=200, help="slow clients held during the last run")
    parser.add_argument("--slow-seconds", type=float, default=15.0, help="how long the slow clients are held")
    parser.add_argument("--header-timeout", type=float, default=5.0, help="camoe serve --header-timeout")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    log = camoe.generate_log(camoe.SyntheticConfig(rows=200_000, seed=1))
    if args.artifact:
        artifact = Path(args.artifact)
        pipe = camoe.CTRPipeline.load(artifact)
    else:
        cfg = camoe.load_config(camoe.demo_config_path(), {"train": {"epochs": 1}})
        splits = camoe.split_frame(log, cfg.data.split, cfg.schema.timestamp)
        pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"])
        artifact = pipe.save(tmp / "model")
    keep = select_experts(pipe.diagnostics_["mean_gate_weight"], pipe.layout_.tasks, top_k=args.top_k)
    pruned = prune_pipeline(pipe, keep)
    if not args.skip_in_process:
        _in_process(pipe, pruned, log)
    if args.skip_http:
        return
    body = _request_body(pipe, log.sample(args.candidates, random_state=2))
    summary = {}
    for workers in args.workers:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "camoe", "serve", str(artifact), "--port", str(port),
                                   "--backend", "onnx", "--workers", str(workers), "--header-timeout",
                                   str(args.header_timeout)], stdout=subprocess.DEVNULL, env={**os.environ})
        try:
            wait_until_healthy(url, server, timeout_s=120)
            print(f"--- camoe serve --workers {workers}", flush=True)
            asyncio.run(_closed_loop(url, body, min(2000, args.load_requests), args.concurrency, " (warm-up)"))
            if workers == args.workers[0]:
                asyncio.run(_open_loop(url, body, args.requests, args.rate))
            summary[workers] = asyncio.run(_closed_loop(url, body, args.load_requests, args.concurrency))
            if workers == args.workers[-1] and args.slow_connections:
                asyncio.run(_slow_clients(url, args.slow_connections, args.slow_seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)
    if len(summary) > 1:
        first, last = args.workers[0], args.workers[-1]
        print(f"workers {last} vs {first}: {summary[last]['rate'] / summary[first]['rate']:.2f}x the requests/s")


if __name__ == "__main__":
    main()
