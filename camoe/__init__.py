"""camoe: multi-format ad CTR prediction with CAMoE (Cross-modal Adaptive Mixture-of-Experts, KDD 2025).

Quick start (see the README for a runnable version)::

    import camoe
    cfg = camoe.load_config("my_log.yaml")
    pipe, metrics = camoe.train_and_evaluate(cfg)
    pctr = camoe.CTRPipeline.load(cfg.output_dir).predict_proba(frame)
"""

from __future__ import annotations

from camoe.config import ConfigError, RunConfig, demo_config_path, load_config
from camoe.data.readers import read_table
from camoe.data.split import split_frame
from camoe.data.synthetic import SyntheticConfig, generate_log
from camoe.pipeline import CTRPipeline
from camoe.scoring import correct_downsampling
from camoe.run import load_splits, train_and_evaluate
from camoe.version import __version__


__all__ = [
    "CTRPipeline",
    "ConfigError",
    "RunConfig",
    "SyntheticConfig",
    "__version__",
    "correct_downsampling",
    "demo_config_path",
    "generate_log",
    "load_config",
    "load_splits",
    "read_table",
    "split_frame",
    "train_and_evaluate",
]
