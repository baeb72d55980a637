"""Scoring service contract: happy path, 422 cases, unknown format, 413, independence of candidates, metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import camoe
from camoe.serving import create_app

CONTEXT = {"user_id": "u1", "device": "ios", "interests": ["music", "news"], "dwell_sec": 12}
CANDIDATES = [
    {"format": "audio", "ad_id": "a1", "bid_price": 0.5},
    {"format": "video", "ad_id": "a3", "bid_price": 0.9},
    {"format": "display", "ad_id": "zzz_unseen", "bid_price": None},
]


@pytest.fixture
def client(make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame) -> TestClient:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1, "batch_size": 4})).fit(b04_rows)
    return TestClient(create_app(pipe, max_body_bytes=5_000, max_candidates=50))


def test_score_happy_path_matches_batch_scoring(client: TestClient, make_config: Callable[..., camoe.RunConfig]) -> None:
    response = client.post("/v1/score", json={"context": CONTEXT, "candidates": CANDIDATES})
    assert response.status_code == 200
    body = response.json()
    assert [s["task"] for s in body["scores"]] == ["audio", "video", "display"]
    pctr = np.array([s["pctr"] for s in body["scores"]])
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    assert body["model_version"].startswith("camoe-")
    # each candidate alone gives the same pCTR: a row's score does not depend on the other candidates
    for cand, expected in zip(CANDIDATES, pctr):
        alone = client.post("/v1/score", json={"context": CONTEXT, "candidates": [cand]}).json()["scores"][0]["pctr"]
        assert abs(alone - expected) < 1e-7


def test_validation_errors_are_422_naming_the_field(client: TestClient) -> None:
    r = client.post("/v1/score", json={"context": CONTEXT, "candidates": [{"format": "tv_spot"}]})
    assert r.status_code == 422 and "tv_spot" in r.text and "known formats" in r.text
    r = client.post("/v1/score", json={"context": CONTEXT, "candidates": []})
    assert r.status_code == 422 and "candidates" in r.text
    r = client.post("/v1/score", json={"context": {"nope": 1}, "candidates": CANDIDATES})
    assert r.status_code == 422 and "nope" in r.text
    r = client.post("/v1/score", json={"candidates": [{"ad_id": "a1"}]})
    assert r.status_code == 422 and "format" in r.text
    r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/v1/score", json={"context": CONTEXT, "candidates": [{"format": "audio", "bid_price": "cheap"}]})
    assert r.status_code == 422 and "bid_price" in r.text
    r = client.post("/v1/score", json={"candidates": [{"format": "audio"}] * 51})
    assert r.status_code == 422 and "max_candidates" in r.text


def test_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/v1/score", json={"context": {"user_id": "x" * 6000}, "candidates": CANDIDATES})
    assert r.status_code == 413


def test_health_metadata_and_prometheus(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    meta = client.get("/v1/metadata").json()
    assert meta["tasks"] == ["audio", "video", "display"] and "audio" in meta["formats"]
    client.post("/v1/score", json={"context": CONTEXT, "candidates": CANDIDATES})
    text = client.get("/metrics").text
    assert 'camoe_requests_total{endpoint="/v1/score",status="200"}' in text
    assert "camoe_request_latency_seconds_bucket" in text
