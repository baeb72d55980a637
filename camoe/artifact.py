"""Model artifact: one folder that rebuilds and scores exactly like the trained model.

Files:
    model.safetensors   weights (safetensors: no pickle, no code execution on load)
    config.json         the full run config
    encoder.json        encoder state (vocabularies, hash settings, numeric statistics, input layout)
    tasks.json          formats, tasks, format -> task map, loss mask, format attributes
    metrics.json        evaluation metrics (optional)
    model.onnx          the scoring head exported for ONNX Runtime (written with the artifact, so serving and
                        evaluation never write into it: a read-only artifact serves as it is)
    manifest.json       camoe / torch versions, schema fingerprint, SHA-256 of every file above

``load_artifact`` verifies every checksum before reading, so a truncated or edited file is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from camoe.files import atomic_path, write_json
from camoe.version import __version__

__all__ = ["ArtifactError", "ArtifactParts", "load_artifact", "save_artifact", "schema_fingerprint"]

WEIGHTS = "model.safetensors"
REQUIRED = (WEIGHTS, "config.json", "encoder.json", "tasks.json")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """An artifact folder is missing files, altered, or from an incompatible version."""


@dataclass
class ArtifactParts:
    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    encoder: dict[str, Any]
    tasks: dict[str, Any]
    metrics: dict[str, Any] | None
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def schema_fingerprint(encoder_state: dict[str, Any]) -> str:
    """SHA-256 of the feature specs and input layout (what a model's weights are tied to)."""
    key = json.dumps({"features": encoder_state["features"], "input_spec": encoder_state["input_spec"]}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def save_artifact(
    folder: str | Path,
    weights: dict[str, torch.Tensor],
    config: dict[str, Any],
    encoder: dict[str, Any],
    tasks: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    write_files: dict[str, Callable[[Path], Any]] | None = None,
) -> Path:
    """Write an artifact folder (files written atomically; the manifest, which lists their checksums, last).

    Args:
        write_files: further files: name -> function writing that file at the path it is given (e.g. the ONNX
            export); they are checksummed like the others.

    Returns:
        The folder path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp))
    files = {"config.json": config, "encoder.json": encoder, "tasks.json": tasks}
    if metrics is not None:
        files["metrics.json"] = metrics
    for name, obj in files.items():
        write_json(folder / name, obj)
    for name, writer in (write_files or {}).items():
        with atomic_path(folder / name) as tmp:
            writer(tmp)
    names = [WEIGHTS, *files, *(write_files or {})]
    manifest = {
        "format_version": FORMAT_VERSION,
        "camoe_version": __version__,
        "torch_version": torch.__version__,
        "schema_fingerprint": schema_fingerprint(encoder),
        "files": {name: _sha256(folder / name) for name in names},
        **(extra or {}),
    }
    write_json(folder / MANIFEST, manifest)
    return folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: not valid UTF-8 JSON ({err}); the artifact was altered or corrupted") from None


def load_artifact(folder: str | Path) -> ArtifactParts:
    """Read and verify an artifact folder.

    Raises:
        ArtifactError: folder or file missing, checksum mismatch (truncated or altered file), unknown format version.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder}: not a camoe artifact ({MANIFEST} missing)")
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{manifest_path}: malformed manifest (expected an object with 'files')")
    missing = [n for n in REQUIRED if n not in manifest["files"]]
    if missing:
        raise ArtifactError(f"{manifest_path}: the manifest does not cover {missing}; the artifact was altered")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{folder}: artifact format {manifest.get('format_version')} is not {FORMAT_VERSION}")
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder}: file {name} listed in the manifest is missing")
        actual = _sha256(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: checksum mismatch (manifest {expected[:12]}…, file {actual[:12]}…): the file was truncated "
                f"or altered after saving"
            )
    try:
        parts = ArtifactParts(
            weights=load_file(str(folder / WEIGHTS)),
            config=_read_json(folder / "config.json"),
            encoder=_read_json(folder / "encoder.json"),
            tasks=_read_json(folder / "tasks.json"),
            metrics=_read_json(folder / "metrics.json") if "metrics.json" in manifest["files"] else None,
            manifest=manifest,
        )
        fingerprint = schema_fingerprint(parts.encoder)
    except (KeyError, TypeError, ValueError, OSError) as err:  # safetensors errors subclass these
        raise ArtifactError(f"{folder}: unreadable artifact ({type(err).__name__}: {err})") from None
    except Exception as err:  # noqa: BLE001 - e.g. SafetensorError for a damaged weights file
        raise ArtifactError(f"{folder}: unreadable artifact ({type(err).__name__}: {err})") from None
    if fingerprint != manifest.get("schema_fingerprint"):
        raise ArtifactError(f"{folder}: encoder.json does not match the manifest's schema fingerprint")
    return parts
