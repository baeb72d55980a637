"""Scoring service contract: happy path, 422 cases, unknown format, 413, independence of candidates, metrics."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

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
    assert body["missing"] == {"bid_price": 1} and body["scores"][2]["missing"] == ["bid_price"]
    assert "missing" not in body["scores"][0] and body["clipped"] == {}
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


@contextlib.contextmanager
def _server_process(folder: Path, port: int, *options: str,
                    env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, IO[bytes]]]:
    """Starts ``camoe serve FOLDER --port PORT OPTIONS`` in another process; yields it and the file its output goes to,
    then terminates it and waits. A file, not a pipe: a pipe nobody reads blocks the server once it fills, and was
    left open (ResourceWarning: unclosed file)."""
    with tempfile.TemporaryFile() as output, subprocess.Popen(
            [sys.executable, "-m", "camoe", "serve", str(folder), "--port", str(port), *options],
            stdout=output, stderr=subprocess.STDOUT, env=env) as server:
        try:
            yield server, output
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # ignored SIGTERM: kill it rather than hang in Popen's exit
                server.kill()
                raise


def _wait_healthy(port: int, server: subprocess.Popen, output: IO[bytes], timeout_s: float = 60.0) -> None:
    """``wait_until_healthy``, with the server's output in the error when it does not come up."""
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, timeout_s=timeout_s)
    except RuntimeError as error:
        output.seek(0)
        raise RuntimeError(f"{error}; its output:\n{output.read().decode(errors='replace')}") from None


@contextlib.contextmanager
def _serve(folder: Path, *options: str, env: dict[str, str] | None = None, timeout_s: float = 60.0) -> Iterator[int]:
    """``camoe serve FOLDER OPTIONS`` on a free port; yields the port once /healthz answers."""
    port = _free_port()
    with _server_process(folder, port, *options, env=env) as (server, output):
        _wait_healthy(port, server, output, timeout_s)
        yield port


def test_b28_served_scores_equal_batch_scores_from_file_in_another_process(tmp_path, config_dict, b04_rows) -> None:
    """A `camoe serve` process (other PYTHONHASHSEED, hashed user_id, JSON values) scores each row exactly as batch
    scoring of the same rows read from CSV (typed pandas columns): one encoder, no training/serving skew (B28)."""
    import json
    import os
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
    with _serve(folder, "--backend", "torch", env={**os.environ, "PYTHONHASHSEED": "7"}) as port:
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
                   b'{"candidates": [{"format": "audio", "bid_price": 1e400}]}',  # JSON parses it as inf: refused
                   b'{"candidates": [{"format": "audio", "device": ["ios", "web"]}]}']  # a list for a scalar
    for body in bad_bodies:
        r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
    assert "bid_price" in client.post("/v1/score", content=bad_bodies[-2]).text
    r = client.post("/v1/score", json={"candidates": [{"format": "audio", "bid_price": 1e36}]})  # finite, far out
    assert r.status_code == 200 and r.json()["clipped"] == {"bid_price": 1}  # clipped to the training range
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


# ----------------------------------------------------------------------------- input quality
def test_missing_features_are_reported_per_candidate_and_can_be_required(make_config, b04_rows) -> None:
    pipe = camoe.CTRPipeline(make_config(train={"epochs": 1, "batch_size": 4})).fit(b04_rows)
    client = TestClient(create_app(pipe.scorer()))
    body = client.post("/v1/score", json={"candidates": [{"format": "audio"}]}).json()  # only the format
    assert set(body["scores"][0]["missing"]) == {"user_id", "ad_id", "device", "interests", "bid_price", "dwell_sec"}
    strict = TestClient(create_app(pipe.scorer(), require_features=("device", "bid_price")))
    r = strict.post("/v1/score", json={"context": {"device": "ios"},
                                       "candidates": [{"format": "audio", "bid_price": 0.3}, {"format": "video"}]})
    assert r.status_code == 422 and "'bid_price' is missing in candidates [1]" in r.text
    assert strict.post("/v1/score", json={"context": {"device": "ios"},
                                          "candidates": [{"format": "audio", "bid_price": 0.3}]}).status_code == 200
    for spelled_missing in ("NA", "null", " ", "n/a"):  # missing as the encoder reads it, whatever the spelling
        r = strict.post("/v1/score", json={"context": {"device": "ios"},
                                           "candidates": [{"format": "audio", "bid_price": spelled_missing}]})
        assert r.status_code == 422 and "'bid_price' is missing in candidates [0]" in r.text, spelled_missing
    r = strict.post("/v1/score", json={"context": {"device": "  "}, "candidates": [{"format": "audio", "bid_price": 1}]})
    assert r.status_code == 422 and "'device' is missing" in r.text
    with pytest.raises(ValueError, match="not features of the model"):
        create_app(pipe.scorer(), require_features=("age",))


def test_json_nested_deeper_than_the_parser_allows_is_a_422_not_a_500(client: TestClient) -> None:
    deep = '{"context": {"device": ' + "[" * 1500 + "]" * 1500 + '}, "candidates": [{"format": "audio"}]}'
    r = client.post("/v1/score", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested too deeply" in r.text


def test_metrics_count_input_quality_per_feature_and_pctr_per_task(client: TestClient) -> None:
    client.post("/v1/score", json={"context": CONTEXT, "candidates": CANDIDATES})
    client.post("/v1/score", json={"candidates": [{"format": "audio", "bid_price": 1e36}]})
    text = client.get("/metrics").text
    assert 'camoe_input_values_total{feature="ad_id",kind="out_of_vocabulary"} 1.0' in text
    assert 'camoe_input_values_total{feature="bid_price",kind="missing"} 1.0' in text
    assert 'camoe_input_values_total{feature="bid_price",kind="clipped"} 1.0' in text
    assert 'camoe_pctr_count{task="audio"} 2.0' in text and 'camoe_pctr_count{task="video"} 1.0' in text


# ----------------------------------------------------------------------------- a real server: hostile clients
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A `camoe serve` process on a small artifact, with short timeouts."""
    from tests.conftest import B04_CSV, base_config_dict, parse_csv

    tmp = tmp_path_factory.mktemp("served")
    pipe = camoe.CTRPipeline(camoe.load_config(base_config_dict())).fit(parse_csv(B04_CSV))
    folder = pipe.save(tmp / "model")
    with _serve(folder, "--header-timeout", "1", "--body-timeout", "1", "--max-body-bytes", "2000",
                "--max-candidates", "100000") as port:
        yield {"port": port, "folder": folder}


def _raw(port: int, data: bytes, read: bool = True, timeout: float = 5.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if not read:
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _metrics(port: int) -> str:
    import urllib.request

    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_slow_headers_and_bodies_are_closed_after_the_timeout(served) -> None:
    import socket
    import time

    port = served["port"]
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        answer = sock.recv(1000)
    assert b"408" in answer and time.perf_counter() - t0 < 4
    head = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    t0 = time.perf_counter()
    answer = _raw(port, head + b'{"candidates": [', timeout=5)  # the body never finishes
    assert b"408" in answer and b"not received within 1 s" in answer and time.perf_counter() - t0 < 4


def test_healthz_answers_throughout_a_load_of_slow_connections(served) -> None:
    import socket
    import time
    import urllib.request

    port = served["port"]
    slow = []
    for _ in range(150):  # bounded count, each sending its headers byte by byte
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        slow.append(sock)
    try:
        deadline = time.perf_counter() + 2.5  # across the 1 s header timeout: the server closes them and stays up
        answered = 0
        while time.perf_counter() < deadline:
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
            answered += 1
            time.sleep(0.05)
        assert answered >= 20
        closed = sum(1 for sock in slow if sock.recv(100).startswith(b"HTTP/1.1 408"))
        assert closed == len(slow)
    finally:
        for sock in slow:
            sock.close()


def test_client_disconnecting_mid_body_is_counted_as_499_never_5xx(served) -> None:
    port = served["port"]
    head = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    for _ in range(3):
        _raw(port, head + b'{"candidates": [{"format": "au', read=False)  # then hangs up
    import time

    time.sleep(0.5)
    text = _metrics(port)
    assert 'camoe_requests_total{endpoint="/v1/score",status="499"} 3.0' in text
    assert 'status="500"' not in text


def test_over_limit_body_gets_its_413_before_the_connection_closes(served) -> None:
    port = served["port"]
    body = b'{"candidates": [' + b'{"format": "audio"},' * 400 + b'{"format": "audio"}]}'  # ~8 kB > 2000
    head = (b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    for _ in range(5):
        answer = _raw(port, head + body)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_healthz_answers_while_a_large_request_scores(tmp_path) -> None:
    """Scoring runs in a thread pool off the event loop: /healthz answers while 100k candidates score."""
    import json
    import threading
    import time
    import urllib.request

    from tests.conftest import B04_CSV, base_config_dict, parse_csv

    folder = camoe.CTRPipeline(camoe.load_config(base_config_dict())).fit(parse_csv(B04_CSV)).save(tmp_path / "m")
    with _serve(folder, "--max-body-bytes", "50000000", "--max-candidates", "200000", "--body-timeout", "60") as port:
        big = json.dumps({"context": {"device": "ios", "interests": ["music"]},
                          "candidates": [{"format": "audio", "bid_price": 0.5, "ad_id": f"a{i % 9}"}
                                         for i in range(100_000)]}).encode()
        done: dict[str, float] = {}

        def post() -> None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/score", data=big, method="POST",
                                             headers={"content-type": "application/json"})
            t0 = time.perf_counter()
            assert urllib.request.urlopen(request, timeout=120).status == 200
            done["seconds"] = time.perf_counter() - t0

        thread = threading.Thread(target=post)
        thread.start()
        latencies = []
        while thread.is_alive():
            t0 = time.perf_counter()
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
        thread.join()
        assert done["seconds"] > 0.5 and len(latencies) >= 5  # the probes ran while the request scored
        # scoring on the event loop would hold a probe for most of the request's time; a loaded machine (CI, other
        # jobs) stretches both, so the bound scales with the request's own time
        assert max(latencies) < max(0.5, done["seconds"] / 4), (done["seconds"], sorted(latencies)[-5:])


# ----------------------------------------------------------------------------- deployment
def _snapshot(folder) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _score_once(port: int) -> float:
    import json
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/score", method="POST",
                                     data=json.dumps({"candidates": [{"format": "audio"}]}).encode(),
                                     headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=30))["scores"][0]["pctr"]


def test_read_only_artifact_is_served_and_evaluated_without_writing_into_it(tmp_path, b04_rows) -> None:
    import os
    import stat

    from camoe.cli import main
    from tests.conftest import base_config_dict

    folder = camoe.CTRPipeline(camoe.load_config(base_config_dict())).fit(b04_rows).save(tmp_path / "model")
    assert (folder / "model.onnx").is_file()  # exported when the artifact was written
    b04_rows.to_csv(tmp_path / "rows.csv", index=False)
    before = _snapshot(folder)
    for path in [folder, *folder.iterdir()]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        with _serve(folder, env={**os.environ}) as port:
            assert 0 < _score_once(port) < 1
        assert main(["evaluate", str(folder), "--data", str(tmp_path / "rows.csv")]) == 0
        assert (tmp_path / "model_eval" / "rows" / "metrics.json").is_file()  # beside the artifact, not inside
    finally:
        for path in [folder, *folder.iterdir()]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert _snapshot(folder) == before  # nothing written, nothing added (also when run as root)


def test_concurrent_serve_starts_on_one_artifact_never_fail(tmp_path, b04_rows) -> None:
    from tests.conftest import base_config_dict

    folder = camoe.CTRPipeline(camoe.load_config(base_config_dict())).fit(b04_rows).save(tmp_path / "model")
    before = _snapshot(folder)
    for _ in range(3):
        ports = [_free_port(), _free_port()]
        with _server_process(folder, ports[0]) as first, _server_process(folder, ports[1]) as second:  # both start
            for port, (server, output) in zip(ports, (first, second)):
                _wait_healthy(port, server, output, timeout_s=90)
            assert _score_once(ports[0]) == _score_once(ports[1])
    assert _snapshot(folder) == before


def test_two_worker_processes_serve_and_report_merged_metrics(tmp_path, b04_rows) -> None:
    import re

    from tests.conftest import base_config_dict

    folder = camoe.CTRPipeline(camoe.load_config(base_config_dict())).fit(b04_rows).save(tmp_path / "model")
    with _serve(folder, "--workers", "2", timeout_s=90) as port:
        scores = {_score_once(port) for _ in range(20)}
        assert len(scores) == 1  # both workers score alike
        text = _metrics(port)
        served = sum(float(v) for v in re.findall(r'camoe_requests_total\{endpoint="/v1/score",status="200"\} (\S+)',
                                                   text))
        assert served == 20  # the counters of both workers, merged


def test_worker_processes_refuse_port_zero_and_a_port_already_taken() -> None:
    import socket

    from camoe.serving import run_workers

    with pytest.raises(ValueError, match="fixed --port"):
        run_workers("127.0.0.1", 0, 2, {})
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(ValueError, match="cannot listen on"):  # never joins another listener's port
            run_workers("127.0.0.1", taken.getsockname()[1], 2, {})
    finally:
        taken.close()
