"""Worker for the data-parallel tests (tests/test_distributed.py), started by ``torch.distributed.run``.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py MODE OUT_DIR

MODE ``match``: train on the synthetic log with ``config()`` (rank r takes rows r::2 of each global batch); rank 0
writes test-split pCTRs and the loss history to OUT_DIR/result.json.
MODE ``b21``: case B21; the global batch is ordered (display, audio, display, video), so rank 0's share (rows 0::2)
holds the two display rows only and rank 1's the audio and video rows; 3 steps; every rank writes its final weights
to OUT_DIR/weights_<rank>.pt.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import camoe
from camoe.batch import Batch
from camoe.data.batches import RowEncoder
from camoe.data.encoders import FeatureEncoder
from camoe.grouping import build_task_layout
from camoe.model import build_model
from camoe.training.distributed import init_distributed
from camoe.training.trainer import Trainer

B20_CSV = """ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click
1700000000,u1,a1,display,ios,music,0.5,10,1
1700000001,u2,a2,display,ios,news,0.4,3,0
1700000002,u3,a3,audio,web,news,0.3,4,0
1700000003,u4,a4,video,web,sports,0.8,1,1
"""
B21_FEATURES = [
    {"name": "device", "type": "categorical"},
    {"name": "interests", "type": "multi_categorical"},
    {"name": "bid_price", "type": "numeric"},
    {"name": "dwell_sec", "type": "numeric"},
]
FORMATS = {"audio": {"modality": "audio"}, "video": {"modality": "video"}, "display": {"modality": "display"}}


def match_config() -> camoe.RunConfig:
    """Small demo model, no dropout, global batch 512, 2 epochs on 12k rows."""
    return camoe.load_config(camoe.demo_config_path(), {
        "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [16], "tower_hidden": [8], "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 512, "patience": 5, "num_threads": 1},
    })


def match_run(dist_ctx: Any = None) -> dict[str, Any]:
    cfg = match_config()
    frame = camoe.generate_log(camoe.SyntheticConfig(rows=12_000, seed=5))
    splits = camoe.split_frame(frame, cfg.data.split, cfg.schema.timestamp)
    pipe = camoe.CTRPipeline(cfg).fit(splits["train"], splits["valid"], dist_ctx=dist_ctx)
    assert pipe.train_result_ is not None
    return {
        "pctr": pipe.predict_proba(splits["test"]).tolist(),
        "history": [{k: v for k, v in h.items() if k.startswith("loss/") or k in ("total", "valid_score", "step")}
                    for h in pipe.train_result_.history],
    }


class ListStream:
    """Training data that yields the same global batches every epoch."""

    def __init__(self, batches: list[Batch], format_rows: np.ndarray, format_clicks: np.ndarray) -> None:
        self._batches, self.format_rows, self.format_clicks = batches, format_rows, format_clicks
        self.num_rows = int(format_rows.sum())

    def __len__(self) -> int:
        return self.num_rows

    def batches(self, generator: torch.Generator | None, skip: int = 0):  # noqa: ANN201
        yield from self._batches[skip:]


def b21_setup() -> tuple[Any, Any, Any, Any]:
    """Model, layout, config and the encoded B20 rows as one global batch (display, audio, display, video)."""
    cfg = camoe.load_config({
        "schema": {"features": B21_FEATURES}, "formats": FORMATS,
        "model": {"embedding_dim": 4, "num_experts": 3, "expert_hidden": [8], "tower_hidden": [4]},
        "train": {"batch_size": 4, "epochs": 3, "learning_rate": 0.01, "lr_schedule": "constant"},
    })
    frame = pd.read_csv(io.StringIO(B20_CSV))
    layout = build_task_layout(cfg.grouping, FORMATS)
    encoder = FeatureEncoder(cfg.schema).fit(frame)
    batch = RowEncoder(encoder, layout, cfg.schema)(frame.iloc[[0, 2, 1, 3]], "B20 rows").batch
    torch.manual_seed(0)
    model = build_model(cfg.model, encoder.input_spec_, len(layout.tasks))
    return model, layout, cfg, batch


def b21_stats(layout: Any, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    k = len(layout.formats)
    fmt = batch.format_ids.numpy()
    return (np.bincount(fmt, minlength=k).astype(float),
            np.bincount(fmt, weights=batch.labels.numpy(), minlength=k))


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    ctx = init_distributed("gloo")
    if mode == "match":
        result = match_run(ctx)
        if ctx.is_main:
            (out / "result.json").write_text(json.dumps(result))
    elif mode == "b21":
        model, layout, cfg, batch = b21_setup()
        rows, clicks = b21_stats(layout, batch)
        result = Trainer(model, layout.mask, layout.tasks, cfg.train, ctx=ctx).fit(ListStream([batch], rows, clicks))
        torch.save({"state": model.state_dict(), "steps": result.steps, "history": result.history},
                   out / f"weights_{ctx.rank}.pt")
    else:
        raise SystemExit(f"unknown mode {mode}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
