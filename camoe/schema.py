"""Model input layout derived from a fitted encoder: table sizes and column order.

The builder takes every embedding-table size from here, and this is filled only from the saved encoder state, so a
model can never be built with sizes counted on another split (case B10 in ``shared/cases``).

Reserved ids in every categorical table: ``MISSING_ID = 0`` (missing value; also padding of multi-valued features)
and ``OOV_ID = 1`` (value unseen when the encoder was fitted). Real values start at ``NUM_RESERVED = 2``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["InputSpec", "MISSING_ID", "NUM_RESERVED", "OOV_ID"]

MISSING_ID = 0
OOV_ID = 1
NUM_RESERVED = 2


@dataclass(frozen=True)
class InputSpec:
    """Column order and table sizes of the encoded inputs.

    Attributes:
        cat_features: names of the F single-valued categorical features, in ``cat_ids`` column order.
        cat_cardinalities: table size per categorical feature (reserved ids included).
        multi_features: names of the M multi-valued features, in ``multi_ids`` order.
        multi_cardinalities: table size per multi-valued feature (reserved ids included).
        max_len: L, values kept per multi-valued cell (padding id 0).
        dense_features: names of the N dense columns (missing indicators included), in ``dense`` order.
        multi_pooling: "mean" or "sum" per multi-valued feature.
    """

    cat_features: tuple[str, ...]
    cat_cardinalities: tuple[int, ...]
    multi_features: tuple[str, ...]
    multi_cardinalities: tuple[int, ...]
    max_len: int
    dense_features: tuple[str, ...]
    multi_pooling: tuple[str, ...] = ()

    @property
    def num_cat(self) -> int:
        return len(self.cat_features)

    @property
    def num_multi(self) -> int:
        return len(self.multi_features)

    @property
    def num_dense(self) -> int:
        return len(self.dense_features)

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: dict[str, object]) -> InputSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in state.items()})  # type: ignore[arg-type]
