"""camoe: multi-format ad CTR prediction with CAMoE (Cross-modal Adaptive Mixture-of-Experts, KDD 2025).

Quick start (see the README for a runnable version)::

    import camoe
    cfg = camoe.load_config("my_log.yaml")
    pipe, metrics = camoe.train_and_evaluate(cfg)
    pctr = camoe.CTRPipeline.load(cfg.output_dir).predict_proba(frame)

The names below load on first use (PEP 562), so ``import camoe.cli`` and ``camoe --help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from camoe.version import __version__

_EXPORTS = {
    "CTRPipeline": "camoe.pipeline",
    "ConfigError": "camoe.config",
    "RunConfig": "camoe.config",
    "SyntheticConfig": "camoe.data.synthetic",
    "correct_downsampling": "camoe.scoring",
    "demo_config_path": "camoe.config",
    "generate_log": "camoe.data.synthetic",
    "load_config": "camoe.config",
    "load_splits": "camoe.run",
    "read_table": "camoe.data.readers",
    "split_frame": "camoe.data.split",
    "train_and_evaluate": "camoe.run",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'camoe' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
