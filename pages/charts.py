"""Altair chart builders shared by every page. Pure: data in, `alt.Chart` out, no `st.*` calls.

Bucket frames are `fer_core.aggregate.buckets_frame` (the Live page) and
`fer_core.store.Store.session_buckets` (History): `t` (epoch seconds or datetime), `faces`,
`share_<emotion>` (fraction of face-observations with that label), `p_<emotion>` (mean
probability), optionally `negative_share`, and `needs_attention`. Colours always come from `EMOTION_COLORS`
so one emotion looks the same on every chart.

Sizes: every chart fits the container's width and keeps the height it asks for as the height of
its plot (`autosize: fit-x`). Streamlit's default (`fit`) squeezes the plot until the title and axes
fit into that height, which dropped bar labels and flattened small charts. Bar charts take their
height from the number of bars, and never drop a category label.

Clocks: a live session's times are wall-clock times (epoch seconds, shown in the viewer's time
zone); a recording's are video time: seconds from its first frame, shown as H:MM:SS (`clock="video"`,
see `on_video_clock`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import altair as alt
import numpy as np
import pandas as pd

from fer_core.aggregate import (
    SHARE_PREFIX,
    Measure,
    current_distribution,
    measure_prefix,
    overall_distribution,
)
from fer_core.emotions import EMOTION_COLORS, EMOTIONS, NEGATIVE_EMOTIONS

TIME_FORMAT = "%H:%M:%S"
VIDEO_TIME_FORMAT = "%-H:%M:%S"  # 0:03:25 from the video's start
Clock = Literal["wall", "video"]
MAX_POINTS = 1_200  # time points per chart; longer sessions are binned (a 2-hour class would be 7,200)
TIMELINE_HEIGHT = 260
SMALL_HEIGHT = 140
BAR_HEIGHT = 220
BAR_STEP = 24  # px per bar: room for a 12-px label on every bar, whatever the chart's width
ATTENTION_COLOR = "#d62728"
MARKER_COLOR = "#6a3d9a"
# Width fits the container; the height asked for is the plot's own (see the module docstring).
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")

# One scale object for every chart: the legend lists emotions in canonical order.
EMOTION_SCALE = alt.Scale(domain=list(EMOTIONS), range=[EMOTION_COLORS[e] for e in EMOTIONS])


def share_column(emotion: str) -> str:
    return f"{SHARE_PREFIX}{emotion}"


def _measure_title(measure: Measure) -> str:
    # "share" = fraction of faces whose top emotion it is; "mean" = mean probability over faces.
    return "Share of faces" if measure == "share" else "Mean probability"


def to_datetime(values: pd.Series) -> pd.Series:
    """Epoch seconds or datetimes -> UTC datetimes (Vega-Lite shows them in the viewer's local time)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values
    return pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit="s", utc=True)


def _with_time(buckets: pd.DataFrame) -> pd.DataFrame:
    frame = buckets.copy()
    frame["t"] = to_datetime(frame["t"])
    return frame


def on_video_clock(frame: pd.DataFrame, origin: float, columns: Sequence[str] = ("t",)) -> pd.DataFrame:
    """Epoch-second columns -> seconds from `origin` (a recording's first frame), for `clock="video"`."""
    out = frame.copy()
    for column in columns:
        if column in out.columns:
            out[column] = pd.to_numeric(out[column], errors="coerce") - float(origin)
    return out


def _finish(chart: Any, title: str | None) -> Any:
    """Every chart: the container's width, its own plot height, an optional title."""
    chart = chart.properties(autosize=FIT_WIDTH)
    return chart.properties(title=title) if title else chart


def downsample(buckets: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Bin a long bucket frame into at most ~`max_points` equal time bins, for drawing only.

    Numeric columns are averaged per bin; `needs_attention` is true if any second in the bin was.
    """
    if len(buckets) <= max_points:
        return buckets
    frame = _with_time(buckets)
    span = (frame["t"].max() - frame["t"].min()).total_seconds()
    step = max(1, int(np.ceil((span + 1) / max_points)))
    bins = frame["t"].dt.floor(f"{step}s")
    numeric = [c for c in frame.columns if c != "t" and pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    out = frame[numeric].groupby(bins).mean()
    if "needs_attention" in frame.columns:
        out["needs_attention"] = frame["needs_attention"].fillna(False).astype(bool).groupby(bins).any()
    return out.rename_axis("t").reset_index()


def _empty_chart(message: str, height: int = SMALL_HEIGHT) -> alt.Chart:
    """A placeholder with a message, so callers never branch on empty data."""
    return (
        alt.Chart(pd.DataFrame({"message": [message]}))
        .mark_text(size=14, color="#7f7f7f")
        .encode(text="message:N")
        .properties(height=height, width="container", autosize=FIT_WIDTH)
    )


def _time_axis(clock: Clock = "wall", field: str = "t") -> alt.X:
    if clock == "video":  # seconds from the start, read as UTC times of 1 Jan 1970: 0:00:00, 0:00:10...
        return alt.X(f"{field}:T", title="Video time", scale=alt.Scale(type="utc"),
                     axis=alt.Axis(format=VIDEO_TIME_FORMAT, labelAngle=0, tickCount=6))
    return alt.X(f"{field}:T", title="Time", axis=alt.Axis(format=TIME_FORMAT, labelAngle=0, tickCount=6))


def _time_tooltip(clock: Clock = "wall", field: str = "t", title: str | None = None) -> alt.Tooltip:
    if clock == "video":
        return alt.Tooltip(f"{field}:T", title=title or "Video time", format=VIDEO_TIME_FORMAT, formatType="utc")
    return alt.Tooltip(f"{field}:T", title=title or "Time", format=TIME_FORMAT)


def markers_layer(markers: pd.DataFrame | None, clock: Clock = "wall") -> alt.Chart | None:
    """Lesson markers (columns t, label) as labelled vertical rules; None when there are none."""
    if markers is None or markers.empty or "t" not in markers.columns:
        return None
    frame = pd.DataFrame({"t": to_datetime(markers["t"]), "label": markers["label"].astype(str)})
    base = alt.Chart(frame).encode(x=alt.X("t:T"), tooltip=[_time_tooltip(clock, title="Marker at"),
                                                            alt.Tooltip("label:N", title="Marker")])
    rules = base.mark_rule(color=MARKER_COLOR, strokeWidth=1.5)
    labels = base.mark_text(align="left", baseline="top", dx=3, dy=2, color=MARKER_COLOR, fontSize=11,
                            limit=140).encode(text="label:N", y=alt.value(0))
    return rules + labels


def _with_markers(chart: Any, markers: pd.DataFrame | None, clock: Clock) -> Any:
    layer = markers_layer(markers, clock)
    return chart if layer is None else alt.layer(chart, layer)


def emotion_long(buckets: pd.DataFrame, measure: Measure = "share") -> pd.DataFrame:
    """Wide bucket columns -> long rows (t, emotion, value), emotions in canonical order."""
    prefix = measure_prefix(measure)
    columns = [f"{prefix}{e}" for e in EMOTIONS if f"{prefix}{e}" in buckets.columns]
    if buckets.empty or not columns:
        return pd.DataFrame({"t": pd.Series(dtype="datetime64[ns, UTC]"), "emotion": [], "value": []})
    frame = _with_time(buckets)[["t", *columns]]
    long = frame.melt(id_vars="t", var_name="emotion", value_name="value")
    long["emotion"] = long["emotion"].str.removeprefix(prefix)
    long["value"] = pd.to_numeric(long["value"], errors="coerce").fillna(0.0)
    long["order"] = long["emotion"].map({e: i for i, e in enumerate(EMOTIONS)})
    return long


def timeline_chart(
    buckets: pd.DataFrame,
    *,
    measure: Measure = "share",
    height: int = TIMELINE_HEIGHT,
    title: str | None = None,
    clock: Clock = "wall",
    markers: pd.DataFrame | None = None,
) -> alt.Chart:
    """Stacked area of the class's emotion mix per second (shares sum to 1 whenever faces are seen)."""
    long = emotion_long(downsample(buckets), measure)
    if long.empty:
        return _empty_chart("No data yet", height)
    chart = (
        alt.Chart(long)
        .mark_area(interpolate="step-after", opacity=0.9)
        .encode(
            x=_time_axis(clock),
            y=alt.Y("value:Q", stack="zero", title=_measure_title(measure), axis=alt.Axis(format="%"),
                    scale=alt.Scale(domain=[0, 1], nice=False, clamp=True)),
            color=alt.Color("emotion:N", scale=EMOTION_SCALE, title="Emotion", sort=list(EMOTIONS)),
            order=alt.Order("order:Q"),
            tooltip=[
                _time_tooltip(clock),
                alt.Tooltip("emotion:N", title="Emotion"),
                alt.Tooltip("value:Q", title=_measure_title(measure), format=".0%"),
            ],
        )
        .properties(height=height, width="container")
    )
    return _finish(_with_markers(chart, markers, clock), title)


def distribution_chart(
    values: Mapping[str, float] | pd.Series | pd.DataFrame,
    *,
    measure: Measure = "share",
    which: Literal["overall", "current"] = "overall",
    bar_step: int = BAR_STEP,
    title: str | None = None,
    empty_message: str = "No faces seen",
) -> alt.Chart:
    """Horizontal bars, one per emotion, in canonical order, each with its label and value.

    `values` is either emotion -> value (e.g. `overall_distribution(...)`) or a bucket frame,
    summarised with `overall_distribution` or `current_distribution` according to `which`.
    All zeros (no face seen) is a message, not seven empty bars.
    """
    if isinstance(values, pd.DataFrame):
        summarise = overall_distribution if which == "overall" else current_distribution
        series = summarise(values, measure)
    else:
        series = pd.Series({e: float(values.get(e, 0.0) or 0.0) for e in EMOTIONS})
    data = pd.DataFrame({"emotion": list(EMOTIONS), "value": [float(series.get(e, 0.0)) for e in EMOTIONS]})
    if not data["value"].gt(0).any():
        return _empty_chart(empty_message, bar_step * len(EMOTIONS))
    bars = alt.Chart(data).encode(
        y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None, axis=alt.Axis(labelOverlap=False, labelPadding=6)),
        x=alt.X("value:Q", title=_measure_title(measure), axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1], nice=False)),
        tooltip=[alt.Tooltip("emotion:N", title="Emotion"), alt.Tooltip("value:Q", title="Value", format=".1%")],
    )
    chart = (
        bars.mark_bar().encode(color=alt.Color("emotion:N", scale=EMOTION_SCALE, legend=None))
        + bars.mark_text(align="left", dx=3, fontSize=11).encode(text=alt.Text("value:Q", format=".0%"))
    ).properties(height=alt.Step(bar_step), width="container")
    return _finish(chart, title)


def faces_chart(
    buckets: pd.DataFrame,
    *,
    height: int = SMALL_HEIGHT,
    title: str | None = None,
    clock: Clock = "wall",
    markers: pd.DataFrame | None = None,
) -> alt.Chart:
    """How many faces were in view each second (a drop explains a jump in the shares).

    A whole-number axis from 0 to at least 1, so one face in view, or none, still reads as a count.
    """
    if buckets.empty or "faces" not in buckets.columns:
        return _empty_chart("No data yet", height)
    frame = _with_time(downsample(buckets))[["t", "faces"]]
    top = max(1, int(np.ceil(pd.to_numeric(frame["faces"], errors="coerce").fillna(0).max())))
    chart = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", color="#2f6fde", point=len(frame) == 1)
        .encode(
            x=_time_axis(clock),
            y=alt.Y("faces:Q", title="Faces", axis=alt.Axis(format="d", tickMinStep=1, values=_count_ticks(top)),
                    scale=alt.Scale(domain=[0, top], nice=False)),
            tooltip=[_time_tooltip(clock), alt.Tooltip("faces:Q", title="Faces", format="d")],
        )
        .properties(height=height, width="container")
    )
    return _finish(_with_markers(chart, markers, clock), title)


def _count_ticks(top: int, most: int = 5) -> list[int]:
    """Whole-number ticks from 0 to `top` (inclusive), at most about `most` of them."""
    step = max(1, int(np.ceil(top / (most - 1))))
    ticks = list(range(0, top + 1, step))
    return ticks if ticks[-1] == top else [*ticks, top]


def attention_spans(buckets: pd.DataFrame) -> pd.DataFrame:
    """Consecutive `needs_attention` seconds -> spans (start, end, seconds) to shade on a timeline."""
    empty = pd.DataFrame(
        {"start": pd.Series(dtype="datetime64[ns, UTC]"), "end": pd.Series(dtype="datetime64[ns, UTC]"),
         "seconds": pd.Series(dtype="int64")}
    )
    if buckets.empty or "needs_attention" not in buckets.columns:
        return empty
    frame = _with_time(buckets).sort_values("t").reset_index(drop=True)
    flags = frame["needs_attention"].fillna(False).astype(bool)
    if not flags.any():
        return empty
    run_id = (flags != flags.shift()).cumsum()
    spans = []
    for _, group in frame[flags].groupby(run_id[flags]):
        start = group["t"].iloc[0]
        spans.append({"start": start, "end": group["t"].iloc[-1] + pd.Timedelta(seconds=1), "seconds": len(group)})
    return pd.DataFrame(spans)


def attention_chart(
    buckets: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    event_time_column: str = "t",
    event_label_column: str | None = None,
    height: int = SMALL_HEIGHT,
    title: str | None = None,
    clock: Clock = "wall",
    markers: pd.DataFrame | None = None,
) -> alt.Chart:
    """Negative share over time, with needs-attention seconds shaded red and events as rules."""
    if buckets.empty:
        return _empty_chart("No data yet", height)
    frame = _with_time(downsample(buckets))
    if "negative_share" in frame.columns:
        frame["negative"] = pd.to_numeric(frame["negative_share"], errors="coerce").fillna(0.0)
    else:
        negative = [share_column(e) for e in EMOTIONS if e in NEGATIVE_EMOTIONS and share_column(e) in frame]
        frame["negative"] = frame[negative].apply(pd.to_numeric, errors="coerce").fillna(0.0).sum(axis=1)
    line = (
        alt.Chart(frame[["t", "negative"]])
        .mark_line(color="#555555", interpolate="step-after")
        .encode(
            x=_time_axis(clock),
            y=alt.Y("negative:Q", title="Negative share", axis=alt.Axis(format="%", values=[0, 0.5, 1]),
                    scale=alt.Scale(domain=[0, 1], nice=False)),
            tooltip=[_time_tooltip(clock), alt.Tooltip("negative:Q", title="Negative share", format=".0%")],
        )
    )
    layers: list[alt.Chart] = []
    spans = attention_spans(buckets)
    if not spans.empty:
        layers.append(
            alt.Chart(spans)
            .mark_rect(color=ATTENTION_COLOR, opacity=0.18)
            .encode(
                x="start:T", x2="end:T",
                tooltip=[_time_tooltip(clock, "start", "From"), _time_tooltip(clock, "end", "To"),
                         alt.Tooltip("seconds:Q", title="Seconds")],
            )
        )
    layers.append(line)
    if events is not None and not events.empty and event_time_column in events.columns:
        marks = events.copy()
        marks["t"] = to_datetime(marks[event_time_column])
        tooltip: list[Any] = [_time_tooltip(clock, title="Event at")]
        if event_label_column and event_label_column in marks.columns:
            marks["label"] = marks[event_label_column].astype(str)
            tooltip.append(alt.Tooltip("label:N", title="Event"))
        layers.append(
            alt.Chart(marks[["t", *(["label"] if "label" in marks.columns else [])]])
            .mark_rule(color=ATTENTION_COLOR, strokeWidth=2, strokeDash=[4, 2])
            .encode(x="t:T", tooltip=tooltip)
        )
    if (marker_layer := markers_layer(markers, clock)) is not None:
        layers.append(marker_layer)
    chart = alt.layer(*layers).properties(height=height, width="container")
    return _finish(chart, title)


def confusion_chart(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    classes: Sequence[str] = EMOTIONS,
    *,
    true_classes: Sequence[str] | None = None,
    normalize: bool = True,
    size: int = 340,
    title: str | None = None,
) -> alt.Chart:
    """Heatmap: true class by row, predicted class by column; row-normalised so rare classes read too.

    `matrix` is square over `classes` (training.evaluate's `confusion_labels`). `true_classes`
    keeps only those rows (its `classes_scored`): a class absent from the split has no row to show.
    """
    counts = np.asarray(matrix, dtype=float)
    if counts.size == 0:
        return _empty_chart("No confusion matrix", size)
    classes = list(classes)
    row_names = list(true_classes) if true_classes is not None else classes
    counts = counts[[classes.index(name) for name in row_names]]
    row_sums = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    rows = [
        {"true": row_names[i], "predicted": classes[j], "count": int(counts[i, j]), "share": float(share[i, j])}
        for i in range(counts.shape[0])
        for j in range(counts.shape[1])
    ]
    data = pd.DataFrame(rows)
    field = "share" if normalize else "count"
    # labelOverlap off: Streamlit's chart theme turns it on, which drops class names that nearly touch.
    base = alt.Chart(data).encode(
        x=alt.X("predicted:N", sort=classes, title="Predicted",
                axis=alt.Axis(labelAngle=-40, labelOverlap=False, labelFlush=False)),
        y=alt.Y("true:N", sort=row_names, title="True", axis=alt.Axis(labelOverlap=False, labelFlush=False)),
    )
    heat = base.mark_rect().encode(
        color=alt.Color(f"{field}:Q", scale=alt.Scale(scheme="blues"),
                        title="Row share" if normalize else "Count",
                        legend=alt.Legend(format=".0%" if normalize else "d")),
        tooltip=[alt.Tooltip("true:N", title="True"), alt.Tooltip("predicted:N", title="Predicted"),
                 alt.Tooltip("count:Q", title="Images"), alt.Tooltip("share:Q", title="Row share", format=".1%")],
    )
    # Dark text on light cells, white on dark ones.
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text(f"{field}:Q", format=".0%" if normalize else "d"),
        color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("#1f2430")),
    )
    height = max(120, int(size * len(row_names) / max(1, len(classes))))
    chart = (heat + text).properties(width=size, height=height)
    return chart.properties(title=title) if title else chart


def progress_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """progress.jsonl records -> long rows (x = fractional epoch, metric, split, value) for the curves.

    Training figures come from batch and epoch lines (running averages within an epoch);
    validation figures only from epoch lines.
    """
    rows: list[dict[str, Any]] = []
    for rec in records:
        kind = rec.get("kind")
        epoch = rec.get("epoch")
        if kind not in ("batch", "epoch") or epoch is None:
            continue
        steps = rec.get("steps") or 1
        x = (float(epoch) - 1.0 + float(rec.get("step") or steps) / float(steps))
        for metric in ("loss", "accuracy"):
            if rec.get(metric) is not None:
                rows.append({"x": x, "metric": metric, "split": "train", "value": float(rec[metric])})
            if kind == "epoch" and rec.get(f"val_{metric}") is not None:
                rows.append({"x": x, "metric": metric, "split": "val", "value": float(rec[f"val_{metric}"])})
    frame = pd.DataFrame(rows, columns=["x", "metric", "split", "value"])
    # A resumed run replays epochs: keep the latest value for each point.
    return frame.drop_duplicates(subset=["x", "metric", "split"], keep="last").sort_values("x")


def training_curves_chart(
    records: Iterable[Mapping[str, Any]], *, height: int = 220, title: str | None = None
) -> alt.Chart | alt.HConcatChart:
    """Loss and accuracy side by side, train vs validation, against (fractional) epochs."""
    frame = progress_frame(records)
    if frame.empty:
        return _empty_chart("No progress logged yet", height)
    split_scale = alt.Scale(domain=["train", "val"], range=["#2f6fde", "#ff7f0e"])

    def panel(metric: str, axis_title: str, axis_format: str) -> alt.Chart:
        data = frame[frame["metric"] == metric]
        base = alt.Chart(data).encode(
            x=alt.X("x:Q", title="Epoch", scale=alt.Scale(zero=True), axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=axis_title, axis=alt.Axis(format=axis_format), scale=alt.Scale(zero=False)),
            color=alt.Color("split:N", scale=split_scale, title="Data",
                            legend=alt.Legend(labelExpr="datum.label == 'val' ? 'validation' : 'training'")),
            tooltip=[alt.Tooltip("x:Q", title="Epoch", format=".2f"), alt.Tooltip("split:N", title="Data"),
                     alt.Tooltip("value:Q", title=axis_title, format=".4f")],
        )
        # Points as well as lines: a curve of one point (the first progress line of an epoch, or a 1-epoch
        # run's) has no line to draw. Validation exists once per epoch, so its points are bigger.
        return (base.mark_line() + base.mark_point(filled=True, size=40).transform_filter(alt.datum.split == "val")
                + base.mark_point(filled=True, size=12).transform_filter(alt.datum.split == "train")
                ).properties(height=height, width=300, title=axis_title)

    chart = alt.hconcat(panel("loss", "Loss", ".3f"), panel("accuracy", "Accuracy", ".0%")).resolve_scale(
        color="shared"
    )
    return chart.properties(title=title) if title else chart


def students_chart(buckets: pd.DataFrame, *, height: int = SMALL_HEIGHT, title: str | None = None) -> alt.Chart:
    """An online class: students connected and faces in view, each second (counts only, never expressions)."""
    if buckets.empty or "students" not in buckets.columns:
        return _empty_chart("No data yet", height)
    frame = _with_time(buckets)[["t", "students", "faces"]].copy()
    frame["students"] = pd.to_numeric(frame["students"], errors="coerce")
    long = frame.melt(id_vars="t", var_name="what", value_name="count").dropna(subset=["count"])
    long["what"] = long["what"].map({"students": "Students connected", "faces": "Faces in view"})
    chart = (
        alt.Chart(long)
        .mark_line(interpolate="step-after")
        .encode(
            x=_time_axis(),
            y=alt.Y("count:Q", title="Count", axis=alt.Axis(tickMinStep=1), scale=alt.Scale(zero=True)),
            color=alt.Color("what:N", title=None, scale=alt.Scale(range=["#2f6fde", "#7f7f7f"]),
                            legend=alt.Legend(orient="bottom")),
            tooltip=[alt.Tooltip("t:T", title="Time", format=TIME_FORMAT), alt.Tooltip("what:N", title="What"),
                     alt.Tooltip("count:Q", title="Count")],
        )
        .properties(height=height, width="container")
    )
    return _finish(chart, title)


# --- several sessions: Compare and the class trend ---------------------------------------------------------

SESSION_COLORS = ["#2f6fde", "#ff7f0e"]
TREND_DATE_FORMAT = "%d %b"
TREND_Y_EXTENT = 90  # px for every trend chart's y axis, so the three stacked charts' dates line up


def compare_distribution_chart(
    distributions: Mapping[str, pd.Series], *, bar_step: int = 16, title: str | None = None
) -> alt.Chart:
    """Two (or more) sessions' distributions as grouped bars: one group per emotion, every group labelled."""
    rows = [{"session": name, "emotion": e, "value": float(series.get(e, 0.0))}
            for name, series in distributions.items() for e in EMOTIONS]
    data = pd.DataFrame(rows)
    names = list(distributions)
    base = alt.Chart(data).encode(
        y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None, axis=alt.Axis(labelOverlap=False, labelPadding=6)),
        yOffset=alt.YOffset("session:N", sort=names),
        x=alt.X("value:Q", title="Share of faces", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1], nice=False)),
        tooltip=[alt.Tooltip("session:N", title="Session"), alt.Tooltip("emotion:N", title="Emotion"),
                 alt.Tooltip("value:Q", title="Share of faces", format=".1%")],
    )
    chart = (
        base.mark_bar().encode(color=alt.Color("session:N", sort=names, title="Session",
                                               scale=alt.Scale(domain=names, range=SESSION_COLORS[:len(names)]),
                                               legend=alt.Legend(orient="bottom", labelLimit=260)))
        + base.mark_text(align="left", dx=3, fontSize=10).encode(text=alt.Text("value:Q", format=".0%"))
    ).properties(height=alt.Step(bar_step), width="container")
    return _finish(chart, title)


def compare_timeline_chart(
    frames: Mapping[str, pd.DataFrame], *, height: int = SMALL_HEIGHT + 40, title: str | None = None,
    markers: pd.DataFrame | None = None,
) -> alt.Chart:
    """Negative share of several sessions over time from each one's start (t: seconds from its start).

    `markers` (t from its session's start, label): drawn like on every other timeline.
    """
    parts = []
    for name, frame in frames.items():
        if frame.empty:
            continue
        binned = downsample(frame)
        part = pd.DataFrame({"t": to_datetime(binned["t"]), "session": name,
                             "negative": pd.to_numeric(binned["negative_share"], errors="coerce").fillna(0.0)})
        parts.append(part)
    if not parts:
        return _empty_chart("No data", height)
    names = list(frames)
    chart = (
        alt.Chart(pd.concat(parts, ignore_index=True))
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("t:T", title="Time from the start", scale=alt.Scale(type="utc"),
                    axis=alt.Axis(format=VIDEO_TIME_FORMAT, labelAngle=0, tickCount=6)),
            y=alt.Y("negative:Q", title="Negative share", axis=alt.Axis(format="%", values=[0, 0.5, 1]),
                    scale=alt.Scale(domain=[0, 1], nice=False)),
            color=alt.Color("session:N", sort=names, title="Session",
                            scale=alt.Scale(domain=names, range=SESSION_COLORS[:len(names)]),
                            legend=alt.Legend(orient="bottom", labelLimit=260)),
            tooltip=[alt.Tooltip("session:N", title="Session"), _time_tooltip("video", title="From the start"),
                     alt.Tooltip("negative:Q", title="Negative share", format=".0%")],
        )
        .properties(height=height, width="container")
    )
    return _finish(_with_markers(chart, markers, "video"), title)


def _trend_x() -> alt.X:
    # Padding keeps the first and last session's marks whole at the plot's edges.
    return alt.X("held_at:T", title="Session date", scale=alt.Scale(padding=18),
                 axis=alt.Axis(format=TREND_DATE_FORMAT, labelAngle=0))


def _trend_tooltip(extra: list[alt.Tooltip]) -> list[alt.Tooltip]:
    return [alt.Tooltip("name:N", title="Session"),
            alt.Tooltip("held_at:T", title="Date", format="%Y-%m-%d %H:%M"), *extra]


def trend_mood_chart(trend: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """Each session's dominant mood, at its date (sessions without faces have none)."""
    data = trend.dropna(subset=["dominant"])
    if data.empty:
        return _empty_chart("No faces seen in these sessions")
    chart = (
        alt.Chart(data[["held_at", "name", "dominant"]])
        .mark_point(filled=True, size=140)
        .encode(
            x=_trend_x(),
            y=alt.Y("dominant:N", title="Dominant mood", sort=list(EMOTIONS), scale=alt.Scale(domain=list(EMOTIONS)),
                    axis=alt.Axis(labelOverlap=False, minExtent=TREND_Y_EXTENT)),
            color=alt.Color("dominant:N", scale=EMOTION_SCALE, legend=None),
            tooltip=_trend_tooltip([alt.Tooltip("dominant:N", title="Dominant mood")]),
        )
        .properties(height=alt.Step(20), width="container")
    )
    return _finish(chart, title)


def trend_negative_chart(trend: pd.DataFrame, *, height: int = SMALL_HEIGHT, title: str | None = None) -> alt.Chart:
    """Each session's negative share (faces-weighted over the session), at its date."""
    data = trend.dropna(subset=["dominant"])
    if data.empty:
        return _empty_chart("No faces seen in these sessions", height)
    base = alt.Chart(data[["held_at", "name", "negative_share"]]).encode(
        x=_trend_x(),
        y=alt.Y("negative_share:Q", title="Negative share",
                axis=alt.Axis(format="%", values=[0, 0.5, 1], minExtent=TREND_Y_EXTENT),
                scale=alt.Scale(domain=[0, 1], nice=False)),
        tooltip=_trend_tooltip([alt.Tooltip("negative_share:Q", title="Negative share", format=".0%")]),
    )
    chart = (base.mark_line(color="#555555") + base.mark_point(filled=True, color="#555555", size=60)).properties(
        height=height, width="container")
    return _finish(chart, title)


def trend_attention_chart(trend: pd.DataFrame, *, height: int = SMALL_HEIGHT, title: str | None = None) -> alt.Chart:
    """How often each session needed attention, at its date."""
    if trend.empty:
        return _empty_chart("No sessions", height)
    top = max(1, int(trend["attention_events"].max()))
    chart = (
        alt.Chart(trend[["held_at", "name", "attention_events"]])
        .mark_bar(color=ATTENTION_COLOR, size=10)
        .encode(
            x=_trend_x(),
            y=alt.Y("attention_events:Q", title="Times",
                    axis=alt.Axis(format="d", values=_count_ticks(top), minExtent=TREND_Y_EXTENT),
                    scale=alt.Scale(domain=[0, top], nice=False)),
            tooltip=_trend_tooltip([alt.Tooltip("attention_events:Q", title="Needs attention (times)")]),
        )
        .properties(height=height, width="container")
    )
    return _finish(chart, title)
