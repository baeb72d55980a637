"""Task grouping strategies and the format × task loss mask."""

from __future__ import annotations

import numpy as np
import pytest

from camoe.config import GroupingConfig
from camoe.data.synthetic import format_table
from camoe.grouping import build_task_layout

FORMATS = format_table()


@pytest.mark.parametrize(
    ("strategy", "tasks"),
    [
        ("single", ("all",)),
        ("modality", ("audio", "video", "display")),
        ("modality2", ("audio", "video")),
        ("content", ("music", "podcast", "none")),
        ("slot", ("in_stream", "takeover", "sponsored", "banner", "homepage")),
        ("per_format", tuple(FORMATS)),
    ],
)
def test_named_strategies(strategy: str, tasks: tuple[str, ...]) -> None:
    layout = build_task_layout(GroupingConfig(strategy=strategy), FORMATS)
    assert layout.tasks == tasks
    assert layout.mask.shape == (7, len(tasks))
    np.testing.assert_array_equal(layout.mask.sum(axis=1), np.ones(7))  # one head per format by default
    for k, fmt in enumerate(layout.formats):
        assert layout.mask[k, layout.tasks.index(layout.format_to_task[fmt])] == 1.0


def test_modality2_puts_display_with_audio() -> None:
    layout = build_task_layout(GroupingConfig(strategy="modality2"), FORMATS)
    assert layout.format_to_task["display_homepage"] == "audio"
    assert layout.format_to_task["video_podcast"] == "video"


def test_explicit_map_and_transfer() -> None:
    task_map = {f: ("rare" if f.startswith("video") else "common") for f in FORMATS}
    cfg = GroupingConfig(strategy="explicit", task_map=task_map, transfer={"audio_music": ["rare"]})
    layout = build_task_layout(cfg, FORMATS)
    k = layout.formats.index("audio_music")
    assert layout.mask[k].tolist() == [1.0, 1.0]  # trains both heads
    assert layout.format_to_task["audio_music"] == "common"  # still scored by its own head


def test_errors_list_valid_names() -> None:
    with pytest.raises(ValueError, match="missing for"):
        build_task_layout(GroupingConfig(strategy="modality"), {"a": {"slot": "x"}})
    with pytest.raises(ValueError, match="known formats"):
        build_task_layout(GroupingConfig(strategy="explicit", task_map={"nope": "t"}), FORMATS)
    with pytest.raises(ValueError, match="unknown task 'zzz'"):
        build_task_layout(GroupingConfig(strategy="modality", transfer={"audio_music": ["zzz"]}), FORMATS)
    layout = build_task_layout(GroupingConfig(strategy="modality"), FORMATS)
    with pytest.raises(ValueError, match="unknown ad format 'tv_spot'"):
        layout.format_index(np.array(["audio_music", "tv_spot"]))


def test_layout_round_trip() -> None:
    layout = build_task_layout(GroupingConfig(strategy="content"), FORMATS)
    again = type(layout).from_dict(layout.to_dict())
    assert again.tasks == layout.tasks and again.format_to_task == layout.format_to_task
    np.testing.assert_array_equal(again.mask, layout.mask)
