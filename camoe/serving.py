"""HTTP scoring service (FastAPI): one listener's context plus a list of candidate ads of mixed formats.

    POST /v1/score     {"context": {feature: value, ...}, "candidates": [{"format": ..., feature: value, ...}, ...]}
                    -> {"model_version": ..., "scores": [{"format": ..., "task": ..., "pctr": ...}, ...]}
    GET  /healthz      liveness
    GET  /v1/metadata  schema, formats, tasks, version
    GET  /metrics      Prometheus: request count by endpoint and status, latency histogram

Each candidate row = context features overridden by the candidate's own; the columns are encoded by the
pipeline's ``FeatureEncoder`` (the code used in training, fed {column: values} instead of a DataFrame) and scored by their own task head, so a candidate's pCTR never
depends on the other candidates. Errors: a malformed body, a wrong type or an unknown format -> 422 naming the
field (unknown formats list the known ones); a body over ``max_body_bytes`` -> 413; too many candidates -> 422.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from camoe.artifact import schema_fingerprint
from camoe.pipeline import CTRPipeline

__all__ = ["ScoreRequest", "create_app"]

FeatureValue = str | int | float | bool | list[str] | None


class Candidate(BaseModel):
    """One candidate ad: its format plus ad-side features (any schema feature may be given here)."""

    model_config = ConfigDict(extra="allow")
    format: str = Field(min_length=1)


class ScoreRequest(BaseModel):
    context: dict[str, FeatureValue] = Field(default_factory=dict)  # shared request features (user, device, ...)
    candidates: list[Candidate] = Field(min_length=1)


def create_app(
    pipe: CTRPipeline, max_body_bytes: int = 1_000_000, max_candidates: int = 1000, scorer: Any | None = None
) -> FastAPI:
    """Build the service around a fitted pipeline.

    Args:
        pipe: fitted ``CTRPipeline`` (``CTRPipeline.load(artifact)``).
        max_body_bytes: larger request bodies get 413.
        max_candidates: more candidates in one request get 422.
        scorer: object with ``predict_proba(frame)`` (e.g. ``camoe.export.OnnxScorer``); default the eager pipeline.
    """
    if pipe.layout_ is None or pipe.encoder_ is None:
        raise RuntimeError("create_app needs a fitted pipeline")
    layout, schema = pipe.layout_, pipe.config.schema
    feature_names = {f.name for f in schema.features}
    known_formats = set(layout.formats)
    score_fn = (scorer or pipe).predict_proba
    from camoe import __version__

    version = f"camoe-{__version__}+schema.{schema_fingerprint(pipe.encoder_.state_dict())[:12]}"
    registry = CollectorRegistry()
    requests = Counter("camoe_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("camoe_request_latency_seconds", "request latency (s)", ["endpoint"], registry=registry,
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
    app = FastAPI(title="camoe scoring", version=__version__)

    @app.middleware("http")
    async def limit_and_measure(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            response: Response = JSONResponse(
                {"detail": f"request body of {length} bytes exceeds max_body_bytes={max_body_bytes}"}, status_code=413
            )
        else:
            body = await request.body()
            if len(body) > max_body_bytes:
                response = JSONResponse(
                    {"detail": f"request body exceeds max_body_bytes={max_body_bytes}"}, status_code=413
                )
            else:
                response = await call_next(request)
        requests.labels(request.url.path, str(response.status_code)).inc()
        latency.labels(request.url.path).observe(time.perf_counter() - start)
        return response

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

    @app.post("/v1/score")
    def score(body: ScoreRequest) -> dict[str, Any]:
        if len(body.candidates) > max_candidates:
            raise HTTPException(422, f"candidates: {len(body.candidates)} exceeds max_candidates={max_candidates}")
        unknown_ctx = sorted(set(body.context) - feature_names)
        if unknown_ctx:
            raise HTTPException(422, f"context: unknown features {unknown_ctx}; features: {sorted(feature_names)}")
        n = len(body.candidates)
        columns: dict[str, list[Any]] = {name: [body.context.get(name)] * n for name in feature_names}
        columns[schema.format] = [c.format for c in body.candidates]
        for i, cand in enumerate(body.candidates):
            if cand.format not in known_formats:
                raise HTTPException(
                    422, f"candidates[{i}].format: unknown ad format '{cand.format}'; known formats: {list(layout.formats)}"
                )
            for name, value in (cand.model_extra or {}).items():
                if name not in feature_names:
                    unknown = sorted(set(cand.model_extra or {}) - feature_names)
                    raise HTTPException(422, f"candidates[{i}]: unknown features {unknown}; features: {sorted(feature_names)}")
                columns[name][i] = value  # the candidate's own value overrides the context's
        frame = columns  # {column: N values}: encoded by the training encoder without building a DataFrame
        try:
            pctr = np.asarray(score_fn(frame, "request"), dtype=np.float64)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        return {
            "model_version": version,
            "scores": [
                {"format": c.format, "task": layout.format_to_task[c.format], "pctr": float(p)}
                for c, p in zip(body.candidates, pctr)
            ],
        }

    return app
