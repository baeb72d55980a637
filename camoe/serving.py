"""HTTP scoring service (FastAPI): one listener's context plus a list of candidate ads of mixed formats.

    POST /v1/score     {"context": {feature: value, ...}, "candidates": [{"format": ..., feature: value, ...}, ...]}
                    -> {"model_version": ..., "scores": [{"format": ..., "task": ..., "pctr": ...}, ...],
                        "out_of_vocabulary": {feature: candidates whose value was unseen in training}}
    GET  /healthz      liveness
    GET  /v1/metadata  schema, formats, tasks, version
    GET  /metrics      Prometheus: request count by endpoint and status, latency histogram

Each candidate row = context features overridden by the candidate's own; the columns go through the artifact's
``Scorer`` (the encoder used in training, fed {column: values} instead of a DataFrame, then the model's own task
head, the downsampling correction and the calibration), so a candidate's pCTR never depends on the other candidates. Errors: a malformed body, a wrong type or an unknown format -> 422 naming the
field (unknown formats list the known ones); a body over ``max_body_bytes`` -> 413; too many candidates -> 422.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from camoe.artifact import schema_fingerprint
from camoe.version import __version__
from camoe.scoring import Scorer

__all__ = ["ScoreRequest", "create_app", "wait_until_healthy"]

FeatureValue = str | int | float | bool | list[str | int | float | None] | None


class Candidate(BaseModel):
    """One candidate ad: its format plus ad-side features (any schema feature may be given here)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FeatureValue] = Field(init=False)  # feature values are type-checked too
    format: str = Field(min_length=1)


class ScoreRequest(BaseModel):
    """``POST /v1/score`` body."""

    context: dict[str, FeatureValue] = Field(default_factory=dict)  # shared request features (user, device, ...)
    candidates: list[Candidate] = Field(min_length=1)


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


def _error(status: int, detail: Any) -> Response:
    return Response(json.dumps({"detail": detail}), status_code=status, media_type="application/json")


def create_app(scorer: Scorer, max_body_bytes: int = 1_000_000, max_candidates: int = 1000) -> FastAPI:
    """Build the service around a model's scorer.

    Args:
        scorer: the artifact's ``Scorer`` (``CTRPipeline.load(artifact).scorer("onnx")``, or ``"torch"``).
        max_body_bytes: larger request bodies get 413 (checked on the Content-Length header, and while reading a
            body sent without one).
        max_candidates: more candidates in one request get 422.

    The scoring endpoint parses and validates the body with pydantic-core straight from bytes and computes on the
    event loop (no thread hop): scoring is CPU-bound and short, so one worker process serves requests in order and
    more throughput comes from more worker processes (``uvicorn --workers``), not threads.
    """
    layout, schema = scorer.layout, scorer.schema
    feature_names = {f.name for f in schema.features}
    known_formats = set(layout.formats)
    version = f"camoe-{__version__}+schema.{schema_fingerprint(scorer.encoder.state_dict())[:12]}"
    registry = CollectorRegistry()
    requests = Counter("camoe_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("camoe_request_latency_seconds", "request latency (s)", ["endpoint"], registry=registry,
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
    app = FastAPI(title="camoe scoring", version=__version__)

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
                if length.isdigit() and int(length) > max_body_bytes:
                    await _error(413, f"request body of {int(length)} bytes exceeds max_body_bytes={max_body_bytes}")(
                        scope, receive, send_status)
                else:
                    await self.inner(scope, receive, send_status)
            finally:
                path = scope["path"] if scope["path"] in routes else "other"  # bounded label set
                requests.labels(path, str(status)).inc()
                latency.labels(path).observe(time.perf_counter() - start)

    routes = {"/v1/score", "/healthz", "/v1/metadata", "/metrics", "/docs", "/openapi.json"}
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
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/score", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ScoreRequest.model_json_schema()}}}})
    async def score(request: Request) -> Response:
        chunks, size = [], 0
        async for chunk in request.stream():  # bounded read, also for bodies sent without Content-Length
            size += len(chunk)
            if size > max_body_bytes:
                return _error(413, f"request body exceeds max_body_bytes={max_body_bytes}")
            chunks.append(chunk)
        try:
            body = ScoreRequest.model_validate_json(b"".join(chunks))
        except ValidationError as err:
            return _error(422, [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                                for e in err.errors(include_url=False, include_input=False)])
        if len(body.candidates) > max_candidates:
            return _error(422, f"candidates: {len(body.candidates)} exceeds max_candidates={max_candidates}")
        unknown_ctx = sorted(set(body.context) - feature_names)
        if unknown_ctx:
            return _error(422, f"context: unknown features {unknown_ctx}; features: {sorted(feature_names)}")
        n = len(body.candidates)
        columns: dict[str, list[Any]] = {name: [body.context.get(name)] * n for name in feature_names}
        columns[schema.format] = [c.format for c in body.candidates]
        for i, cand in enumerate(body.candidates):
            if cand.format not in known_formats:
                return _error(
                    422, f"candidates[{i}].format: unknown ad format '{cand.format}'; known formats: {list(layout.formats)}"
                )
            for name, value in (cand.model_extra or {}).items():
                if name not in feature_names:
                    unknown = sorted(set(cand.model_extra or {}) - feature_names)
                    return _error(422, f"candidates[{i}]: unknown features {unknown}; features: {sorted(feature_names)}")
                columns[name][i] = value  # the candidate's own value overrides the context's
        try:  # {column: N values}: encoded by the training encoder without building a DataFrame
            result = scorer.score(columns, "request")
        except ValueError as err:
            return _error(422, str(err))
        scores = [{"format": c.format, "task": layout.format_to_task[c.format], "pctr": float(p)}
                  for c, p in zip(body.candidates, result.pctr)]
        oov = result.quality.to_dict(nonzero=True)["out_of_vocabulary"]
        body_out = json.dumps({"model_version": version, "scores": scores, "out_of_vocabulary": oov},
                              allow_nan=False)  # never invalid JSON
        return Response(body_out, media_type="application/json")

    return app
