"""HTTP scoring service (FastAPI on uvicorn): one listener's context plus a list of candidate ads of mixed formats.

    POST /v1/score     {"context": {feature: value, ...}, "candidates": [{"format": ..., feature: value, ...}, ...]}
                    -> {"model_version": ..., "scores": [{"format", "task", "pctr"[, "missing": [features]]}, ...],
                        "out_of_vocabulary": {feature: n}, "missing": {feature: n}, "clipped": {feature: n}}
    GET  /healthz      liveness (answers while a large request scores: scoring runs off the event loop)
    GET  /v1/metadata  schema, formats, tasks, version
    GET  /metrics      Prometheus: requests by endpoint and status, latency, input quality per feature
                       (out-of-vocabulary, missing, clipped values) and the pCTR distribution per task

Each candidate row = context features overridden by the candidate's own; the columns go through the artifact's
``Scorer`` (the encoder used in training, fed {column: values} instead of a DataFrame, then the model's own task
head, the downsampling correction and the calibration), so a candidate's pCTR never depends on the other
candidates.

Guards (defaults in ``ServiceLimits``; ``camoe serve --help`` sets them):

* a malformed body, a wrong type, an unknown format or feature -> 422 naming the field; more than
  ``max_candidates`` candidates -> 422; with ``require_features`` a candidate missing one of them -> 422 naming
  the candidate and features;
* a body over ``max_body_bytes`` -> 413, sent after the rest of the body is read and discarded (up to
  ``drain_bytes`` or ``body_timeout_s``) so the client sees the answer, not a reset connection;
* a body not received within ``body_timeout_s`` -> 408; request headers not received within
  ``header_timeout_s`` -> the connection is closed (``GuardedHttpToolsProtocol``), so slow clients cannot hold
  connections (and file descriptors) open;
* a client that disconnects before its body arrives is counted with status 499 and logged, never a 5xx;
* scoring runs in a bounded thread pool (``concurrency`` calls at once per worker process); ``camoe serve --workers
  N`` runs N processes (``run_workers``; metrics are then merged through ``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from camoe.artifact import schema_fingerprint
from camoe.data.batches import input_columns
from camoe.scoring import Scorer
from camoe.version import __version__

__all__ = ["GuardedHttpToolsProtocol", "ScoreRequest", "ServiceLimits", "app_from_env", "create_app", "parse_request",
           "check_port", "run_workers", "wait_until_healthy"]

log = logging.getLogger("camoe.serving")

FeatureValue = str | int | float | bool | list[str | int | float | None] | None
PCTR_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


class Candidate(BaseModel):
    """One candidate ad: its format plus ad-side features (any schema feature may be given here)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FeatureValue] = Field(init=False)  # feature values are type-checked too
    format: str = Field(min_length=1)


class ScoreRequest(BaseModel):
    """``POST /v1/score`` body (its JSON schema documents the endpoint; ``parse_request`` checks bodies)."""

    context: dict[str, FeatureValue] = Field(default_factory=dict)  # shared request features (user, device, ...)
    candidates: list[Candidate] = Field(min_length=1)


_SCALARS = (str, int, float, bool, type(None))


def _bad(loc: list[Any], msg: str, kind: str) -> list[dict[str, Any]]:
    return [{"loc": loc, "msg": msg, "type": kind}]


def _value_error(value: Any, loc: list[Any]) -> list[dict[str, Any]] | None:
    """None when ``value`` is a ``FeatureValue`` (a scalar, or a list of non-list scalars)."""
    if type(value) in _SCALARS or isinstance(value, _SCALARS):
        return None
    if isinstance(value, list):
        for j, item in enumerate(value):
            if not isinstance(item, (str, int, float, type(None))):
                return _bad([*loc, j], f"expected a string, number or null inside the list, got {type(item).__name__}",
                            "list_item_type")
        return None
    return _bad(loc, f"expected a string, number, boolean, null or a list of them, got {type(value).__name__}",
                "value_type")


def parse_request(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]] | list[dict[str, Any]]:
    """A ``POST /v1/score`` body -> (context, candidates), or the list of errors (``loc``, ``msg``, ``type``) that a
    422 answer carries. The same contract as ``ScoreRequest``, checked with ``json.loads`` and plain Python, which is
    several times faster than model validation and lets the event loop run while a large body is checked.

    Example:
        >>> parse_request(b'{"candidates": [{"format": "audio", "device": "ios"}]}')
        ({}, [{'format': 'audio', 'device': 'ios'}])
        >>> parse_request(b'{"candidates": []}')[0]["msg"]
        'candidates must be a non-empty list'
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        return _bad(["body"], f"invalid JSON: {err}", "json_invalid")
    except RecursionError:  # arrays / objects nested deeper than the parser's stack: not a request, never a 500
        return _bad(["body"], "invalid JSON: nested too deeply", "json_invalid")
    if not isinstance(body, dict):
        return _bad(["body"], f"expected a JSON object, got {type(body).__name__}", "model_type")
    context = body.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        return _bad(["context"], f"expected an object of feature values, got {type(context).__name__}", "dict_type")
    for name, value in context.items():
        problem = _value_error(value, ["context", name])
        if problem:
            return problem
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return _bad(["candidates"], "candidates must be a non-empty list", "missing" if candidates is None else "list")
    for i, cand in enumerate(candidates):
        if not isinstance(cand, dict):
            return _bad(["candidates", i], f"expected an object, got {type(cand).__name__}", "model_type")
        fmt = cand.get("format")
        if not isinstance(fmt, str) or not fmt:
            return _bad(["candidates", i, "format"], "format must be a non-empty string", "string_type")
        for name, value in cand.items():
            if type(value) is not str:
                problem = _value_error(value, ["candidates", i, name])
                if problem:
                    return problem
    return context, candidates


@dataclass(frozen=True)
class ServiceLimits:
    """Request limits and timeouts of the service.

    Attributes:
        max_body_bytes: larger bodies get 413.
        max_candidates: more candidates get 422.
        require_features: features every candidate must have (from its context or its own fields), else 422.
        body_timeout_s: the whole body must arrive within this many seconds, else 408.
        header_timeout_s: request headers must arrive within this many seconds of the connection opening or of
            the previous response, else the connection is closed (read by ``GuardedHttpToolsProtocol``).
        drain_bytes: body bytes read and discarded before a 413 (so the client receives it).
        concurrency: scoring calls running at once per process (a bounded thread pool off the event loop).
    """

    max_body_bytes: int = 1_000_000
    max_candidates: int = 1000
    require_features: tuple[str, ...] = ()
    body_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    drain_bytes: int = 8_000_000
    concurrency: int = 1


def wait_until_healthy(url: str, process: Any | None = None, timeout_s: float = 60.0) -> None:
    """Poll ``GET {url}/healthz`` until it answers (e.g. after starting ``camoe serve`` as a subprocess).

    Raises:
        RuntimeError: the process exited, or no answer within ``timeout_s`` seconds.
    """
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the scoring service exited with status {process.returncode}") from None
            if time.time() > deadline:
                raise RuntimeError(f"{url}/healthz did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.2)


def _error(status: int, detail: Any, close: bool = False) -> Response:
    return Response(json.dumps({"detail": detail}), status_code=status, media_type="application/json",
                    headers={"connection": "close"} if close else None)


async def _drain(receive: Any, limit_bytes: int, timeout_s: float) -> None:
    """Read and discard the rest of a request body (bounded in bytes and time)."""
    seen = 0
    with anyio.move_on_after(timeout_s):
        while seen <= limit_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class _Metrics:
    """Prometheus series of one app (merged across worker processes when ``PROMETHEUS_MULTIPROC_DIR`` is set)."""

    def __init__(self, tasks: tuple[str, ...]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("camoe_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("camoe_request_latency_seconds", "request latency (s)", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        self.inputs = Counter("camoe_input_values", "candidate values the encoder had to map, per feature",
                              ["feature", "kind"], registry=self.registry)  # kind: out_of_vocabulary|missing|clipped
        self.pctr = Histogram("camoe_pctr", "pCTR returned, per task", ["task"], registry=self.registry,
                              buckets=PCTR_BUCKETS)
        self.tasks = tasks

    def expose(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


def create_app(scorer: Scorer, limits: ServiceLimits | None = None, **overrides: Any) -> FastAPI:
    """Build the service around a model's scorer.

    Args:
        scorer: the artifact's ``Scorer`` (``CTRPipeline.load(artifact).scorer("onnx")``, or ``"torch"``).
        limits: request limits and timeouts (``ServiceLimits``); keyword ``overrides`` replace single fields, e.g.
            ``create_app(scorer, max_candidates=50)``.

    Raises:
        ValueError: ``require_features`` names features the model does not have.
    """
    limits = limits or ServiceLimits()
    if overrides:
        limits = ServiceLimits(**{**limits.__dict__, **overrides})
    layout, schema = scorer.layout, scorer.schema
    feature_names = {f.name for f in schema.features}
    # what a request may send: the columns the features are read or derived from (a derived feature's own name is
    # not a column); the timestamp only when a feature derives from it, and only if sent (else: scored now)
    request_names = set(input_columns(schema, labels=False)) - {schema.format}
    optional = {schema.timestamp} & request_names
    unknown_required = sorted(set(limits.require_features) - feature_names)
    if unknown_required:
        raise ValueError(f"require_features: {unknown_required} are not features of the model; features: "
                         f"{sorted(feature_names)}")
    known_formats = set(layout.formats)
    version = f"camoe-{__version__}+schema.{schema_fingerprint(scorer.encoder.state_dict())[:12]}"
    series = _Metrics(layout.tasks)
    limiter = anyio.CapacityLimiter(max(1, limits.concurrency))
    app = FastAPI(title="camoe scoring", version=__version__)
    routes = {"/v1/score", "/healthz", "/v1/metadata", "/metrics", "/docs", "/openapi.json"}

    class LimitAndMeasure:
        """Pure ASGI middleware: 413 on a declared body over the limit; request count and latency per endpoint."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            start, status = time.perf_counter(), 500

            async def send_status(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            length = dict(scope["headers"]).get(b"content-length", b"")
            try:
                if length.isdigit() and int(length) > limits.max_body_bytes:
                    await _drain(receive, limits.drain_bytes, limits.body_timeout_s)
                    await _error(413, f"request body of {int(length)} bytes exceeds max_body_bytes="
                                      f"{limits.max_body_bytes}", close=True)(scope, receive, send_status)
                else:
                    await self.inner(scope, receive, send_status)
            finally:
                path = scope["path"] if scope["path"] in routes else "other"  # bounded label set
                series.requests.labels(path, str(status)).inc()
                series.latency.labels(path).observe(time.perf_counter() - start)

    app.add_middleware(LimitAndMeasure)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/metadata")
    def metadata() -> dict[str, Any]:
        return {
            "model_version": version,
            "formats": list(layout.formats),
            "tasks": list(layout.tasks),
            "format_to_task": dict(layout.format_to_task),
            "features": [f.model_dump(mode="json") for f in schema.features],
            "numeric_ranges": scorer.encoder.range_,
            "require_features": list(limits.require_features),
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(series.expose(), media_type=CONTENT_TYPE_LATEST)

    async def read_body(request: Request) -> bytes | Response:
        chunks, size = [], 0
        try:
            with anyio.fail_after(limits.body_timeout_s):
                async for chunk in request.stream():  # bounded read, also for bodies sent without Content-Length
                    size += len(chunk)
                    if size > limits.max_body_bytes:
                        break
                    chunks.append(chunk)
        except TimeoutError:
            return _error(408, f"request body not received within {limits.body_timeout_s:g} s", close=True)
        except ClientDisconnect:
            client = request.client
            log.info("client %s disconnected before its request body arrived", f"{client.host}:{client.port}"
                     if client else "?")
            return Response(status_code=499)  # counted as such; nobody is listening for it
        if size > limits.max_body_bytes:
            await _drain(request.receive, limits.drain_bytes, limits.body_timeout_s)
            return _error(413, f"request body exceeds max_body_bytes={limits.max_body_bytes}", close=True)
        return b"".join(chunks)

    def handle(raw: bytes) -> Response:
        """Validate, encode, score and answer one request body (runs in the worker thread pool)."""
        parsed = parse_request(raw)
        if isinstance(parsed, list):
            return _error(422, parsed)
        context, candidates = parsed
        if len(candidates) > limits.max_candidates:
            return _error(422, f"candidates: {len(candidates)} exceeds max_candidates={limits.max_candidates}")
        unknown_ctx = sorted(set(context) - request_names)
        if unknown_ctx:
            return _error(422, f"context: unknown features {unknown_ctx}; features: {sorted(request_names)}")
        n = len(candidates)
        sent = {name for name in optional if name in context or any(name in c for c in candidates)}
        columns: dict[str, list[Any]] = {name: [context.get(name)] * n for name in request_names - optional | sent}
        formats = [c["format"] for c in candidates]
        columns[schema.format] = formats
        for i, cand in enumerate(candidates):
            if cand["format"] not in known_formats:
                return _error(422, f"candidates[{i}].format: unknown ad format '{cand['format']}'; known formats: "
                                   f"{list(layout.formats)}")
            for name, value in cand.items():
                if name == "format":
                    continue
                if name not in request_names:
                    unknown = sorted(set(cand) - request_names - {"format"})
                    return _error(422, f"candidates[{i}]: unknown features {unknown}; features: "
                                       f"{sorted(request_names)}")
                columns[name][i] = value  # the candidate's own value overrides the context's
        try:  # {column: N values}: encoded by the training encoder without building a DataFrame
            result = scorer.score(columns, "request")
        except ValueError as err:
            return _error(422, str(err))
        for name in limits.require_features:  # missing as the encoder reads it: absent, null, "", "NA", NaN, " "...
            lacking = np.flatnonzero(result.missing_rows[name]).tolist() if name in result.missing_rows else []
            if lacking:
                return _error(422, f"required feature '{name}' is missing in candidates {lacking[:10]}"
                                   f"{' ...' if len(lacking) > 10 else ''} (require_features: "
                                   f"{list(limits.require_features)})")
        scores = []
        for i, (fmt, p) in enumerate(zip(formats, result.pctr.tolist())):
            entry: dict[str, Any] = {"format": fmt, "task": layout.format_to_task[fmt], "pctr": p}
            missing = result.missing_features(i) if result.missing_rows else []
            if missing:
                entry["missing"] = missing
            scores.append(entry)
        quality = result.quality.to_dict(nonzero=True)
        for kind in ("out_of_vocabulary", "missing", "clipped"):
            for feature, count in quality[kind].items():
                series.inputs.labels(feature, kind).inc(count)
        for task_id, p in zip(result.task_ids.tolist(), result.pctr.tolist()):
            series.pctr.labels(layout.tasks[task_id]).observe(p)
        body_out = json.dumps({"model_version": version, "scores": scores,
                               "out_of_vocabulary": quality["out_of_vocabulary"], "missing": quality["missing"],
                               "clipped": quality["clipped"]}, allow_nan=False)  # never invalid JSON
        return Response(body_out, media_type="application/json")

    @app.post("/v1/score", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ScoreRequest.model_json_schema()}}}})
    async def score(request: Request) -> Response:
        raw = await read_body(request)
        if isinstance(raw, Response):
            return raw
        # parsing, encoding and scoring run in a bounded thread pool, so the event loop keeps answering (healthz)
        return await anyio.to_thread.run_sync(handle, raw, limiter=limiter)

    return app


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-header timeout: a connection that has not sent complete
    request headers within ``CAMOE_HEADER_TIMEOUT_S`` seconds (default 10) of opening, or of its previous response,
    is answered 408 and closed. uvicorn itself times out only idle keep-alive connections, so without this a client
    sending headers byte by byte holds its connection (and a file descriptor) for as long as it likes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = float(os.environ.get("CAMOE_HEADER_TIMEOUT_S", "10"))
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("closing a connection that sent no complete request headers within %.0f s", self.header_timeout_s)
            message = b"request headers not received in time"
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: "
                                 + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers are due in time too (keep-alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` worker processes (``camoe serve --workers N``): builds the scorer from
    the artifact named in ``CAMOE_SERVE_ARTIFACT`` with the settings ``camoe serve`` put in ``CAMOE_SERVE_OPTIONS``
    (JSON)."""
    from camoe.pipeline import CTRPipeline

    options = json.loads(os.environ.get("CAMOE_SERVE_OPTIONS", "{}"))
    scorer = CTRPipeline.load(os.environ["CAMOE_SERVE_ARTIFACT"]).scorer(options.get("backend", "onnx"),
                                                                       threads=options.get("threads"))
    limits = options.get("limits", {})
    limits["require_features"] = tuple(limits.get("require_features", ()))
    return create_app(scorer, ServiceLimits(**limits))


def _listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def check_port(host: str, port: int) -> None:
    """Bind and release ``host:port`` with a plain socket (no SO_REUSEPORT), so a port in use fails before starting.

    Raises:
        ValueError: the address is in use or cannot be bound (naming it and the reason).
    """
    try:
        _listening_socket(host, port, reuse_port=False).close()
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port or --host") from None


def _serve_one_worker(host: str, port: int, uvicorn_options: dict[str, Any]) -> None:
    """One worker process: its own listening socket in the port's SO_REUSEPORT group, one uvicorn server."""
    import uvicorn

    sock = _listening_socket(host, port, reuse_port=True)
    uvicorn.Server(uvicorn.Config("camoe.serving:app_from_env", factory=True, **uvicorn_options)).run(sockets=[sock])


def run_workers(host: str, port: int, workers: int, uvicorn_options: dict[str, Any]) -> int:
    """Serve ``app_from_env`` from ``workers`` processes, each listening on its own socket bound with SO_REUSEPORT.

    uvicorn's own ``workers=N`` shares one listening socket, and whichever process wakes first accepts every
    connection waiting in the backlog: a client pool that opens its 32 keep-alive connections at once was measured
    with 31 of them on one worker of two (544 requests/s against 1,025 when balanced). With one socket per process
    the kernel spreads connections over the workers by their address hash. A worker that dies is restarted; one that
    fails within 5 s of its start stops the service (exit status 1). SIGTERM / SIGINT stop every worker.

    Args:
        host, port: the address (a fixed port: with port 0 every worker would get its own).
        workers: N >= 2 processes.
        uvicorn_options: keyword arguments of ``uvicorn.Config`` (http protocol, log level, keep-alive timeout).

    Returns:
        The exit status: 0 after SIGTERM / SIGINT, 1 when a worker could not start.

    Raises:
        ValueError: port 0, or a platform without SO_REUSEPORT load balancing (Linux only).
        ValueError: the port is already taken (checked before any worker starts).
    """
    if port == 0:
        raise ValueError("--workers N needs a fixed --port (with port 0 each worker would listen on its own port)")
    if not (sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")):
        raise ValueError("camoe serve --workers N > 1 needs Linux (SO_REUSEPORT); run one worker per port instead")
    check_port(host, port)  # anything already listening there, another camoe service included: never join it
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> tuple[multiprocessing.process.BaseProcess, float]:
        process = context.Process(target=_serve_one_worker, args=(host, port, uvicorn_options), daemon=False)
        process.start()
        return process, time.monotonic()

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    processes = [start() for _ in range(workers)]
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for i, (process, started) in enumerate(processes):
                if process.is_alive() or stopping:
                    continue
                if time.monotonic() - started < 5.0:
                    log.error("worker process %d exited with status %s while starting; stopping", process.pid,
                              process.exitcode)
                    status, stopping = 1, True
                    break
                log.warning("worker process %d exited with status %s; restarting it", process.pid, process.exitcode)
                processes[i] = start()
    finally:
        for process, _ in processes:
            if process.is_alive():
                process.terminate()  # uvicorn shuts down gracefully on SIGTERM
        deadline = time.monotonic() + 30
        for process, _ in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
