"""Atomic file writes: every file camoe writes for others to read (artifacts, checkpoints, metrics, run records)
goes through here, so a crash or ``kill -9`` leaves either the previous file or the new one, never half of one.

The content is written to a temporary file in the target's folder (same file system), flushed to disk, then renamed
over the target with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "json_safe", "write_bytes", "write_json"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; when the block ends without an error it is renamed to ``path``.

    Use it for writers that want a file name (``torch.save``, ``safetensors.save_file``, ``onnx`` export):

        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'

    Raises:
        OSError: the folder cannot be created or written. On any error the temporary file is removed and ``path``
            is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:  # the data reaches the disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_safe(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` with NaN / inf floats replaced by None (JSON has no NaN), tuples as lists.

    Example:
        >>> json_safe({"a": float("nan"), "b": (1.0, float("inf"))})
        {'a': None, 'b': [1.0, None]}
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, default) for v in obj]
    if default is not None and not isinstance(obj, (str, int, float, bool, type(None))):
        return json_safe(default(obj), default)
    return obj


def write_json(path: str | Path, obj: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Write ``obj`` as indented JSON atomically; NaN and inf are written as null.

    Args:
        path: target file.
        obj: JSON-able value (dicts, lists, numbers, strings).
        default: converts other values (e.g. ``str`` for paths), as in ``json.dumps``.
    """
    text = json.dumps(json_safe(obj, default), indent=2, allow_nan=False)
    write_bytes(path, (text + "\n").encode())
