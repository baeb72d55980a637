"""Training checkpoints you can trust: checksummed files, and a fingerprint of the run they belong to.

File layout (written atomically by ``Checkpoint.save``)::

    8 bytes   magic  b"CAMOECK2"
    32 bytes  SHA-256 of the payload
    8 bytes   payload length (little-endian unsigned)
    payload   ``torch.save`` of plain values and tensors (read back with ``weights_only=True``: no code runs)

``Checkpoint.load`` refuses an empty, truncated, altered or foreign file with a ``CheckpointError`` that names the
file and what failed. The ``fingerprint`` (the run config and a summary of the training data) lets ``--resume``
refuse a checkpoint of another run: ``fingerprint_diff`` lists what changed, key by key.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from camoe.files import atomic_path

__all__ = ["MAGIC", "RESUME_SAFE_KEYS", "Checkpoint", "CheckpointError", "TrainState", "fingerprint_diff"]

MAGIC = b"CAMOECK2"
_HEADER = struct.Struct("<8s32sQ")

# config keys whose change keeps the restored state meaningful; ``--allow-change KEY`` accepts them on resume
RESUME_SAFE_KEYS = ("train.epochs", "train.patience", "train.max_steps", "train.eval_every_steps")
# keys that never change results (speed, logging, where files go): ignored by the comparison
# (train.refit_output_bias acts after the last step, so a checkpoint continues the same way with either value)
_NO_EFFECT_KEYS = ("output_dir", "train.num_threads", "train.reuse_freed_memory", "train.checkpoint_every_steps",
                   "train.refit_output_bias",
                   "train.finite_check_every_steps", "data.path", "data.valid_path", "data.test_path", "data.streaming.exact_metrics_max_rows")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: empty, truncated, altered, foreign, or from another run."""


@dataclass
class TrainState:
    """The loop's position and early-stopping state (all plain values, saved in checkpoints).

    Attributes:
        step: optimizer steps done.
        epoch: current epoch (1-based).
        next_batch: index of the next batch inside the epoch.
        rows_seen: training rows consumed (global).
        best_score / best_step: best mean validation AUC-PR so far and its step.
        bad_evals: evaluations since the best one.
        history: evaluation log.
        part_sums / part_counts: loss parts summed since the last evaluation.
    """

    step: int = 0
    epoch: int = 1
    next_batch: int = 0
    rows_seen: int = 0
    best_score: float = float("nan")
    best_step: int = 0
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    part_sums: dict[str, float] = field(default_factory=dict)
    part_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """Everything a restart needs: loop state, weights (current and best), optimizer, schedule, random states, and
    the fingerprint of the run.

    ``epoch_rng`` is the data-order generator's state at the start of ``state.epoch``, so the epoch's batches are
    drawn again identically and the first ``state.next_batch`` of them skipped.
    """

    state: TrainState
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    log_vars: torch.Tensor | None
    epoch_rng: torch.Tensor
    torch_rng: torch.Tensor
    fingerprint: dict[str, Any] = field(default_factory=dict)
    averaged_model: dict[str, Any] | None = None  # train.ema_decay: the weight average's state (AveragedModel)

    def save(self, path: str | Path) -> None:
        """Write atomically with a checksum (a kill leaves the previous checkpoint intact)."""
        payload = {"state": asdict(self.state), "model": self.model, "best_model": self.best_model,
                   "optimizer": self.optimizer, "scheduler": self.scheduler, "log_vars": self.log_vars,
                   "epoch_rng": self.epoch_rng, "torch_rng": self.torch_rng, "averaged_model": self.averaged_model,
                   "fingerprint": json.dumps(self.fingerprint, sort_keys=True, default=str)}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(_HEADER.pack(MAGIC, hashlib.sha256(data).digest(), len(data)))
            fh.write(data)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read and verify a checkpoint written by ``save``.

        Raises:
            CheckpointError: the file is empty, truncated, altered (checksum), not a camoe checkpoint, or unreadable;
                the message names the file and what failed.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from None
        if not raw:
            raise CheckpointError(f"{path}: the checkpoint file is empty (0 bytes); delete it to start fresh")
        if len(raw) < _HEADER.size or not raw.startswith(MAGIC):
            kind = "truncated" if MAGIC.startswith(raw[: len(MAGIC)]) and len(raw) < _HEADER.size else "foreign"
            raise CheckpointError(f"{path}: not a camoe training checkpoint ({kind}: {len(raw)} bytes, no "
                                  f"{MAGIC.decode()} header); delete it to start fresh")
        _, digest, length = _HEADER.unpack_from(raw)
        data = raw[_HEADER.size :]
        if len(data) != length:
            if len(data) < length:
                raise CheckpointError(f"{path}: the checkpoint is truncated ({len(data):,} of {length:,} payload "
                                      f"bytes); the run was interrupted while copying it, or the disk is full")
            raise CheckpointError(f"{path}: the checkpoint has {len(data) - length:,} bytes after its "
                                  f"{length:,}-byte payload; the file was altered after it was written")
        if hashlib.sha256(data).digest() != digest:
            raise CheckpointError(f"{path}: the checkpoint's checksum does not match its content (the file was "
                                  f"altered or corrupted after it was written); delete it to start fresh")
        try:
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            return cls(TrainState(**payload["state"]), payload["model"], payload["best_model"], payload["optimizer"],
                       payload["scheduler"], payload["log_vars"], payload["epoch_rng"], payload["torch_rng"],
                       json.loads(payload["fingerprint"]), payload.get("averaged_model"))
        except Exception as err:  # noqa: BLE001 - any failure past a valid checksum is a foreign payload
            raise CheckpointError(f"{path}: unreadable checkpoint payload ({type(err).__name__}: {err})") from None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def fingerprint_diff(saved: dict[str, Any], current: dict[str, Any], allow: tuple[str, ...] | list[str] = ()) -> list[str]:
    """What differs between a checkpoint's fingerprint and the current run's, one "key: saved -> current" line each.

    Keys that never change results (``_NO_EFFECT_KEYS``: threads, checkpoint interval, file paths, ...) are ignored;
    ``allow`` names further keys the caller accepts (only ``RESUME_SAFE_KEYS``).

    Raises:
        ValueError: ``allow`` names a key outside ``RESUME_SAFE_KEYS``.

    Example:
        >>> fingerprint_diff({"config": {"train": {"learning_rate": 0.003}}}, {"config": {"train": {"learning_rate": 0.01}}})
        ['config.train.learning_rate: 0.003 -> 0.01']
    """
    unsafe = sorted(set(allow) - set(RESUME_SAFE_KEYS))
    if unsafe:
        raise ValueError(f"--allow-change {unsafe}: only {list(RESUME_SAFE_KEYS)} may change on resume; other keys "
                         f"change what the saved optimizer state and weights mean")
    ignored = {f"config.{k}" for k in (*_NO_EFFECT_KEYS, *allow)}
    a, b = _flatten(json.loads(json.dumps(saved, default=str))), _flatten(json.loads(json.dumps(current, default=str)))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in ignored or any(key.startswith(i + ".") for i in ignored):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {a.get(key, '<absent>')} -> {b.get(key, '<absent>')}")
    return lines
