"""Task grouping: which task head scores each ad format, and which heads each format's rows train.

A task is a group of formats (paper: "modality-aware task grouping"). The grouping yields two things:

* ``format_to_task`` (K formats -> T tasks): the head that scores a format's impressions;
* the loss mask ``mask`` of shape (K, T): ``mask[k, t] = 1`` when rows of format k contribute to the loss of
  task t. By default it is the one-hot of ``format_to_task``; ``GroupingConfig.transfer`` adds entries
  (directional transfer, WSDM 2026 companion paper, m_{s,t}).

Example:
    >>> from camoe.config import GroupingConfig
    >>> fmts = {"audio_music": {"modality": "audio"}, "video_takeover": {"modality": "video"},
    ...         "display_homepage": {"modality": "display"}}
    >>> layout = build_task_layout(GroupingConfig(strategy="modality2"), fmts)
    >>> layout.tasks, layout.format_to_task["display_homepage"]
    (('audio', 'video'), 'audio')
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from camoe.config import GroupingConfig

__all__ = ["TaskLayout", "build_task_layout"]

_SMALL = 4096  # up to this many rows (a scoring request), formats are looked up row by row
_ATTRIBUTE_OF_STRATEGY = {"modality": "modality", "content": "content", "slot": "slot"}


@dataclass(frozen=True)
class TaskLayout:
    """Resolved formats, tasks and the (K, T) loss mask.

    Attributes:
        formats: the K format names.
        tasks: the T task names.
        format_to_task: the head that scores each format.
        mask: (K, T) float32 in [0, 1]: the loss weight of each format's rows in each head (1 = the format's own task
            and ``transfer`` entries; ``transfer_weight`` elsewhere, 0 by default).
        strategy: the grouping strategy that produced it (``auto`` resolved to the one it chose).
    """

    formats: tuple[str, ...]
    tasks: tuple[str, ...]
    format_to_task: dict[str, str]
    mask: np.ndarray = field(repr=False)  # (K, T) float32 in [0, 1]
    strategy: str = "explicit"

    @cached_property
    def format_task_index(self) -> np.ndarray:
        """(K,) int64: task index of each format, in ``formats`` order (read-only)."""
        index = np.array([self.tasks.index(self.format_to_task[f]) for f in self.formats], dtype=np.int64)
        index.flags.writeable = False
        return index

    @cached_property
    def _format_lookup(self) -> dict[str, int]:
        return {f: i for i, f in enumerate(self.formats)}

    def format_index(self, values: np.ndarray, where: str = "data") -> np.ndarray:
        """Map format names to indices into ``formats``.

        Args:
            values: (N,) format names.
            where: what the values are (file or split name), used in the error.

        Raises:
            ValueError: a value is not a known format; the message lists the known formats and counts.
        """
        lookup = self._format_lookup
        codes = None
        if len(values) <= _SMALL:  # a scoring request: a dict lookup per row beats sorting the strings
            codes = np.fromiter(map(lookup.get, np.asarray(values).tolist(), itertools.repeat(-1)), dtype=np.int64,
                                count=len(values))
        if codes is not None and (codes >= 0).all():
            return codes
        names = _as_str(values)  # non-string names (e.g. numbers) are matched by their text
        uniques, inverse = np.unique(names, return_inverse=True)
        codes = np.array([lookup.get(u, -1) for u in uniques], dtype=np.int64)[inverse.reshape(-1)]
        if (codes < 0).any():
            bad, counts = np.unique(names[codes < 0], return_counts=True)
            listing = ", ".join(f"'{b}' ({c} rows)" for b, c in zip(bad[:10], counts[:10]))
            raise ValueError(f"{where}: unknown ad format {listing}; known formats: {list(self.formats)}")
        return codes

    def to_dict(self) -> dict[str, object]:
        return {
            "formats": list(self.formats),
            "tasks": list(self.tasks),
            "format_to_task": dict(self.format_to_task),
            "mask": [[int(v) if v in (0.0, 1.0) else float(v) for v in row] for row in self.mask.tolist()],
            "strategy": self.strategy,
        }

    @classmethod
    def from_dict(cls, state: dict[str, object]) -> TaskLayout:
        return cls(
            formats=tuple(state["formats"]),  # type: ignore[arg-type]
            tasks=tuple(state["tasks"]),  # type: ignore[arg-type]
            format_to_task=dict(state["format_to_task"]),  # type: ignore[arg-type]
            mask=np.asarray(state["mask"], dtype=np.float32),
            strategy=str(state.get("strategy", "explicit")),
        )


def _as_str(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(str)


def _task_of(strategy: str, name: str, attrs: dict[str, str], task_map: dict[str, str] | None) -> str:
    if strategy == "single":
        return "all"
    if strategy == "per_format":
        return name
    if strategy == "explicit":
        assert task_map is not None  # checked by GroupingConfig
        return task_map[name]
    attribute = "modality" if strategy == "modality2" else _ATTRIBUTE_OF_STRATEGY[strategy]
    value = attrs[attribute]
    if strategy == "modality2":
        return "audio" if value == "display" else value
    return value


def build_task_layout(grouping: GroupingConfig, formats: dict[str, dict[str, str]]) -> TaskLayout:
    """Resolve a grouping strategy over a format table.

    Args:
        grouping: strategy, explicit task map and transfer entries.
        formats: format name -> attributes (``modality``, ``content``, ``slot``, ...).

    Returns:
        A ``TaskLayout``; tasks are ordered by first appearance in ``formats``.

    Raises:
        ValueError: a format lacks the attribute the strategy groups by, the explicit map misses or invents a
            format, or a transfer entry names an unknown format or task. Each message lists the valid names.

    Example (``auto`` on formats without attributes):
        >>> build_task_layout(GroupingConfig(), {"banner": {}, "video": {}}).strategy
        'per_format'
    """
    if not formats:
        raise ValueError("no ad formats: the format table is empty")
    names = list(formats)
    strategy = grouping.strategy
    if strategy == "auto":  # modality when every format says its modality, else one task per format
        strategy = "modality" if all("modality" in formats[f] for f in names) else "per_format"
    attribute = "modality" if strategy == "modality2" else _ATTRIBUTE_OF_STRATEGY.get(strategy)
    if attribute is not None:
        lacking = [f for f in names if attribute not in formats[f]]
        if lacking:
            raise ValueError(
                f"grouping '{strategy}' needs attribute '{attribute}' for every format; missing for {lacking}. "
                f"Add it under 'formats:' in the config, or use strategy per_format / single / explicit."
            )
    if strategy == "explicit":
        assert grouping.task_map is not None
        unknown = sorted(set(grouping.task_map) - set(names))
        missing = [f for f in names if f not in grouping.task_map]
        if unknown or missing:
            raise ValueError(
                f"grouping.task_map: unknown formats {unknown}, formats without a task {missing}; "
                f"known formats: {names}"
            )
    format_to_task = {f: _task_of(strategy, f, formats[f], grouping.task_map) for f in names}
    tasks = tuple(dict.fromkeys(format_to_task.values()))
    mask = np.zeros((len(names), len(tasks)), dtype=np.float32)  # (K, T)
    for k, f in enumerate(names):
        mask[k, tasks.index(format_to_task[f])] = 1.0
    for f, extra in grouping.transfer.items():
        if f not in formats:
            raise ValueError(f"grouping.transfer: unknown format '{f}'; known formats: {names}")
        for t in extra:
            if t not in tasks:
                raise ValueError(f"grouping.transfer['{f}']: unknown task '{t}'; tasks: {list(tasks)}")
            mask[names.index(f), tasks.index(t)] = 1.0
    if grouping.transfer_weight > 0:  # soft transfer: every format's rows also train every other head, weighted
        mask = np.where(mask > 0, mask, np.float32(grouping.transfer_weight)).astype(np.float32)
    return TaskLayout(formats=tuple(names), tasks=tasks, format_to_task=format_to_task, mask=mask, strategy=strategy)
