"""camoe: multi-format ad CTR prediction with CAMoE (Cross-modal Adaptive Mixture-of-Experts, KDD 2025).

Quick start (see the README for a runnable version)::

    import camoe
    cfg = camoe.load_config("my_log.yaml")
    pipe, metrics = camoe.train_and_evaluate(cfg)
    pctr = camoe.CTRPipeline.load(cfg.output_dir).predict_proba(frame)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"

from camoe.config import ConfigError, RunConfig, load_config  # noqa: E402
from camoe.data.readers import read_table  # noqa: E402
from camoe.data.split import split_frame  # noqa: E402
from camoe.data.synthetic import SyntheticConfig, generate_log  # noqa: E402
from camoe.pipeline import CTRPipeline, correct_downsampling  # noqa: E402
from camoe.run import load_splits, train_and_evaluate  # noqa: E402


def demo_config_path() -> Path:
    """Path of the packaged demo config (``camoe/configs/synthetic.yaml``)."""
    return Path(str(resources.files("camoe") / "configs" / "synthetic.yaml"))


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
