"""Training throughput: camoe vs DeepCTR-Torch vs torch-rechub on one generated table, interleaved in one run.

Reference network (the same in all three): 26 categorical fields × embedding dim 16 + 13 numeric features
(x0 width 429), MMoE with 8 MLP experts (256, 128), a linear softmax gate per task, towers (64) -> 1 logit,
2 tasks, Adam(W) lr 1e-3 without weight decay, batch 4096, 200k rows (80% train, 20% test). Also reported: CAMoE
with DCN-v2 experts (2 full-rank cross layers, then the same MLP), which the peers do not have.

Each row belongs to one of two ad formats (one task each). camoe trains each head on its own format's rows (loss
masking); the peers have no masking, so each head trains on every row with the row's click as label (as their
MMoE examples do). Every implementation is scored the same way: AUC-PR (average precision, scikit-learn) of the
head of each format on that format's test rows, mean over the two tasks.

Peers run in their own virtualenv (never camoe dependencies); create it once with

    .venv/bin/python benchmarks/throughput.py --setup-peers      # benchmarks/.venv-peers: torch==2.13.0 CPU,
                                                                  # deepctr-torch, torch-rechub
    .venv/bin/python benchmarks/throughput.py                     # the benchmark (about 10 min on 2 cores)

Every implementation runs in a fresh subprocess with the same torch thread count; the order is interleaved
(round 1: camoe, deepctr, rechub, camoe-dcn; round 2: the same) so background load hits all of them alike, and
the table reports the median over rounds. rows/s is training rows over the wall time of the training loop only
(camoe: ``Trainer.fit``; DeepCTR-Torch: ``model.fit``; torch-rechub: ``MTLTrainer.train_one_epoch``), each with its
own documented input path. Model FLOP utilisation (MFU) = rows/s × training FLOPs per row (forward + backward,
counted by ``torch.utils.flop_counter.FlopCounterMode`` on one batch) / the fp32 matmul peak measured in this run
(4096 × 4096 matmuls on the same threads, best of several tries).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".venv-peers"
PEER_PACKAGES = ["torch==2.13.0", "deepctr-torch==0.3.0", "torch-rechub==0.9.0", "requests", "pandas", "pyarrow", "scikit-learn"]

NUM_CAT, NUM_DENSE, EMB_DIM = 26, 13, 16
EXPERTS, EXPERT_HIDDEN, TOWER_HIDDEN = 8, [256, 128], [64]
FORMATS = ("fmt_a", "fmt_b")  # one task each
CARDINALITIES = [int(c) for c in np.geomspace(4, 100_000, NUM_CAT).round()]


# --------------------------------------------------------------------------- data
def generate_table(rows: int, seed: int) -> "pd.DataFrame":  # noqa: F821
    """Criteo-shaped table: c0..c25 pre-encoded ids (Zipf-like), n0..n12 standardised numbers, format, click."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    logit = np.zeros(rows)
    fmt = (rng.random(rows) < 0.35).astype(np.int64)  # 65% fmt_a, 35% fmt_b
    for j, card in enumerate(CARDINALITIES):
        ids = np.minimum(rng.zipf(1.3, rows) - 1, card - 1)
        cols[f"c{j}"] = ids.astype(np.int64)
        if j % 3 == 0:  # a third of the fields carry signal; some of it differs by format
            effect = rng.normal(0, 0.5, card)
            logit += effect[ids] * np.where(fmt == 1, 0.5 if j % 2 else 1.5, 1.0)
    dense = rng.normal(0, 1, (rows, NUM_DENSE)).astype(np.float32)
    w = rng.normal(0, 0.3, NUM_DENSE)
    logit += dense @ w + 0.4 * dense[:, 0] * dense[:, 1]
    for j in range(NUM_DENSE):
        cols[f"n{j}"] = dense[:, j]
    logit += np.where(fmt == 1, -1.8, -3.2)  # CTR about 6% / 20%
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    frame = pd.DataFrame(cols)
    frame["format"] = np.array(FORMATS, dtype=object)[fmt]
    frame["click"] = click
    frame["split"] = np.where(rng.random(rows) < 0.8, "train", "test")
    return frame


def _load(path: str) -> tuple["pd.DataFrame", "pd.DataFrame"]:  # noqa: F821
    import pandas as pd

    frame = pd.read_parquet(path)
    return frame[frame["split"] == "train"].reset_index(drop=True), frame[frame["split"] == "test"].reset_index(drop=True)


def _auc_pr(test: "pd.DataFrame", proba: np.ndarray) -> dict[str, float]:  # noqa: F821
    """Mean over tasks of the AUC-PR of each format's own head on that format's rows."""
    from sklearn.metrics import average_precision_score

    scores = {}
    for t, name in enumerate(FORMATS):
        rows = (test["format"] == name).to_numpy()
        scores[name] = float(average_precision_score(test["click"].to_numpy()[rows], proba[rows, t]))
    return {"auc_pr": float(np.mean(list(scores.values()))), **{f"auc_pr/{k}": v for k, v in scores.items()}}


def _flops_per_row(step, rows: int) -> float:
    """Training FLOPs (forward + backward) per row of one step, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops() / rows


# --------------------------------------------------------------------------- workers (one process each)
class Curve:
    """Test AUC-PR at evaluation points, against training wall time with the evaluations themselves excluded."""

    def __init__(self, test: "pd.DataFrame", score) -> None:  # noqa: F821
        self.test, self.score = test, score
        self.points: list[dict] = []
        self.eval_s = 0.0
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.t0, self.eval_s = time.perf_counter(), 0.0

    def train_s(self) -> float:
        return time.perf_counter() - self.t0 - self.eval_s

    def evaluate(self, rows: int, epoch: float) -> float:
        train_s = self.train_s()
        t0 = time.perf_counter()
        out = _auc_pr(self.test, self.score())
        self.points.append({"rows": rows, "epoch": epoch, "train_s": train_s, **out})
        self.eval_s += time.perf_counter() - t0
        return out["auc_pr"]

    def result(self, flops: float, train_rows: int) -> dict:
        last = self.points[-1]
        best = max(self.points, key=lambda p: p["auc_pr"])
        return {"rows": last["rows"], "loop_s": last["train_s"], "rows_per_s": last["rows"] / last["train_s"],
                "flops_per_row": flops, "train_rows": train_rows, "curve": self.points,
                "auc_pr": last["auc_pr"], "best_auc_pr": best["auc_pr"], "best_train_s": best["train_s"]}


def _chunks(rows: int, eval_rows: int) -> list[slice]:
    """Consecutive slices of one epoch's rows, one per evaluation point (the last may be shorter)."""
    step = eval_rows if eval_rows > 0 else rows
    return [slice(a, min(a + step, rows)) for a in range(0, rows, step)]


def worker_camoe(path: str, epochs: int, expert_type: str, seed: int, options: dict) -> dict:
    import torch

    import camoe
    from camoe.data.batches import BatchStream, RowEncoder
    from camoe.data.columns import FormatCounts
    from camoe.data.encoders import FeatureEncoder
    from camoe.data.sources import FrameSource
    from camoe.grouping import build_task_layout
    from camoe.model import build_model
    from camoe.scoring import Scorer
    from camoe.training import Trainer, masked_bce

    train, test = _load(path)
    features = [{"name": f"c{j}", "type": "categorical", "encoding": "identity", "num_ids": card}
                for j, card in enumerate(CARDINALITIES)]
    features += [{"name": f"n{j}", "type": "numeric", "transform": "none"} for j in range(NUM_DENSE)]
    eval_steps = options["eval_rows"] // 4096
    cfg = camoe.load_config({
        "schema": {"label": "click", "format": "format", "timestamp": None, "features": features},
        "formats": {f: {"modality": f} for f in FORMATS},
        "grouping": {"strategy": "per_format"},
        "model": {"name": "camoe", "expert_type": expert_type, "embedding_dim": EMB_DIM, "num_experts": EXPERTS,
                  "num_cross_layers": 2, "expert_hidden": EXPERT_HIDDEN, "tower_hidden": TOWER_HIDDEN,
                  **options.get("model", {})},
        "train": {"batch_size": 4096, "epochs": epochs, "learning_rate": 1e-3, "seed": seed,
                  "num_threads": options["threads"], "patience": 10**6, "eval_every_steps": eval_steps or None,
                  **options.get("train", {})},
    })
    torch.set_num_threads(options["threads"])
    t0 = time.perf_counter()
    layout = build_task_layout(cfg.grouping, {f: {} for f in FORMATS})
    encoder = FeatureEncoder(cfg.schema).fit(train, "train")
    rows = RowEncoder(encoder, layout, cfg.schema)
    counts = FormatCounts()
    counts.add(train["format"].to_numpy(), train["click"].to_numpy(np.float64))
    format_rows, format_clicks = counts.arrays(layout.formats)
    stream = BatchStream(FrameSource(train, "train"), lambda f: rows(f, "train").batch, 4096, rows.columns(),
                         format_rows=format_rows, format_clicks=format_clicks)
    # encoded once and kept, as for any in-memory source: the pass must run to its end for the stream to keep it
    (batch,) = list(stream.encoded_chunks())
    encode_s = time.perf_counter() - t0
    torch.manual_seed(seed)
    model = build_model(cfg.model, encoder.input_spec_, len(layout.tasks))
    mask = torch.as_tensor(layout.mask)

    def one_step() -> None:
        part = batch.select(slice(0, 4096))
        out = model(part.cat_ids, part.multi_ids, part.dense)
        masked_bce(out.logits, part.labels, mask[part.format_ids]).total.backward()

    model.experts.align = 1  # count the network's FLOPs, not those of the zero columns training pads x0 with
    flops = _flops_per_row(one_step, 4096)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    model = build_model(cfg.model, encoder.input_spec_, len(layout.tasks))
    scorer = Scorer.torch(model, encoder, layout, cfg.schema)
    curve = Curve(test, lambda: scorer.task_proba(test, "test"))

    def validate(net) -> tuple[float, dict]:
        return curve.evaluate(trainer.state.rows_seen, trainer.state.rows_seen / len(train)), {}

    trainer = Trainer(model, layout.mask, layout.tasks, cfg.train, validate=validate)
    curve.start()
    result = trainer.fit(stream)
    out = {**curve.result(flops, len(train)), "encode_s": encode_s, "trainer_rows_per_s": result.rows_per_s}
    if options.get("profile"):
        out["profile"] = profile_steps(cfg, encoder, layout, stream, flops * 4096)
    return out


GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_steps(cfg, encoder, layout, stream, step_flops: float, steps: int = 8) -> dict:
    """Where one training step's time goes: the share in matrix multiplications (GEMMs) and the FLOP rate of those
    GEMMs alone, which bounds the MFU any removal of the other work could reach on this network."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from camoe.model import build_model
    from camoe.training import Trainer

    torch.manual_seed(0)
    model = build_model(cfg.model, encoder.input_spec_, len(layout.tasks))
    trainer = Trainer(model, layout.mask, layout.tasks, cfg.train)
    trainer.build(stream)
    model.train()
    batches = stream.batches(torch.Generator().manual_seed(0))
    for _ in range(2):
        trainer.step(next(batches))  # warm-up
    todo = [next(batches) for _ in range(steps)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for batch in todo:
            trainer.step(batch)
        wall = time.perf_counter() - t0
    table = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    total_self = sum(table.values())
    gemm = sum(v for k, v in table.items() if k in GEMMS)
    top = sorted(((v / total_self, k) for k, v in table.items() if k not in GEMMS), reverse=True)[:6]
    return {"step_s": wall / steps, "gemm_share": gemm / total_self,
            "gemm_flops_per_s": step_flops * steps / (gemm * wall / total_self),
            "other_top": [(k, round(v, 4)) for v, k in top]}


def worker_deepctr(path: str, epochs: int, seed: int, options: dict) -> dict:
    import torch
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import MMOE

    torch.set_num_threads(options["threads"])
    train, test = _load(path)
    columns = [SparseFeat(f"c{j}", card, embedding_dim=EMB_DIM) for j, card in enumerate(CARDINALITIES)]
    columns += [DenseFeat(f"n{j}", 1) for j in range(NUM_DENSE)]
    names = [f"c{j}" for j in range(NUM_CAT)] + [f"n{j}" for j in range(NUM_DENSE)]
    torch.manual_seed(seed)
    model = MMOE(columns, num_experts=EXPERTS, expert_dnn_hidden_units=tuple(EXPERT_HIDDEN), gate_dnn_hidden_units=(),
                 tower_dnn_hidden_units=tuple(TOWER_HIDDEN), l2_reg_linear=0.0, l2_reg_embedding=0.0, seed=seed,
                 task_types=("binary", "binary"), task_names=FORMATS, device="cpu")
    model.compile("adam", loss=["binary_crossentropy", "binary_crossentropy"])
    x_train = {n: train[n].to_numpy() for n in names}
    y_train = np.stack([train["click"].to_numpy(np.float32)] * 2, axis=1)  # both heads learn every row

    def one_step() -> None:
        x = torch.from_numpy(np.stack([x_train[n][:4096].astype(np.float32) for n in names], axis=1))
        y = model(x)
        torch.nn.functional.binary_cross_entropy(y, torch.from_numpy(y_train[:4096])).backward()

    flops = _flops_per_row(one_step, 4096)
    model.zero_grad()
    x_test = {n: test[n].to_numpy() for n in names}
    curve = Curve(test, lambda: np.asarray(model.predict(x_test, batch_size=65536)))
    rng = np.random.default_rng(seed)
    done = 0
    curve.start()
    for epoch in range(epochs):
        order = rng.permutation(len(train))  # one shuffle per epoch, cut into the evaluation intervals
        for part in _chunks(len(train), options["eval_rows"]):
            idx = order[part]
            model.fit({n: v[idx] for n, v in x_train.items()}, y_train[idx], batch_size=4096, epochs=1, verbose=0,
                      shuffle=False)
            done += len(idx)
            curve.evaluate(done, done / len(train))
    return curve.result(flops, len(train))


def worker_rechub(path: str, epochs: int, seed: int, options: dict) -> dict:
    import torch
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.set_num_threads(options["threads"])
    train, test = _load(path)
    features = [SparseFeature(f"c{j}", vocab_size=card, embed_dim=EMB_DIM) for j, card in enumerate(CARDINALITIES)]
    features += [DenseFeature(f"n{j}") for j in range(NUM_DENSE)]
    names = [f.name for f in features]
    torch.manual_seed(seed)
    model = MMOE(features, task_types=["classification", "classification"], n_expert=EXPERTS,
                 expert_params={"dims": EXPERT_HIDDEN}, tower_params_list=[{"dims": TOWER_HIDDEN}] * 2)
    x_train = {n: train[n].to_numpy() for n in names}
    y_train = np.stack([train["click"].to_numpy()] * 2, axis=1)
    x_test = {n: test[n].to_numpy() for n in names}
    y_test = np.stack([test["click"].to_numpy()] * 2, axis=1)
    order = np.random.default_rng(seed).permutation(len(train))
    loaders = []  # one DataLoader per evaluation interval (torch-rechub's own input path), built before timing
    for part in _chunks(len(train), options["eval_rows"]):
        idx = order[part]
        loader, _, test_dl = DataGenerator({n: v[idx] for n, v in x_train.items()}, y_train[idx]).generate_dataloader(
            x_val=x_test, y_val=y_test, x_test=x_test, y_test=y_test, batch_size=4096)
        loaders.append(loader)

    def score() -> np.ndarray:
        model.eval()
        with torch.no_grad():
            proba = torch.cat([model(x) for x, _ in test_dl]).numpy()
        model.train()
        return proba

    with tempfile.TemporaryDirectory() as tmp:
        trainer = MTLTrainer(model, task_types=["classification", "classification"],
                             optimizer_params={"lr": 1e-3, "weight_decay": 0.0}, n_epoch=epochs, device="cpu",
                             model_path=tmp)

        def one_step() -> None:
            x = {n: torch.as_tensor(v[:4096]) for n, v in x_train.items()}
            y = model(x)
            torch.nn.functional.binary_cross_entropy(y, torch.as_tensor(y_train[:4096], dtype=torch.float32)).backward()

        flops = _flops_per_row(one_step, 4096)
        model.zero_grad()
        curve = Curve(test, score)
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - its tqdm bars would flood the log
        done = 0
        curve.start()
        for _ in range(epochs):
            for loader in loaders:  # each shuffles its rows every epoch
                trainer.train_one_epoch(loader)
                done += len(loader.dataset)
                curve.evaluate(done, done / len(train))
        sys.stderr = sys.__stderr__
    return curve.result(flops, len(train))


def matmul_peak_flops(threads: int, size: int = 4096, seconds: float = 3.0) -> float:
    """Best fp32 matmul FLOP/s over repeated size × size products on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best


# --------------------------------------------------------------------------- driver
IMPLEMENTATIONS = {
    "camoe": {"python": "camoe", "label": "camoe (MMoE, MLP experts)"},
    "deepctr": {"python": "peers", "label": "DeepCTR-Torch MMOE"},
    "rechub": {"python": "peers", "label": "torch-rechub MMOE"},
    "camoe-dcn": {"python": "camoe", "label": "camoe CAMoE (DCN experts)"},
}


def run_worker(impl: str, data: str, args: argparse.Namespace) -> dict:
    python = sys.executable if IMPLEMENTATIONS[impl]["python"] == "camoe" else str(PEER_VENV / "bin" / "python")
    options = {"threads": args.threads, "train": json.loads(args.camoe_train), "model": json.loads(args.camoe_model),
               "eval_rows": args.eval_rows, "profile": args.profile}
    cmd = [python, str(Path(__file__).resolve()), "--worker", impl, "--data", data, "--epochs", str(args.epochs),
           "--seed", str(args.seed), "--options", json.dumps(options)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_to_quality(impls: list[str], results: dict[str, list[dict]]) -> None:
    """Print each implementation's best test AUC-PR, training time to it, and time to first reach the best peer's
    best; camoe's time against that peer's is the headline. Medians over rounds."""

    def first_reach(curve: list[dict], target: float) -> float:
        return next((p["train_s"] for p in curve if p["auc_pr"] >= target), float("nan"))

    best = {i: statistics.median(o["best_auc_pr"] for o in results[i]) for i in impls}
    peers = [i for i in impls if IMPLEMENTATIONS[i]["python"] == "peers"]
    print("\nlearning curves (test AUC-PR at epochs; training seconds, evaluations excluded; round 1):")
    for impl in impls:
        points = "  ".join(f"{p['epoch']:.2f}:{p['auc_pr']:.3f}@{p['train_s']:.1f}s" for p in results[impl][0]["curve"])
        print(f"  {impl:10s} {points}")
    if not peers:
        return
    lead = max(peers, key=lambda i: best[i])
    target = best[lead]
    print(f"\nbest peer: {IMPLEMENTATIONS[lead]['label']}, best test AUC-PR {target:.4f}")
    print(f"{'implementation':30s} {'best AUC-PR':>11s} {'s to best':>10s} {'s to ' + format(target, '.4f'):>12s}")
    reach = {}
    for impl in impls:
        reach[impl] = statistics.median(first_reach(o["curve"], target) for o in results[impl])
        to_best = statistics.median(o["best_train_s"] for o in results[impl])
        print(f"{IMPLEMENTATIONS[impl]['label']:30s} {best[impl]:>11.4f} {to_best:>10.1f} {reach[impl]:>12.1f}")
    for impl in ("camoe", "camoe-dcn"):
        if impl in reach:
            print(f"{impl}: time to {lead}'s best / {lead}'s time = {reach[impl] / reach[lead]:.3f} "
                  f"(target <= 0.333); best {best[impl]:.4f} vs {best[lead]:.4f}")


def setup_peers() -> None:
    if not (PEER_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)
    print(f"peer virtualenv ready: {PEER_VENV}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=None, help="default 1; 4 with --time-to-quality")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the table shows medians")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every implementation")
    parser.add_argument("--only", nargs="*", choices=list(IMPLEMENTATIONS), help="subset of implementations")
    parser.add_argument("--camoe-train", default="{}", help="JSON overrides of camoe's train section")
    parser.add_argument("--camoe-model", default="{}", help="JSON overrides of camoe's model section")
    parser.add_argument("--time-to-quality", action="store_true",
                        help="evaluate test AUC-PR every --eval-rows training rows (default 4 epochs) and report "
                             "each implementation's best, the training time to it, and the time to the best "
                             "peer's best")
    parser.add_argument("--eval-rows", type=int, default=None,
                        help="training rows between evaluations (a multiple of the batch 4096); default: a quarter "
                             "epoch with --time-to-quality, else only at the end")
    parser.add_argument("--setup-peers", action="store_true", help="create benchmarks/.venv-peers and exit")
    parser.add_argument("--profile", action="store_true",
                        help="camoe: profile a few steps; print the share of step time in GEMMs and the MFU ceiling "
                             "(the GEMMs' own FLOP rate against the peak)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        options = json.loads(args.options)
        if args.worker == "camoe":
            out = worker_camoe(args.data, args.epochs, "mlp", args.seed, options)
        elif args.worker == "camoe-dcn":
            out = worker_camoe(args.data, args.epochs, "dcn", args.seed, options)
        elif args.worker == "deepctr":
            out = worker_deepctr(args.data, args.epochs, args.seed, options)
        else:
            out = worker_rechub(args.data, args.epochs, args.seed, options)
        print(json.dumps(out))
        return
    if args.setup_peers:
        setup_peers()
        return
    impls = args.only or list(IMPLEMENTATIONS)
    train_rows = int(args.rows * 0.8)
    args.epochs = args.epochs or (4 if args.time_to_quality else 1)
    if args.eval_rows is None:
        args.eval_rows = 4096 * math.ceil(math.ceil(train_rows / 4096) / 4) if args.time_to_quality else 0
    if args.eval_rows % 4096:
        sys.exit(f"--eval-rows must be a multiple of the batch size 4096, got {args.eval_rows}")
    if any(IMPLEMENTATIONS[i]["python"] == "peers" for i in impls) and not (PEER_VENV / "bin" / "python").exists():
        sys.exit(f"peer virtualenv {PEER_VENV} missing: run  {sys.executable} {__file__} --setup-peers")
    print(f"load average before: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}; torch threads: {args.threads}",
          flush=True)
    results: dict[str, list[dict]] = {i: [] for i in impls}
    peaks = [matmul_peak_flops(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "table.parquet")
        generate_table(args.rows, args.seed).to_parquet(data, index=False)
        for r in range(args.rounds):
            for impl in impls:
                out = run_worker(impl, data, args)
                results[impl].append(out)
                print(f"round {r + 1} {impl:10s} {out['rows_per_s']:>9,.0f} rows/s  AUC-PR {out['auc_pr']:.4f}  "
                      f"loop {out['loop_s']:.1f} s  best AUC-PR {out['best_auc_pr']:.4f} at {out['best_train_s']:.1f} s",
                      flush=True)
            peaks.append(matmul_peak_flops(args.threads))
    peak = max(peaks)
    print(f"\nfp32 matmul peak measured in this run: {peak / 1e9:,.1f} GFLOP/s ({args.threads} threads); "
          f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{args.rows:,} rows, {args.epochs} epoch(s), batch 4096, medians over {args.rounds} interleaved rounds\n")
    print(f"{'implementation':30s} {'rows/s':>10s} {'GFLOP/row':>10s} {'MFU':>7s} {'AUC-PR':>8s}")
    summary = {}
    for impl in impls:
        rps = statistics.median(o["rows_per_s"] for o in results[impl])
        auc = statistics.median(o["auc_pr"] for o in results[impl])
        flops = results[impl][0]["flops_per_row"]
        summary[impl] = {"rows_per_s": rps, "auc_pr": auc, "flops_per_row": flops, "mfu": rps * flops / peak}
        print(f"{IMPLEMENTATIONS[impl]['label']:30s} {rps:>10,.0f} {flops / 1e9:>10.4f} {rps * flops / peak:>7.1%} "
              f"{auc:>8.4f}")
    for impl in impls:
        prof = results[impl][0].get("profile")
        if prof:
            print(f"{impl}: {prof['gemm_share']:.1%} of step time in GEMMs; the GEMMs alone run at "
                  f"{prof['gemm_flops_per_s'] / peak:.1%} of the peak (the MFU ceiling if all other work were free); "
                  f"largest other: {prof['other_top']}")
    peers = [summary[p]["rows_per_s"] for p in ("deepctr", "rechub") if p in summary]
    if "camoe" in summary and peers:
        print(f"\ncamoe speedup over the faster peer: {summary['camoe']['rows_per_s'] / max(peers):.2f}x")
    if args.time_to_quality:
        time_to_quality(impls, results)
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_flops": peak, "summary": summary, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
