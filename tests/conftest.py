"""Tiny seeded fixtures shared by the camoe test suite.

The column set is the one of ``shared/cases/CASES.md``:
``ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click``.

CASES.md refers to "the B04 rows" (cases B05, B07, B08, B09, B26, B28, B30) without listing them, so
``B04_CSV`` below defines them for this suite: 8 rows, formats audio / video / display, device ``ios`` only
(B09 relies on ``android``/``smart_tv`` being unseen), and both click values inside every format so every
per-task AUC is defined.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import camoe
from camoe.config import deep_merge
from camoe.config import RunConfig

COLUMNS = "ts,user_id,ad_id,format,device,interests,bid_price,dwell_sec,click"

# The "B04 rows" (defined here; see the module docstring). 3 audio, 3 video, 2 display; ios only;
# each format has at least one click=1 and one click=0.
B04_CSV = f"""{COLUMNS}
1700000000,u1,a1,audio,ios,music,0.5,10,1
1700000001,u2,a2,audio,ios,news,0.4,3,0
1700000002,u3,a3,audio,ios,music|news,0.6,12,1
1700000003,u4,a4,video,ios,sports,0.9,20,1
1700000004,u5,a5,video,ios,sports|music,0.8,1,0
1700000005,u6,a6,video,ios,news,0.7,2,0
1700000006,u7,a7,display,ios,music,0.1,0,1
1700000007,u8,a8,display,ios,news,0.2,2,0
"""

FORMATS = {"audio": {"modality": "audio"}, "video": {"modality": "video"}, "display": {"modality": "display"}}

FEATURES = [
    {"name": "user_id", "type": "categorical"},
    {"name": "ad_id", "type": "categorical"},
    {"name": "device", "type": "categorical"},
    {"name": "interests", "type": "multi_categorical", "separator": "|"},
    {"name": "bid_price", "type": "numeric"},
    {"name": "dwell_sec", "type": "numeric"},
]

# A tiny model: D = 4, 3 experts, one hidden layer per expert and tower.
TINY_MODEL = {
    "embedding_dim": 4,
    "num_experts": 3,
    "num_cross_layers": 2,
    "expert_hidden": [8],
    "tower_hidden": [4],
}


def base_config_dict() -> dict[str, Any]:
    """Plain config dict for the CASES.md columns (what a user would write in YAML)."""
    return {
        "schema": {
            "label": "click",
            "format": "format",
            "timestamp": "ts",
            "features": copy.deepcopy(FEATURES),
        },
        "formats": copy.deepcopy(FORMATS),
        "grouping": {"strategy": "modality"},
        "model": dict(TINY_MODEL),
        "train": {"batch_size": 4, "epochs": 2, "learning_rate": 0.01, "seed": 0, "shuffle": True},
        "data": {"split": {"method": "temporal", "valid_fraction": 0.0, "test_fraction": 0.0}},
    }


@pytest.fixture
def config_dict() -> Callable[..., dict[str, Any]]:
    """Factory: ``config_dict(**sections)`` -> the base dict with nested sections merged in."""

    def make(**updates: Any) -> dict[str, Any]:
        return deep_merge(base_config_dict(), updates)

    return make


@pytest.fixture
def make_config() -> Callable[..., RunConfig]:
    """Factory: ``make_config(train={"epochs": 1}, ...)`` -> validated ``RunConfig`` via ``camoe.load_config``."""

    def make(**updates: Any) -> RunConfig:
        return camoe.load_config(deep_merge(base_config_dict(), updates))

    return make


def parse_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text.strip() + "\n"))


@pytest.fixture
def rows() -> Callable[[str], pd.DataFrame]:
    """Factory: CSV text (header included) -> DataFrame, read the way ``pandas.read_csv`` reads a file."""
    return parse_csv


@pytest.fixture
def b04_rows() -> pd.DataFrame:
    """The 8 B04 rows (see module docstring)."""
    return parse_csv(B04_CSV)


@pytest.fixture
def seeded() -> None:
    """Seed torch and numpy global generators for blocks built directly in a test."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def synthetic_log() -> pd.DataFrame:
    """20,000-row synthetic log (seed 0); shared by the session, tests must not modify it."""
    return camoe.generate_log(camoe.SyntheticConfig(rows=20_000, seed=0))
