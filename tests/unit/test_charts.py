"""The shared Altair chart builders (pages/charts.py): data shaping and encodings, no Streamlit."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from fer_core.aggregate import AttentionEvent
from fer_core.emotions import EMOTION_COLORS, EMOTIONS
from pages import charts
from tests.doubles import BUCKETS_T0 as T0
from tests.doubles import make_buckets
from tests.vega import streamlit_scene


def spec(chart) -> dict:
    return json.loads(chart.to_json())


def test_timeline_stacks_shares_in_canonical_order_with_fixed_colours() -> None:
    chart = charts.timeline_chart(make_buckets(["happy", "sad", None]))
    s = spec(chart)
    color = s["encoding"]["color"]
    assert color["scale"]["domain"] == list(EMOTIONS)
    assert color["scale"]["range"] == [EMOTION_COLORS[e] for e in EMOTIONS]
    assert s["encoding"]["y"]["title"] == "Share of faces"
    long = charts.emotion_long(make_buckets(["happy", "sad", None]))
    assert len(long) == 3 * len(EMOTIONS)
    assert long.groupby("t")["value"].sum().tolist() == [1.0, 1.0, 0.0]  # a second without faces is empty
    assert str(long["t"].dt.tz) == "UTC"


def test_timeline_also_plots_mean_probabilities() -> None:
    long = charts.emotion_long(make_buckets(["happy"]), "mean")
    assert long.set_index("emotion").loc["happy", "value"] == pytest.approx(0.4)


def test_charts_of_nothing_show_a_placeholder() -> None:
    empty = make_buckets([])
    for chart in (charts.timeline_chart(empty), charts.faces_chart(empty), charts.attention_chart(empty),
                  charts.training_curves_chart([])):
        assert spec(chart)["mark"]["type"] == "text"


def test_distribution_chart_accepts_a_mapping() -> None:
    s = spec(charts.distribution_chart({"happy": 0.6, "neutral": 0.4}))
    values = next(iter(s["datasets"].values()))
    assert [v["emotion"] for v in values] == list(EMOTIONS)
    assert {v["emotion"]: v["value"] for v in values}["happy"] == 0.6


def test_attention_spans_and_events_on_the_timeline() -> None:
    frame = make_buckets(["sad"] * 6 + ["happy"] * 2 + ["sad"] * 3, flagged={2, 3, 4, 5, 9, 10})
    spans = charts.attention_spans(frame)
    assert spans["seconds"].tolist() == [4, 2]
    assert spans["start"].iloc[0] == pd.Timestamp(T0 + 2, unit="s", tz="UTC")
    assert spans["end"].iloc[0] == pd.Timestamp(T0 + 6, unit="s", tz="UTC")  # end of the last flagged second
    events = pd.DataFrame([AttentionEvent(T0 + 2, T0 + 6, "sad").__dict__]).rename(columns={"t_start": "t"})
    s = spec(charts.attention_chart(frame, events, event_label_column="reason"))
    assert [layer["mark"]["type"] for layer in s["layer"]] == ["rect", "line", "rule"]


def test_long_sessions_are_binned_for_drawing() -> None:
    frame = make_buckets(["happy"] * 3000, flagged={1500})
    small = charts.downsample(frame, max_points=1000)
    assert len(small) <= 1000
    assert small["share_happy"].tolist() == pytest.approx([1.0] * len(small))
    assert small["needs_attention"].sum() == 1
    assert len(charts.downsample(frame.head(10))) == 10  # short frames are drawn as they are


def test_confusion_chart_keeps_scored_rows_and_normalises_them() -> None:
    matrix = np.zeros((7, 7), dtype=int)
    matrix[3, 3], matrix[3, 4], matrix[4, 4] = 8, 2, 5
    s = spec(charts.confusion_chart(matrix.tolist(), EMOTIONS, true_classes=["happy", "neutral"]))
    cells = next(iter(s["datasets"].values()))
    assert {c["true"] for c in cells} == {"happy", "neutral"}
    happy_neutral = next(c for c in cells if c["true"] == "happy" and c["predicted"] == "neutral")
    assert happy_neutral["count"] == 2 and happy_neutral["share"] == pytest.approx(0.2)


def test_progress_frame_and_training_curves() -> None:
    records = [
        {"kind": "batch", "epoch": 1, "epochs": 2, "step": 5, "steps": 10, "loss": 2.0, "accuracy": 0.2},
        {"kind": "epoch", "epoch": 1, "epochs": 2, "step": 10, "steps": 10, "loss": 1.5, "accuracy": 0.3,
         "val_loss": 1.6, "val_accuracy": 0.28},
        # A resumed run logs epoch 1 again: the newest value wins.
        {"kind": "epoch", "epoch": 1, "epochs": 2, "step": 10, "steps": 10, "loss": 1.4, "accuracy": 0.32,
         "val_loss": 1.5, "val_accuracy": 0.3},
    ]
    frame = charts.progress_frame(records)
    val = frame[(frame["split"] == "val") & (frame["metric"] == "accuracy")]
    assert val[["x", "value"]].values.tolist() == [[1.0, 0.3]]
    train_x = frame[(frame["split"] == "train") & (frame["metric"] == "loss")]["x"].tolist()
    assert train_x == [0.5, 1.0]
    s = spec(charts.training_curves_chart(records))
    assert [panel["title"] for panel in s["hconcat"]] == ["Loss", "Accuracy"]


def drawn_as_points(chart_spec: dict, split: str) -> bool:
    """Whether a panel of the curves draws `split`'s values as points (a single value makes no line)."""
    return any(layer["mark"]["type"] == "point" and f"'{split}'" in str(layer.get("transform"))
               for layer in chart_spec["hconcat"][0]["layer"])


def test_a_curve_of_one_training_point_is_visible() -> None:
    # The first progress line of a long first epoch, or the only training point of a 1-epoch run.
    first_line = [{"kind": "batch", "epoch": 1, "epochs": 3, "step": 4, "steps": 10, "loss": 1.9, "accuracy": 0.2}]
    s = spec(charts.training_curves_chart(first_line))
    assert drawn_as_points(s, "train") and drawn_as_points(s, "val")


def test_progress_lines_come_often_enough_for_a_short_epoch_to_have_a_curve() -> None:
    from training.runs import progress_interval

    assert progress_interval(437, 20) == 20  # FER2013 at batch 64: every 20 batches, 22 lines an epoch
    assert progress_interval(11, 20) == 1  # a tiny data set: every batch, not only at the epoch's end
    assert progress_interval(60, 20) == 6


# --- as the app lays them out (Streamlit's autosize, theme and container width; see tests/vega.py) -----------

WIDTHS = (180, 320, 700, 1400)  # a phone column, half of a column, a column, a wide page


@pytest.mark.parametrize("width", WIDTHS)
def test_every_bar_is_labelled_at_any_width(width: int) -> None:
    frame = make_buckets(["happy"] * 7 + ["sad"] * 2 + ["angry"])
    for chart in (charts.distribution_chart(frame, title="Overall"),  # the recording result
                  charts.distribution_chart(frame, which="current", title="Right now"),  # Live
                  charts.distribution_chart(frame)):  # History and Compare
        assert streamlit_scene(chart, width).axis("y").visible_labels == list(EMOTIONS)


def test_the_live_faces_chart_has_a_whole_number_axis_and_room() -> None:
    # The Live page's small chart, one face in view: the plot must not collapse to a flat line.
    scene = streamlit_scene(charts.faces_chart(make_buckets(["happy"] * 5, faces=[1] * 5), title="Faces in view"),
                            320)
    assert scene.plot_height == charts.SMALL_HEIGHT
    assert scene.axis("y").visible_labels == ["0", "1"]
    assert scene.title_fits("y")
    four = streamlit_scene(charts.faces_chart(make_buckets(["happy"] * 3, faces=[4, 3, 4])), 320)
    assert four.axis("y").visible_labels[0] == "0" and four.axis("y").visible_labels[-1] == "4"
    assert all(label.isdigit() for label in four.axis("y").visible_labels)  # counts, never "0.5"


def test_no_faces_is_said_not_drawn_as_zeros() -> None:
    nobody = make_buckets([None] * 5)
    assert spec(charts.distribution_chart(nobody))["mark"]["type"] == "text"
    s = json.dumps(spec(charts.distribution_chart(nobody)))
    assert "No faces seen" in s
    scene = streamlit_scene(charts.faces_chart(nobody), 320)
    assert scene.axis("y").visible_labels == ["0", "1"]  # not 0.000000


def test_small_time_charts_keep_their_plot_height_and_axis_titles() -> None:
    frame = make_buckets(["sad"] * 12 + ["happy"] * 3, flagged=set(range(10, 12)))
    for width in (320, 900):
        scene = streamlit_scene(charts.attention_chart(frame, title="Needs attention"), width)
        assert scene.plot_height == charts.SMALL_HEIGHT
        assert scene.title_fits("y"), "the 'Negative share' title is longer than the plot"
        timeline = streamlit_scene(charts.timeline_chart(frame, title="Class mood"), width)
        assert timeline.plot_height == charts.TIMELINE_HEIGHT


def test_recordings_are_drawn_in_video_time() -> None:
    frame = make_buckets(["happy"] * 90)
    video = charts.on_video_clock(frame, charts.to_datetime(frame["t"]).min().timestamp())
    s = spec(charts.timeline_chart(video, clock="video"))
    assert s["encoding"]["x"]["title"] == "Video time" and s["encoding"]["x"]["scale"]["type"] == "utc"
    scene = streamlit_scene(charts.timeline_chart(video, clock="video"), 700)
    labels = scene.axis("x").visible_labels
    assert labels[0] == "0:00:00" and all(re.fullmatch(r"0:0[01]:\d\d", label) for label in labels)


def test_markers_show_on_every_timeline() -> None:
    frame = make_buckets(["happy"] * 20)
    markers = pd.DataFrame({"t": [T0 + 5, T0 + 12], "label": ["quiz starts", "group work"]})
    for chart in (charts.timeline_chart(frame, markers=markers), charts.faces_chart(frame, markers=markers),
                  charts.attention_chart(frame, markers=markers)):
        text = json.dumps(spec(chart))
        assert "quiz starts" in text and "group work" in text
        assert '"rule"' in text
