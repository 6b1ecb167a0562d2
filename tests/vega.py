"""Lay out an Altair chart as Streamlit's browser frontend does, without a browser (vl-convert runs Vega).

Streamlit adds `autosize: fit` to a spec that sets none, sets the width to the container's, and
applies its own theme (larger paddings and fonts than Vega's defaults). Charts that looked right
in Vega's defaults lost labels in the app, so tests lay them out with the same three changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import vl_convert as vlc
from streamlit.elements.vega_charts import _prepare_vega_lite_spec

# Streamlit 1.67's chart theme (frontend CustomTheme), in px for its default light theme:
# fontSizes twoSm 12, sm 14, md 16; spacing twoXS 2, sm 8, lg 16.
STREAMLIT_THEME: dict[str, Any] = {
    "autosize": {"type": "fit", "contains": "padding"},
    "title": {"align": "left", "anchor": "start", "fontWeight": 600, "fontSize": 16, "orient": "top", "offset": 26},
    "axis": {"labelFontSize": 12, "titleFontSize": 14, "ticks": False, "domain": False, "labelFlush": True,
             "labelFlushOffset": 1, "labelBound": False, "labelLimit": 100, "titlePadding": 16,
             "labelPadding": 16, "labelSeparation": 2, "labelOverlap": True},
    "legend": {"labelFontSize": 14, "titleFontSize": 14, "titlePadding": 8, "labelPadding": 16,
               "columnPadding": 8, "rowPadding": 2, "padding": 8},
    "view": {"strokeWidth": 0, "stroke": "transparent", "continuousHeight": 350, "continuousWidth": 400},
    "bar": {"binSpacing": 2, "discreteBandSize": {"band": 0.85}},
    "axisDiscrete": {"grid": False},
    "axisTemporal": {"grid": False},
}
TITLE_CHAR_PX = 0.6  # a generous average glyph width, as a share of the font size


@dataclass(frozen=True)
class Label:
    text: str
    visible: bool


@dataclass(frozen=True)
class Axis:
    orient: str  # "x" or "y"
    labels: tuple[Label, ...]
    title: str | None

    @property
    def visible_labels(self) -> list[str]:
        return [label.text for label in self.labels if label.visible]


@dataclass(frozen=True)
class Scene:
    width: float
    height: float
    plot_width: float
    plot_height: float
    axes: tuple[Axis, ...]

    def axis(self, orient: str) -> Axis:
        matches = [a for a in self.axes if a.orient == orient and (a.labels or a.title)]
        assert matches, f"no {orient} axis with labels"
        return matches[0]

    def title_fits(self, orient: str = "y", font_px: float = 14) -> bool:
        """The axis title is no longer than the plot side it stands beside (else the browser cuts it)."""
        title = self.axis(orient).title or ""
        side = self.plot_height if orient == "y" else self.plot_width
        return len(title) * font_px * TITLE_CHAR_PX <= side


def streamlit_scene(chart: Any, container_width: int) -> Scene:
    """The laid-out chart as `st.altair_chart(chart, width="stretch")` shows it in a column this wide."""
    spec = _prepare_vega_lite_spec(chart.to_dict(), True)
    spec["width"] = container_width
    spec["config"] = {**STREAMLIT_THEME, **spec.get("config", {})}
    graph = vlc.vegalite_to_scenegraph(spec)
    root = graph["scenegraph"]["items"][0]
    axes = tuple(_axis(group) for group in _groups(root, "axis"))
    return Scene(graph["width"], graph["height"], root.get("width", 0), root.get("height", 0), axes)


def _marks(node: Any, role: str, marktype: str) -> list[dict]:
    """Every mark of this role and type below `node` (depth first)."""
    found: list[dict] = []
    if isinstance(node, dict):
        if node.get("role") == role and node.get("marktype") == marktype:
            found.append(node)
        children = node.values()
    else:
        children = node if isinstance(node, list) else []
    for value in children:
        if isinstance(value, dict | list):
            found += _marks(value, role, marktype)
    return found


def _groups(node: Any, role: str) -> list[dict]:
    return _marks(node, role, "group")


def _texts(node: Any, role: str) -> list[dict]:
    return [item for mark in _marks(node, role, "text") for item in mark.get("items", [])]


def _axis(group: dict) -> Axis:
    labels = tuple(Label(str(item.get("text")), item.get("opacity", 1) > 0) for item in _texts(group, "axis-label"))
    titles = _texts(group, "axis-title")
    title = str(titles[0].get("text")) if titles else None
    vertical = bool(titles) and abs(titles[0].get("angle", 0)) % 180 == 90
    if not titles:  # no title: a y axis's labels share one x
        vertical = len({item.get("x") for item in _texts(group, "axis-label")}) == 1 and len(labels) > 1
    return Axis("y" if vertical else "x", labels, title)
