"""What the instructor sees of a running online class: class-level figures only, read from the database.

Every server process of the class writes its sums there, so any process can build this view.
"Now" is the last `now_window_s` completed seconds. Emotion figures (timeline, distribution,
needs attention) are shown only for seconds to which at least the class's `min_students` students
contributed (the privacy floor); otherwise the view says how many contribute and why nothing is shown.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from fer_core.aggregate import buckets_frame
from fer_core.class_store import ClassInfo, ClassStore
from fer_core.classroom import class_buckets
from fer_core.emotions import EMOTIONS

# Longer than a live stream's 3 s (aggregate.NOW_WINDOW_S): a student is analysed about twice a
# second, so 5 s gives each student some 10 samples, and a student who drops out for a moment still counts.
NOW_WINDOW_S = 5
# Seconds are complete in the database about this long after they ended (settle + flush).
FRESH_S = 4


@dataclass(frozen=True)
class ClassView:
    info: ClassInfo
    min_students: int
    students_now: int  # connected browsers (streaming in the last few seconds)
    contributors_now: int  # students whose faces were seen in the latest complete second
    faces_now: int
    now_window_s: int
    buckets: pd.DataFrame  # per second; emotion columns NaN/0 where the floor was not met
    distribution_now: pd.Series | None  # share of each expression over "now"; None while withheld
    attention: bool
    attention_reason: str | None

    @property
    def emotions_shown(self) -> bool:
        return self.distribution_now is not None

    @property
    def withheld_reason(self) -> str:
        if self.contributors_now == 0:
            return "No student's face is in view right now, so there are no expressions to show."
        return (f"Expressions are shown only when at least {self.min_students} students' faces are in view; "
                f"right now {self.contributors_now} {'is' if self.contributors_now == 1 else 'are'}. "
                "This keeps any single student's expressions from being singled out.")


def read_class_view(
    class_store: ClassStore,
    class_id: int,
    *,
    window_s: int,
    negative_share: float,
    attention_seconds: int,
    member_timeout_s: float,
    now: float | None = None,
    now_window_s: int = NOW_WINDOW_S,
) -> ClassView:
    now = time.time() if now is None else now
    info = class_store.get_class(class_id)
    since = int(now) - window_s - attention_seconds
    seconds = [s for s in class_store.class_seconds(class_id, since) if s.t <= now]
    buckets, _events, _ = class_buckets(seconds, min_students=info.min_students, negative_share=negative_share,
                                        attention_seconds=attention_seconds)
    recent = [s for s in seconds if s.t >= now - FRESH_S - now_window_s]
    latest = recent[-1] if recent and recent[-1].t >= now - FRESH_S - 1 else None
    window = [s for s in recent if latest is not None and s.t > latest.t - now_window_s]
    shown = [s for s in window if s.shown(info.min_students)]
    distribution = None
    if latest is not None and latest.shown(info.min_students) and shown:
        counts = np.sum([s.label_counts for s in shown], axis=0).astype(np.float64)
        distribution = pd.Series(counts / counts.sum(), index=list(EMOTIONS), name="value")
    last_bucket = buckets[-1] if buckets else None
    attention = bool(distribution is not None and last_bucket is not None and last_bucket.needs_attention
                     and latest is not None and last_bucket.t == latest.t)
    reason = None
    if attention:
        negative = [b.negative_share for b in itertools.takewhile(lambda b: b.needs_attention, reversed(buckets))]
        reason = (f"For {len(negative)} s more than {negative_share:.0%} of the faces in view have shown "
                  f"a negative expression (on average {np.mean(negative):.0%}).")
    frame = buckets_frame([b for b in buckets if b.t >= int(now) - window_s])
    frame["students"] = [b.students for b in buckets if b.t >= int(now) - window_s]
    return ClassView(
        info=info,
        min_students=info.min_students,
        students_now=class_store.students_connected(class_id, member_timeout_s=member_timeout_s,
                                                    now=datetime.fromtimestamp(now, tz=UTC)),
        contributors_now=latest.contributors if latest else 0,
        faces_now=latest.faces if latest else 0,
        now_window_s=now_window_s,
        buckets=frame,
        distribution_now=distribution,
        attention=attention,
        attention_reason=reason,
    )
