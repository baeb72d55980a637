"""Scoring service contract: happy path, 422 cases, unknown format, 413, independence of candidates, metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import camoe
from camoe.serving import create_app, wait_until_healthy

CONTEXT = {"user_id": "u1", "device": "ios", "interests": ["music", "news"], "dwell_sec": 12}
CANDIDATES = [
    {"format": "audio", "ad_id": "a1", "bid_price": 0.5},
    {"format": "video", "ad_id": "a3", "bid_price": 0.9},
    {"format": "display", "ad_id": "zzz_unseen", "bid_price": None},
]


@pytest.fixture
def client(make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame) -> TestClient:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1, "batch_size": 4})).fit(b04_rows)
    return TestClient(create_app(pipe.scorer(), max_body_bytes=5_000, max_candidates=50))


def test_score_happy_path_matches_batch_scoring(client: TestClient, make_config: Callable[..., camoe.RunConfig]) -> None:
    response = client.post("/v1/score", json={"context": CONTEXT, "candidates": CANDIDATES})
    assert response.status_code == 200
    body = response.json()
    assert [s["task"] for s in body["scores"]] == ["audio", "video", "display"]
    pctr = np.array([s["pctr"] for s in body["scores"]])
    assert np.isfinite(pctr).all() and ((pctr > 0) & (pctr < 1)).all()
    assert body["model_version"].startswith("camoe-")
    assert body["out_of_vocabulary"] == {"ad_id": 1}  # "zzz_unseen"; user "u1" and the other ads were seen
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_b28_served_scores_equal_batch_scores_from_file_in_another_process(tmp_path, config_dict, b04_rows) -> None:
    """A `camoe serve` process (other PYTHONHASHSEED, hashed user_id, JSON values) scores each row exactly as batch
    scoring of the same rows read from CSV (typed pandas columns): one encoder, no training/serving skew (B28)."""
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    cfg = config_dict()
    cfg["schema"]["features"][0] = {"name": "user_id", "type": "categorical", "encoding": "hash", "hash_buckets": 4}
    pipe = camoe.CTRPipeline(camoe.load_config(cfg)).fit(b04_rows)
    folder = pipe.save(tmp_path / "model")
    scoring = b04_rows.copy()
    scoring.loc[1, "device"] = "smart_tv"  # OOV (B09)
    scoring.loc[2, "interests"] = ""  # empty multi-valued (B15)
    scoring.loc[3, "bid_price"] = np.nan  # missing numeric
    scoring.to_csv(tmp_path / "rows.csv", index=False)
    expected = pipe.predict_proba(camoe.read_table(tmp_path / "rows.csv"))
    port = _free_port()
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    server = subprocess.Popen([sys.executable, "-m", "camoe", "serve", str(folder), "--port", str(port),
                               "--backend", "torch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, timeout_s=60)
        candidates = []
        for _, row in scoring.iterrows():
            interests = [] if row["interests"] == "" or pd.isna(row["interests"]) else str(row["interests"]).split("|")
            bid = None if pd.isna(row["bid_price"]) else float(row["bid_price"])
            candidates.append({"format": row["format"], "user_id": row["user_id"], "ad_id": row["ad_id"],
                               "device": row["device"], "interests": interests, "bid_price": bid,
                               "dwell_sec": int(row["dwell_sec"])})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/score", method="POST",
                                         data=json.dumps({"candidates": candidates}).encode(),
                                         headers={"content-type": "application/json"})
        served = np.array([s["pctr"] for s in json.load(urllib.request.urlopen(request, timeout=30))["scores"]])
    finally:
        server.terminate()
        server.wait(timeout=30)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)


def test_abuse_gets_4xx_never_5xx(make_config: Callable[..., camoe.RunConfig], b04_rows: pd.DataFrame) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1, "batch_size": 4})).fit(b04_rows)
    client = TestClient(create_app(pipe.scorer()), raise_server_exceptions=False)  # default limits: 1 MB, 1000 candidates
    r = client.post("/v1/score", json={"candidates": [{"format": "audio"}] * 10_000})
    assert r.status_code == 422 and "max_candidates=1000" in r.text
    r = client.post("/v1/score", json={"candidates": [{"format": "audio", "ad_id": "x" * 100}] * 10_000})
    assert r.status_code == 413
    bad_bodies = [b"", b"null", b"[]", b'{"candidates": "audio"}', b'{"candidates": [{"format": 3}]}',
                  b'{"candidates": [{"format": "audio", "bid_price": {"a": 1}}]}', b"\xff\xfe", b'{"candidates": [',
                  b'{"context": [], "candidates": [{"format": "audio"}]}']
    bad_bodies += [b'{"candidates": [{"format": "audio", "bid_price": 1' + b"0" * 400 + b"}]}",  # int > float64
                   b'{"candidates": [{"format": "audio", "bid_price": 1e36}]}',  # overflows the network: no NaN
                   b'{"candidates": [{"format": "audio", "device": ["ios", "web"]}]}']  # a list for a scalar
    for body in bad_bodies:
        r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
    assert "bid_price" in client.post("/v1/score", content=bad_bodies[-2]).text
    for i in range(5):  # unknown paths share one metrics label: the series count stays bounded
        client.get(f"/random-{i}")
    assert 'endpoint="other"' in client.get("/metrics").text and "random-3" not in client.get("/metrics").text
    # a body streamed without Content-Length is still bounded
    def chunks():  # noqa: ANN202
        yield b'{"candidates": ['
        for _ in range(60_000):  # 1.2 MB
            yield b'{"format": "audio"},'
        yield b'{"format": "audio"}]}'
    r = client.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
