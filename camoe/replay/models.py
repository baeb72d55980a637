"""The models a replay compares: a name, the ad formats it scores, and pCTR of candidate rows through the one
``Scorer`` (``camoe.scoring``).

``load_replay_model`` accepts

* an artifact folder (``camoe train`` / ``camoe calibrate``): its scorer scores the formats of its task layout;
* a folder of artifacts named after ad formats (one single-task model per format, as ``camoe experiment`` writes
  under ``models/<format>/``): each candidate is scored by the artifact named after its format. (Such an artifact's
  task layout usually lists every format of its config, since a single-task model can score any of them; the
  folder name says which one it was trained for.)

A candidate of a format no artifact knows is not scored: it cannot take part in that model's auction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from camoe.artifact import MANIFEST
from camoe.pipeline import CTRPipeline
from camoe.scoring import Scorer

__all__ = ["ArtifactModel", "ReplayModel", "distinct_names", "load_replay_model"]


class ReplayModel(Protocol):
    """What replay needs from a model."""

    name: str

    @property
    def formats(self) -> tuple[str, ...]:
        """Ad formats the model scores."""
        ...

    @property
    def columns(self) -> list[str]:
        """Columns its scoring reads."""
        ...

    @property
    def format_attributes(self) -> dict[str, dict[str, str]]:
        """Format -> attributes (modality, content, slot) as the model's config declares them."""
        ...

    def score(self, rows: pd.DataFrame, source: str) -> np.ndarray:
        """(N,) float64 pCTR of N rows whose formats are all in ``formats``."""
        ...


@dataclass
class ArtifactModel:
    """One or several camoe artifacts scored through their ``Scorer``.

    Attributes:
        name: the name shown in tables.
        scorers: one scorer per artifact.
        paths: the artifact folders.
        owned: the formats each scorer scores (default: every format of its task layout).
        calibrated: whether post-hoc calibration is applied (when an artifact has one).
        has_calibration: whether any artifact holds a calibration map.
        attributes: format -> attributes (modality, content, slot) from the artifacts' task layouts.
        config: the first artifact's run config.
    """

    name: str
    scorers: list[Scorer]
    paths: list[Path]
    calibrated: bool = True
    has_calibration: bool = False
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    config: Any = None  # the first artifact's RunConfig (its data split selects Open Bandit test rows)
    owned: list[tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        owner: dict[str, int] = {}
        owned = self.owned or [tuple(s.layout.formats) for s in self.scorers]
        for i, formats in enumerate(owned):
            for fmt in formats:
                if fmt in owner:
                    raise ValueError(f"model '{self.name}': format '{fmt}' is scored by both {self.paths[owner[fmt]]} "
                                     f"and {self.paths[i]}; give one artifact per format")
                owner[fmt] = i
        self._owner = owner

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self._owner)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for scorer in self.scorers:
            cols += scorer.rows.columns(labels=False)
        return list(dict.fromkeys(cols))

    @property
    def format_attributes(self) -> dict[str, dict[str, str]]:
        return dict(self.attributes)

    def score(self, rows: pd.DataFrame, source: str) -> np.ndarray:
        """(N,) pCTR; each row by the artifact that knows its format (``Scorer.score``, calibrated when set)."""
        if len(self.scorers) == 1:
            return self.scorers[0].score(rows, source).pctr
        fmt_col = self.scorers[0].schema.format
        owner = pd.Series(rows[fmt_col]).astype(str).map(self._owner).to_numpy()
        pctr = np.full(len(rows), np.nan)
        for i, scorer in enumerate(self.scorers):
            sel = owner == i
            if sel.any():
                pctr[sel] = scorer.score(rows.loc[sel], f"{source} ({self.paths[i]})").pctr
        return pctr


def _artifact_folders(path: Path) -> list[Path]:
    if (path / MANIFEST).is_file():
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST).is_file()) if path.is_dir() else []
    if not subs:
        raise FileNotFoundError(f"--model {path}: not an artifact folder (no {MANIFEST}) and holds no artifact "
                                f"folders")
    return subs


def load_replay_model(
    path: str | Path, name: str | None = None, backend: str = "onnx", calibrated: bool = True,
    threads: int | None = None,
) -> ArtifactModel:
    """Load an artifact (or a folder of per-format artifacts) as a replay model.

    Args:
        path: artifact folder, or a folder whose sub-folders are artifacts.
        name: display name (default: the folder name, plus " (uncalibrated)" when ``calibrated`` is False and an
            artifact holds a calibration).
        backend: ``onnx`` (ONNX Runtime, the fast path) or ``torch``.
        calibrated: apply the artifacts' post-hoc calibration (``camoe calibrate``) when they hold one.
        threads: intra-op threads per scoring call (None: the backend's default).

    Raises:
        FileNotFoundError: no artifact at ``path``.
        ArtifactError: an artifact is damaged.
        ValueError: a folder of artifacts whose sub-folder is not named after one of its model's formats.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"--model {root}: no such folder")
    folders = _artifact_folders(root)
    pipes = [CTRPipeline.load(f) for f in folders]
    owned = None
    if folders != [root]:  # one artifact per format, named after it
        owned = []
        for folder, pipe in zip(folders, pipes):
            if folder.name not in pipe.layout_.formats:  # type: ignore[union-attr]
                raise ValueError(f"--model {root}: a folder of artifacts holds one artifact per ad format, named after "
                                 f"the format (as camoe experiment writes models/<format>/); '{folder.name}' is none "
                                 f"of its model's formats {list(pipe.layout_.formats)}")  # type: ignore[union-attr]
            owned.append((folder.name,))
    has_cal = any(p.calibration_ is not None for p in pipes)
    label = name or root.name
    if not calibrated and has_cal and name is None:
        label = f"{label} (uncalibrated)"
    attributes: dict[str, dict[str, Any]] = {}
    for pipe in pipes:
        attributes.update({f: dict(a) for f, a in (pipe.format_attributes_ or {}).items()})
    scorers = [p.scorer(backend, threads=threads, calibrated=calibrated) for p in pipes]
    return ArtifactModel(label, scorers, folders, calibrated and has_cal, has_cal, attributes, pipes[0].config,
                         owned)


def distinct_names(models: Sequence[ReplayModel]) -> None:
    """Refuse two models with one name (tables and lifts are keyed by name)."""
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two models are named {dupes}; name them with --model NAME=PATH")
