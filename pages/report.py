"""A session report: one self-contained HTML file (no script, no link to anything) that prints to PDF.

Charts are the app's own Altair charts, drawn by Vega (vl-convert, offline) as inline SVG, so the
file opens anywhere without the internet and prints sharply. All user text is HTML-escaped.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import altair as alt
import pandas as pd
import vl_convert as vlc

from fer_core.emotions import EMOTIONS
from pages import charts
from pages.formatting import format_time
from pages.history_views import (
    SessionData,
    clock_text,
    duration_text,
    events_view,
    held_text,
    markers_view,
    model_text,
    settings_text,
)

CHART_WIDTH = 720  # px of plot: fits an A4 page in portrait with the default margins
RESPONSIBLE_USE = (
    "Facial expressions are weak evidence of what anyone feels, and the model inherits FER2013's label noise "
    "and demographic skew. These figures describe a class, not a person: they are not fit for grading, "
    "disciplining or judging anyone. Emotion recognition in educational institutions is prohibited in the EU "
    "(AI Act Art. 5(1)(f)). No video frame or face image was stored; faces carry anonymous numbers."
)

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1f2430; margin: 2rem auto; max-width: 820px; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; } h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem;
     border-bottom: 1px solid #d9dce3; padding-bottom: .2rem; }
.sub { color: #5c6270; margin: 0 0 1rem; } .note { font-size: .85rem; color: #5c6270; background: #f4f5f8;
     border-left: 3px solid #9aa1b1; padding: .5rem .75rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; margin: .3rem 0 .8rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e6e8ee; vertical-align: top; }
th { background: #f4f5f8; font-weight: 600; } table.meta th { width: 13rem; }
table.wide { font-size: .75rem; } table.wide th, table.wide td { padding: .2rem .3rem; }
.figures { display: flex; flex-wrap: wrap; gap: .75rem; margin: .5rem 0; }
.figure { border: 1px solid #e6e8ee; border-radius: 6px; padding: .5rem .75rem; min-width: 9rem; }
.figure .value { font-size: 1.3rem; font-weight: 600; } .figure .label { font-size: .8rem; color: #5c6270; }
.chart { margin: .25rem 0 1rem; break-inside: avoid; } .chart svg { max-width: 100%; height: auto; }
code { font-size: .85rem; word-break: break-all; }
@media print {
  @page { size: A4; margin: 14mm; }
  body { margin: 0; max-width: none; font-size: 10.5pt; }
  h2 { break-after: avoid; } table, .figures, .chart { break-inside: avoid; }
  .note { background: none; }
}
"""


def chart_svg(chart: Any, width: int = CHART_WIDTH) -> str:
    """An Altair chart as inline SVG, `width` px wide (a page has no container to fit)."""
    with alt.data_transformers.enable("default", max_rows=None):  # long sessions are binned, not refused
        spec = _fixed_width(chart.to_dict(), width)
    svg = vlc.vegalite_to_svg(spec)
    return f'<div class="chart">{svg}</div>'


def _fixed_width(node: Any, width: int) -> Any:
    if isinstance(node, dict):
        return {k: (width if k == "width" and v == "container" else _fixed_width(v, width)) for k, v in node.items()}
    if isinstance(node, list):
        return [_fixed_width(v, width) for v in node]
    return node


def _table(frame: pd.DataFrame, empty: str, css_class: str = "") -> str:
    if frame.empty:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _meta(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta"><tbody>{body}</tbody></table>'


def _figure(label: str, value: str) -> str:
    return f'<div class="figure"><div class="value">{html.escape(value)}</div>' \
           f'<div class="label">{html.escape(label)}</div></div>'


def track_summary(data: SessionData, tz: str) -> pd.DataFrame:
    tracks = data.tracks
    return pd.DataFrame({
        "Track": [f"#{int(n)}" for n in tracks["track"]],
        "First seen": [clock_text(t, data, tz) for t in tracks["first_t"]],
        "Last seen": [clock_text(t, data, tz) for t in tracks["last_t"]],
        "Seconds in view": tracks["seconds"].astype(int),
        "Dominant emotion": tracks["dominant_emotion"].astype(str),
        "Confidence": [f"{c:.0%}" for c in tracks["confidence"].astype(float)],
        **{e: [f"{p:.0%}" for p in tracks[f"p_{e}"].astype(float)] for e in EMOTIONS},
    })


def build_report(data: SessionData, tz: str = "UTC", generated_at: datetime | None = None) -> str:
    """The whole report as one HTML document."""
    row, provenance = data.row, data.provenance
    name = html.escape(str(row["name"]))
    generated = format_time(generated_at or datetime.now(UTC), tz)
    clock_note = ("Times are video time from the recording's first frame." if data.is_recording
                  else f"Times are clock times in {html.escape(tz)}.")
    attention_times = int((data.events["kind"] == "needs_attention").sum()) if len(data.events) else 0
    figures = [_figure("Duration", duration_text(row)), _figure("Faces seen (most at once)",
                                                                 str(int(row["faces_seen"] or 0))),
               _figure("Needs attention", f"{attention_times} time(s)"), _figure("Markers", str(len(data.markers)))]
    if data.faces_seen:
        distribution = data.distribution
        figures.insert(1, _figure("Dominant mood", f"{data.dominant} ({distribution[data.dominant]:.0%} of faces)"))
    meta = _meta([
        ("Class", html.escape(str(row["class_label"] or "–"))),
        ("Source", html.escape(str(row["source"]))),
        ("Held", html.escape(held_text(row, tz))),
        ("Analysed from", html.escape(format_time(row["started_at"], tz))),
        ("Duration", html.escape(duration_text(row))),
        ("Status", html.escape(str(row["status"]))),
        ("Frames analysed", str(int(row["frames_analysed"] or 0))),
    ])
    model = _meta([
        ("Model", html.escape(model_text(provenance))),
        ("Model file SHA-256", f"<code>{html.escape(provenance.model_sha256)}</code>" if provenance else "–"),
        ("Settings", html.escape(settings_text(provenance))),
    ])
    sections = [
        f"<h1>{name}</h1>",
        f'<p class="sub">ClassMood session report · generated {html.escape(generated)} · {clock_note}</p>',
        f'<p class="note">{html.escape(RESPONSIBLE_USE)}</p>',
        "<h2>Session</h2>", meta, f'<div class="figures">{"".join(figures)}</div>',
        "<h2>Model and settings</h2>", model,
    ]
    if data.faces_seen:
        buckets = data.on_clock(data.buckets)
        markers = data.on_clock(data.markers)
        events = data.on_clock(data.events, ("t", "t_start", "t_end"))
        sections += [
            "<h2>Timeline</h2>",
            chart_svg(charts.timeline_chart(buckets, clock=data.clock, markers=markers, title="Class mood")),
            chart_svg(charts.faces_chart(buckets, clock=data.clock, markers=markers, title="Faces in view")),
            chart_svg(charts.attention_chart(buckets, events, clock=data.clock, markers=markers,
                                             event_label_column="reason", title="Negative share and attention")),
            "<h2>Distribution</h2>",
            chart_svg(charts.distribution_chart(buckets, title="Overall (faces-weighted)"), width=CHART_WIDTH - 80),
        ]
    else:
        sections.append("<h2>Timeline</h2><p>No faces were seen in this session, so there is nothing to chart.</p>")
    sections += [
        "<h2>Attention events</h2>", _table(events_view(data, tz), "The class never needed attention."),
        "<h2>Lesson markers</h2>", _table(markers_view(data, tz), "No markers were dropped."),
        "<h2>Per-track summary</h2>",
        "<p>Anonymous track numbers, new in every session; probabilities are means over the seconds a face "
        "was in view.</p>",
        _table(track_summary(data, tz), "No face tracks were stored for this session.", "wide"),
    ]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{name} · ClassMood report</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def report_file_name(data: SessionData) -> str:
    return f"classmood-session-{data.session_id}-report.html"
