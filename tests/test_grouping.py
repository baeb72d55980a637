"""Task grouping strategies and the format × task loss mask."""

from __future__ import annotations

import numpy as np
import pytest

from camoe.config import GroupingConfig
from camoe.data.synthetic import format_table
from camoe.grouping import TaskLayout, build_task_layout

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


def test_auto_grouping_uses_modality_when_every_format_has_one_and_one_task_per_format_otherwise() -> None:
    with_modality = {"a": {"modality": "audio"}, "v": {"modality": "video"}, "b": {"modality": "audio"}}
    layout = build_task_layout(GroupingConfig(), with_modality)
    assert layout.strategy == "modality" and layout.tasks == ("audio", "video")
    bare = {"pos1": {}, "pos2": {"slot": "x"}}
    layout = build_task_layout(GroupingConfig(), bare)
    assert layout.strategy == "per_format" and layout.tasks == ("pos1", "pos2")
    assert TaskLayout.from_dict(layout.to_dict()).strategy == "per_format"


def test_a_new_schema_without_a_formats_table_trains_with_the_default_grouping(rows) -> None:
    import camoe

    cfg = camoe.load_config({"schema": {"features": [{"name": "device", "type": "categorical"}]},
                             "model": {"embedding_dim": 4, "num_experts": 2, "expert_hidden": [4],
                                       "tower_hidden": [4]}, "train": {"epochs": 1, "min_task_clicks": 0},
                             "data": {"split": {"valid_fraction": 0.0, "test_fraction": 0.0}}})
    said: list[str] = []
    pipe = camoe.CTRPipeline(cfg).fit(rows("ts,format,device,click\n1,top,ios,1\n2,top,web,0\n3,side,ios,0\n4,side,web,1"),
                                      announce=said.append)
    assert pipe.layout_.tasks == ("side", "top")
    assert said == ["grouping 'auto': per_format (the formats have no modality attribute in the config's formats "
                    "table), 2 tasks; set grouping.strategy to choose"]


def test_transfer_weight_lets_every_format_train_every_other_head_softly() -> None:
    layout = build_task_layout(GroupingConfig(strategy="modality", transfer_weight=0.1), FORMATS)
    for k, fmt in enumerate(layout.formats):
        own = layout.tasks.index(layout.format_to_task[fmt])
        assert layout.mask[k, own] == 1.0
        assert np.allclose(np.delete(layout.mask[k], own), 0.1)
    again = TaskLayout.from_dict(layout.to_dict())  # soft weights survive the artifact round trip
    np.testing.assert_array_equal(again.mask, layout.mask)
