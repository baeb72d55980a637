"""Auction replay: run each model's auction on every logged request and measure what it would have done.

For every request of a long-format log (one row per candidate: ``request_id``, the candidate's features, ``format``,
the CPC ``bid``, ``shown``, ``click``, and where known ``propensity``, ``p_true`` and the logged ``price``):

1. every candidate is scored by each model through the one ``Scorer`` (many requests per call);
2. each model's auction picks its winner and CPC (``camoe.replay.auction``), the logged policy's winner is the
   shown candidate;
3. per-request terms (``camoe.replay.estimators.request_terms``) are summed per winning format, with Poisson
   bootstrap replicates drawn per chunk of requests (the same weights for every policy: paired);
4. metrics per format, per modality (or another format attribute) and over all requests -- requests won, clicks,
   CTR, spend, eCPC, revenue per 1,000 requests -- as truth (exact expected values where the log has ``p_true``)
   and IPS / SNIPS / DR estimates from the logged choice, propensity and click, each with a bootstrap CI, the
   effective sample size, and every model's lift over the baseline with its paired CI.

The log is read in record batches (``ParquetSource``) and regrouped so no request is cut between two chunks:
memory is bounded by ``batch_rows`` whatever the log's size.

What the input must satisfy (each violation is refused with the rows or request ids it concerns):
``request_id`` sorted (a request's rows adjacent and ids ascending), exactly one ``shown`` candidate per request,
``shown`` and ``click`` in {0, 1} and no click on a candidate that was not shown, a finite ``bid`` ≥ 0, ``p_true``
(when present) in [0, 1], and the shown candidate's ``propensity`` (when the column is present) in (0, 1]. A log
without ``propensity`` gives truth only; without ``propensity`` and ``p_true`` there is nothing to measure and it
is refused. A request whose candidates are all of formats a model does not score is unfilled for that model and
counted (``requests_without_known_format``).
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from camoe.data.readers import expand_paths, read_table
from camoe.data.sources import FrameSource, ParquetSource, RowSource, is_parquet
from camoe.replay.auction import PRICING, request_starts, run_auction
from camoe.replay.estimators import (
    ESTIMATORS,
    GroupSums,
    bootstrap_weights,
    percentile_ci,
    policy_metrics,
    request_terms,
)
from camoe.replay.models import ReplayModel, distinct_names

__all__ = ["LOGGED", "ReplayResult", "open_log", "replay"]

LOGGED = "logged"  # the name of the logging policy's row in every table
REQUIRED = ("request_id", "bid", "shown", "click")
_LIFT_METRICS = ("wins", "win_share") + tuple(f"{e}_{m}" for e in ESTIMATORS
                                              for m in ("clicks", "ctr", "spend", "ecpc", "revenue_per_1k"))


@dataclass
class ReplayResult:
    """Everything a replay measured.

    Attributes:
        log: the log's name.
        requests: R requests; candidates: N candidate rows.
        groups: H (level, name) pairs: ("format", f) ..., (group level, g) ..., ("total", "total") = every request.
        policies: the logged policy then the models, in order; baseline: the policy lifts are measured against.
        metrics: policy -> metric -> {"value", "lo", "hi"}: (H,) arrays (``policy_metrics`` names).
        lifts: model -> metric -> {"value", "lo", "hi"}: (H,) relative change over the baseline (paired
            bootstrap CI); neither the baseline nor (when the baseline is a model) the logged policy has one.
        diagnostics: policy -> counts (requests without a known format, candidates scored, support violations,
            seconds scoring).
        has_truth: the log has ``p_true``; has_propensity: it has ``propensity`` (estimates are defined).
        settings: reserve, pricing, bootstrap replicates, seed, CI level, ESS threshold, group level.
        seconds: wall time; candidates_per_s: candidate rows scored per second over all models (wall time).
        notes: warnings raised during the replay, as text.
    """

    log: str
    requests: int
    candidates: int
    groups: list[tuple[str, str]]
    policies: list[str]
    baseline: str
    metrics: dict[str, dict[str, dict[str, np.ndarray]]]
    lifts: dict[str, dict[str, dict[str, np.ndarray]]]
    diagnostics: dict[str, dict[str, Any]]
    has_truth: bool
    has_propensity: bool
    settings: dict[str, Any]
    seconds: float = 0.0
    candidates_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def group_index(self, name: str, level: str | None = None) -> int:
        """Index of a group by name (e.g. "audio", "video_takeover", "total")."""
        for i, (lv, g) in enumerate(self.groups):
            if g == name and (level is None or lv == level):
                return i
        raise KeyError(f"no group '{name}'; groups: {[g for _, g in self.groups]}")

    def value(self, policy: str, metric: str, group: str = "total") -> float:
        """Point value of one metric of one policy in one group."""
        return float(self.metrics[policy][metric]["value"][self.group_index(group)])

    def interval(self, policy: str, metric: str, group: str = "total", lift: bool = False) -> tuple[float, float, float]:
        """(value, lo, hi) of a metric (or of its lift over the baseline with ``lift``)."""
        table = self.lifts if lift else self.metrics
        entry, i = table[policy][metric], self.group_index(group)
        return float(entry["value"][i]), float(entry["lo"][i]), float(entry["hi"][i])

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``replay.json``): per policy, metric and group {value, lo, hi}; NaN -> null."""
        names = [g for _, g in self.groups]

        def table(entries: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
            return {metric: {g: {k: _num(v[k][i]) for k in ("value", "lo", "hi")} for i, g in enumerate(names)}
                    for metric, v in entries.items()}

        return {
            "log": self.log, "requests": self.requests, "candidates": self.candidates,
            "groups": [{"level": lv, "name": g} for lv, g in self.groups], "policies": self.policies,
            "baseline": self.baseline, "has_truth": self.has_truth, "has_propensity": self.has_propensity,
            "settings": self.settings, "seconds": self.seconds, "candidates_per_s": self.candidates_per_s,
            "diagnostics": self.diagnostics, "notes": self.notes,
            "metrics": {p: table(m) for p, m in self.metrics.items()},
            "lifts": {p: table(m) for p, m in self.lifts.items()},
        }


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def open_log(log: str | Path | pd.DataFrame | RowSource, batch_rows: int = 1 << 20) -> RowSource:
    """A row source over a replay log: a DataFrame, a Parquet file or folder (streamed), or a CSV file (in memory).

    Raises:
        FileNotFoundError: nothing at the path.
    """
    if isinstance(log, pd.DataFrame):
        return FrameSource(log, "log")
    if not isinstance(log, (str, Path)):
        return log
    files = expand_paths(log)
    if all(is_parquet(f) for f in files):
        return ParquetSource(log, read_batch_rows=batch_rows, name=str(log))
    return FrameSource(read_table(str(log)), str(log))


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of a then b; categorical columns keep a categorical dtype (categories united)."""
    if not len(a):
        return b
    parts = {}
    for col in a.columns:
        x, y = a[col], b[col]
        if isinstance(x.dtype, pd.CategoricalDtype) and isinstance(y.dtype, pd.CategoricalDtype):
            parts[col] = pd.Series(union_categoricals([x.array, y.array]) if x.dtype != y.dtype
                                   else pd.Categorical.from_codes(np.r_[x.cat.codes, y.cat.codes], dtype=x.dtype))
        else:
            parts[col] = pd.concat([x, y], ignore_index=True)
    return pd.DataFrame(parts)


def _request_chunks(source: RowSource, columns: list[str]) -> Any:
    """(first row number, frame) of whole requests: a request cut by a record batch waits for the next batch."""
    tail = pd.DataFrame()
    row = 0
    for chunk in source.chunks(columns):
        frame = _concat(tail, chunk.reset_index(drop=True))  # the tail holds the previous chunk's last request
        ids = frame["request_id"].to_numpy()
        missing = np.flatnonzero(pd.isna(ids))
        if len(missing):
            raise ValueError(f"{source.name}: column 'request_id' is empty in rows "
                             f"{', '.join(str(row + int(i) + 1) for i in missing[:5])}; every candidate needs its request")
        down = np.flatnonzero(ids[1:] < ids[:-1]) if len(ids) > 1 else np.zeros(0, dtype=np.int64)
        if len(down):
            bad = int(down[0]) + 1
            raise ValueError(f"{source.name}: column 'request_id' is not sorted: row {row + bad + 1} has request "
                             f"{ids[bad]} after request {ids[bad - 1]}; sort the log by request_id (a request's "
                             f"candidates adjacent)")
        cut = int(np.searchsorted(ids, ids[-1], side="left")) if len(ids) else 0  # the last request may continue
        if cut == 0:
            tail = frame
            continue
        yield row, frame.iloc[:cut].reset_index(drop=True)
        row += cut
        tail = frame.iloc[cut:].reset_index(drop=True)
    if len(tail):
        yield row, tail


def _codes(values: pd.Series, names: list[str]) -> np.ndarray:
    """(N,) index of each value in ``names`` (-1 for others), via the categories of a categorical column."""
    cat = values.astype(str) if not isinstance(values.dtype, pd.CategoricalDtype) else values
    cat = cat.astype("category") if not isinstance(cat.dtype, pd.CategoricalDtype) else cat
    lookup = pd.Index(names).get_indexer(pd.Index(cat.cat.categories.astype(str).str.strip()))  # (C,)
    codes = cat.cat.codes.to_numpy()
    return np.where(codes >= 0, np.r_[lookup, -1][codes], -1)


def _rows_text(rows: np.ndarray, ids: np.ndarray, first_row: int) -> str:
    """'rows 12, 40 (requests 3, 7)' for the first few (row numbers count from 1, the header not counted)."""
    shown = ", ".join(str(first_row + int(r) + 1) for r in rows[:5])
    reqs = ", ".join(str(v) for v in pd.unique(ids[rows[:5]]))
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"rows {shown}{more} (request_id {reqs})"


def _numbers(frame: pd.DataFrame, name: str, source: str) -> np.ndarray:
    try:
        return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise ValueError(f"{source}: column '{name}' holds non-numeric values") from None


@dataclass
class _Checked:
    """A chunk's validated logged data, per request (R,) unless noted."""

    starts: np.ndarray
    shown_row: np.ndarray
    click: np.ndarray
    propensity: np.ndarray | None
    p_true_rows: np.ndarray | None  # (N,)
    propensity_rows: np.ndarray | None  # (N,)
    price: np.ndarray
    bid: np.ndarray  # (N,)


def _check(frame: pd.DataFrame, first_row: int, source: str, has_prop: bool, has_truth: bool,
           has_price: bool) -> _Checked:
    ids = frame["request_id"].to_numpy()  # sorted (``_request_chunks``)
    starts = request_starts(ids)
    shown = _numbers(frame, "shown", source)
    click = _numbers(frame, "click", source)
    for name, values in (("shown", shown), ("click", click)):
        bad_rows = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
        if len(bad_rows):
            raise ValueError(f"{source}: column '{name}' must be 0 or 1; {_rows_text(bad_rows, ids, first_row)} hold "
                             f"{pd.unique(values[bad_rows[:5]]).tolist()}")
    per_request = np.add.reduceat(shown, starts) if len(starts) else np.zeros(0)
    bad_req = np.flatnonzero(per_request != 1)
    if len(bad_req):
        listing = ", ".join(f"{ids[starts[r]]} ({int(per_request[r])} shown)" for r in bad_req[:5])
        more = f" and {len(bad_req) - 5} more" if len(bad_req) > 5 else ""
        raise ValueError(f"{source}: every request needs exactly one shown candidate (column 'shown'); request_id "
                         f"{listing}{more}")
    stray = np.flatnonzero((click == 1) & (shown == 0))
    if len(stray):
        raise ValueError(f"{source}: a click on a candidate that was not shown: {_rows_text(stray, ids, first_row)}")
    shown_row = np.flatnonzero(shown == 1)
    bid = _numbers(frame, "bid", source)
    bad_bid = np.flatnonzero(~np.isfinite(bid) | (bid < 0))
    if len(bad_bid):
        raise ValueError(f"{source}: column 'bid' (CPC bid) must be a finite number >= 0; "
                         f"{_rows_text(bad_bid, ids, first_row)} hold {bid[bad_bid[:5]].tolist()}")
    prop = prop_rows = None
    if has_prop:
        prop_rows = _numbers(frame, "propensity", source)
        prop = prop_rows[shown_row]
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~((prop > 0) & (prop <= 1)))
        if len(bad):
            what = ", ".join("missing" if np.isnan(v) else f"{v:g}" for v in prop[bad[:5]])
            raise ValueError(f"{source}: the shown candidate's propensity must be in (0, 1]; "
                             f"{_rows_text(shown_row[bad], ids, first_row)} hold {what}")
        with np.errstate(invalid="ignore"):
            bad_other = np.flatnonzero((prop_rows < 0) | (prop_rows > 1))
        if len(bad_other):
            raise ValueError(f"{source}: propensity must be in [0, 1]; {_rows_text(bad_other, ids, first_row)} hold "
                             f"{prop_rows[bad_other[:5]].tolist()}")
    p_rows = None
    if has_truth:
        p_rows = _numbers(frame, "p_true", source)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~((p_rows >= 0) & (p_rows <= 1)))
        if len(bad):
            raise ValueError(f"{source}: column 'p_true' (true click probability) must be in [0, 1] on every row; "
                             f"{_rows_text(bad, ids, first_row)} hold {p_rows[bad[:5]].tolist()}")
    price = _numbers(frame, "price", source)[shown_row] if has_price else np.full(len(starts), np.nan)
    return _Checked(starts, shown_row, click[shown_row], prop, p_rows, prop_rows, price, bid)


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b − 1, NaN where b is 0 or either is not finite."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = a / np.where(b != 0, b, np.nan) - 1.0
    return np.where(np.isfinite(out), out, np.nan)


def _aggregate(formats: list[str], group_of: dict[str, str], level: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(H, K + 1) 0/1 matrix from the K formats (+ unfilled) to formats, groups and the total (every request), and
    the H (level, name) labels."""
    k = len(formats)
    values = sorted({group_of[f] for f in formats if f in group_of})
    rows = [np.eye(1, k + 1, i)[0] for i in range(k)]
    labels = [("format", f) for f in formats]
    for value in values:
        rows.append(np.array([1.0 if group_of.get(f) == value else 0.0 for f in formats] + [0.0]))
        labels.append((level, value))
    rows.append(np.ones(k + 1))
    labels.append(("total", "total"))
    return np.array(rows), labels


def replay(
    log: str | Path | pd.DataFrame | RowSource,
    models: Sequence[ReplayModel],
    *,
    reserve: float = 0.0,
    pricing: Literal["second", "first"] = "second",
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
    baseline: str | None = None,
    group_by: str = "modality",
    ess_min: float = 100.0,
    batch_rows: int = 1 << 20,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay a logged auction with every model; see the module docstring.

    Args:
        log: the log (long format) as a DataFrame, a row source, or a path (Parquet streamed; CSV in memory).
        models: the models to replay (``load_replay_model``), at least one.
        reserve: CPC reserve price (currency units per click).
        pricing: ``second`` or ``first`` price.
        bootstrap: B Poisson bootstrap replicates (0: no CIs).
        seed: seed of the bootstrap weights.
        level: CI level.
        baseline: the policy lifts are measured against (default: the first model, or the logged policy when only
            one model is given).
        group_by: the format attribute of the second grouping level (a log column, e.g. ``modality``; else taken
            from the models' format attributes; absent: formats and all only).
        ess_min: warn when a group's effective sample size is below this.
        batch_rows: rows per record batch read (memory bound: about ``workers`` + 1 chunks are held at once).
        workers: threads scoring chunks (2 overlaps one chunk's encoding with another's forward pass on two
            cores; 1 scores in the calling thread). Results do not depend on it.
        progress: called with (candidate rows done, candidate rows) after each chunk.

    Returns:
        ``ReplayResult``.

    Raises:
        ValueError: bad log rows (see the module docstring), no models, unknown baseline or pricing.
    """
    if not models:
        raise ValueError("give at least one model to replay")
    distinct_names(models)
    if pricing not in PRICING:
        raise ValueError(f"pricing must be one of {PRICING}, got '{pricing}'")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    t_start = time.perf_counter()
    source = open_log(log, batch_rows)
    name = source.name
    present = set(source.columns)
    missing = [c for c in (*REQUIRED, "format") if c not in present]
    if missing:
        raise ValueError(f"{name}: the replay log lacks column(s) {missing}; a log has one row per (request, "
                         f"candidate) with request_id, format, bid (CPC), shown, click, and propensity and/or p_true")
    has_prop, has_truth, has_price = "propensity" in present, "p_true" in present, "price" in present
    if not has_prop and not has_truth:
        raise ValueError(f"{name}: the log has neither 'propensity' (the logging policy's probability of showing each "
                         f"candidate, for IPS / SNIPS / DR estimates) nor 'p_true' (true click probabilities, for the "
                         f"truth); nothing can be measured")
    feature_cols = [c for m in models for c in m.columns]
    absent = sorted({c for c in feature_cols if c not in present})
    if absent:
        raise ValueError(f"{name}: the models read column(s) {absent}, which the log lacks")
    names = [LOGGED] + [m.name for m in models]
    if baseline is None:
        baseline = models[0].name if len(models) > 1 else LOGGED
    if baseline not in names:
        raise ValueError(f"baseline '{baseline}' is none of the policies {names}")

    # ---- formats in the log and their group (one pass over two columns)
    group_cols = ["format"] + ([group_by] if group_by in present and group_by != "format" else [])
    formats: list[str] = []
    group_of: dict[str, str] = {}
    total_rows = 0
    for chunk in source.chunks(group_cols):
        total_rows += len(chunk)
        pairs = chunk.drop_duplicates()
        for row in pairs.itertuples(index=False):
            f = str(row[0]).strip()
            if f not in group_of and f not in formats:
                formats.append(f)
            if len(row) > 1 and f not in group_of and pd.notna(row[1]):
                group_of[f] = str(row[1])
    formats.sort()
    if group_by not in present:
        for m in models:
            for f, attrs in m.format_attributes.items():
                if group_by in attrs and f not in group_of:
                    group_of[f] = str(attrs[group_by])
    aggregate, groups = _aggregate(formats, group_of, group_by)
    k = len(formats)
    known = {m.name: np.array([f in set(m.formats) for f in formats] + [False]) for m in models}

    sums = {p: GroupSums(k + 1, bootstrap) for p in names}
    diag: dict[str, dict[str, Any]] = {p: {} for p in names}
    for m in models:
        diag[m.name] = {"requests_without_known_format": 0, "candidates_scored": 0, "scoring_seconds": 0.0,
                        "winners_outside_logging_support": 0, "unknown_formats": sorted(set(formats) - set(m.formats))}
    read_cols = list(dict.fromkeys(["request_id", "format", "bid", "shown", "click"]
                                   + [c for c, ok in (("propensity", has_prop), ("p_true", has_truth),
                                                      ("price", has_price)) if ok] + feature_cols))
    requests = candidates = 0

    def score(m: ReplayModel, frame: pd.DataFrame, ok: np.ndarray) -> tuple[np.ndarray, float]:
        """(N,) pCTR (NaN where the model does not know the format) and the seconds it took."""
        t0 = time.perf_counter()
        pctr = np.full(len(frame), np.nan)
        if ok.all():
            pctr = np.asarray(m.score(frame, name), dtype=np.float64)
        elif ok.any():
            pctr[ok] = m.score(frame.loc[ok], name)
        return pctr, time.perf_counter() - t0

    def measure(chunk_no: int, frame: pd.DataFrame, chk: _Checked, fmt: np.ndarray, scored: list[Any]) -> None:
        """Auctions and sums of one chunk, in chunk order (the sums and bootstrap weights do not depend on timing)."""
        r = len(chk.starts)
        weights = bootstrap_weights(bootstrap, r, [seed, chunk_no]) if bootstrap else None
        ones = np.ones(r, dtype=bool)
        p_shown = chk.p_true_rows[chk.shown_row] if chk.p_true_rows is not None else None
        sums[LOGGED].add(fmt[chk.shown_row],
                         request_terms(ones, ones, np.ones(r), chk.click, chk.click, chk.price, p_shown), weights)
        prop = chk.propensity if chk.propensity is not None else np.full(r, np.nan)
        for m, job in zip(models, scored):
            pctr, seconds = job.result() if isinstance(job, Future) else job
            ok = known[m.name][fmt]  # (N,)
            d = diag[m.name]
            d["scoring_seconds"] += seconds
            d["candidates_scored"] += int(ok.sum())
            d["requests_without_known_format"] += int((np.add.reduceat(ok.astype(np.int64), chk.starts) == 0).sum())
            out = run_auction(chk.starts, chk.bid, pctr, reserve, pricing)
            filled = out.filled
            w = np.where(filled, out.winner, 0)
            if chk.propensity_rows is not None:
                d["winners_outside_logging_support"] += int((filled & (chk.propensity_rows[w] == 0)).sum())
            terms = request_terms(filled, filled & (w == chk.shown_row), prop, chk.click, pctr[w], out.price,
                                  chk.p_true_rows[w] if chk.p_true_rows is not None else None)
            sums[m.name].add(np.where(filled, fmt[w], k), terms, weights)

    def finish(done: tuple[int, pd.DataFrame, _Checked, np.ndarray, list[Any]], requests: int,
               candidates: int) -> tuple[int, int]:
        """Measure a scored chunk; returns the requests and candidates counted so far, after reporting progress."""
        measure(*done)
        requests, candidates = requests + len(done[2].starts), candidates + len(done[1])
        if progress is not None:
            progress(candidates, total_rows)
        return requests, candidates

    # scoring runs in ``workers`` threads (ONNX Runtime and most of the encoding release the GIL), so reading,
    # encoding and the forward pass of consecutive chunks overlap; everything else stays in chunk order
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    pending: deque[tuple[int, pd.DataFrame, _Checked, np.ndarray, list[Any]]] = deque()
    try:
        for chunk_no, (first_row, frame) in enumerate(_request_chunks(source, read_cols)):
            chk = _check(frame, first_row, name, has_prop, has_truth, has_price)
            fmt = _codes(frame["format"], formats)  # (N,)
            fmt = np.where(fmt >= 0, fmt, k)
            jobs: list[Any] = [pool.submit(score, m, frame, known[m.name][fmt]) if pool else
                               score(m, frame, known[m.name][fmt]) for m in models]
            pending.append((chunk_no, frame, chk, fmt, jobs))
            while len(pending) > max(workers - 1, 0):  # keep workers - 1 chunks scoring while this one is measured
                requests, candidates = finish(pending.popleft(), requests, candidates)
        while pending:
            requests, candidates = finish(pending.popleft(), requests, candidates)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if requests == 0:
        raise ValueError(f"{name}: the log has no rows")

    # ---- metrics, CIs and lifts
    metrics: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    boots: dict[str, dict[str, np.ndarray]] = {}
    for p in names:
        point = policy_metrics(sums[p].point[None], aggregate)
        boot = policy_metrics(sums[p].boot, aggregate) if bootstrap else {key: np.zeros((0, len(groups))) for key in point}
        boots[p] = boot
        metrics[p] = {}
        for key in point:
            lo, hi = percentile_ci(boot[key], level)
            metrics[p][key] = {"value": point[key][0], "lo": lo, "hi": hi}
    lifts: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for p in names:
        if p == baseline or (p == LOGGED and baseline != LOGGED):  # lifts of models; the logged policy is reported
            continue
        lifts[p] = {}
        for key in _LIFT_METRICS:
            value = _relative(metrics[p][key]["value"], metrics[baseline][key]["value"])
            reps = _relative(boots[p][key], boots[baseline][key])
            lo, hi = percentile_ci(reps, level)
            lifts[p][key] = {"value": value, "lo": lo, "hi": hi}

    notes: list[str] = []
    if not has_prop:
        notes.append(f"{name}: no 'propensity' column: IPS, SNIPS and DR estimates are undefined; truth only")
    for m in models:
        d = diag[m.name]
        if d["requests_without_known_format"]:
            notes.append(f"model '{m.name}': {d['requests_without_known_format']:,} requests have no candidate of a "
                         f"format it scores (unfilled for it); formats it does not know: {d['unknown_formats']}")
        if d["winners_outside_logging_support"]:
            notes.append(f"model '{m.name}': {d['winners_outside_logging_support']:,} of its winners had propensity 0 "
                         f"under the logging policy; IPS / SNIPS / DR cannot see them (biased estimates)")
        if has_prop:
            ess = metrics[m.name]["ess"]["value"]
            wins = metrics[m.name]["wins"]["value"]
            low = [f"{g} (ESS {e:,.0f})" for (_, g), e, n in zip(groups, ess, wins) if n > 0 and e < ess_min]
            if low:
                notes.append(f"model '{m.name}': effective sample size below {ess_min:g} in {', '.join(low)}: the "
                             f"IPS / SNIPS / DR estimates there cannot be trusted")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    seconds = time.perf_counter() - t_start
    scored = sum(diag[m.name]["candidates_scored"] for m in models)
    for m in models:
        d = diag[m.name]
        d["candidates_per_s_scoring"] = d["candidates_scored"] / d["scoring_seconds"] if d["scoring_seconds"] else None
    settings = {"reserve": reserve, "pricing": pricing, "bootstrap": bootstrap, "seed": seed, "level": level,
                "ess_min": ess_min, "group_by": group_by, "formats": formats,
                "format_groups": {f: group_of.get(f) for f in formats}}
    return ReplayResult(name, requests, candidates, groups, names, baseline, metrics, lifts, diag, has_truth, has_prop,
                        settings, seconds, scored / seconds if seconds else 0.0, notes)
