"""The online class engine without a model or a browser: join codes, per-second sums, the privacy floor,
the micro-batching classifier, the class tables, and the view the instructor gets."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from fer_core import join_code
from fer_core.batching import BatchingClassifier
from fer_core.class_store import AlreadyInClass, ClassClosed, ClassFull, ClassStore
from fer_core.class_view import read_class_view
from fer_core.classroom import ClassAccumulator, ClassSecond, class_buckets, merge_seconds
from fer_core.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from fer_core.store import Store
from tests.doubles import FakeClassifier, onehot

T0 = 1_800_000_000


def faces(*labels: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(track_id=i, probs=onehot(label)) for i, label in enumerate(labels)]


# --- join codes ---------------------------------------------------------------------------------


def test_codes_have_at_least_40_bits_and_no_look_alike_characters() -> None:
    assert join_code.entropy_bits() >= 40
    assert not set("0O1IL") & set(join_code.ALPHABET)
    codes = {join_code.new_code() for _ in range(2000)}
    assert len(codes) == 2000 and all(len(c) == join_code.CODE_LENGTH for c in codes)


def test_a_typed_code_is_normalised_and_bad_ones_say_why() -> None:
    code = join_code.new_code()
    shown = join_code.display(code)
    assert "-" in shown and join_code.normalise(f"  {shown.lower()} ") == code
    assert join_code.normalise(shown.replace("-", " ")) == code
    with pytest.raises(join_code.JoinCodeError, match="never contain 0, O, 1, I or L"):
        join_code.normalise("ABCD-EFGH-I0")
    with pytest.raises(join_code.JoinCodeError, match="10 characters; this one has 4"):
        join_code.normalise("ABCD")
    with pytest.raises(join_code.JoinCodeError, match="contains '<'"):
        join_code.normalise("<script>")
    with pytest.raises(join_code.JoinCodeError, match="Enter the join code"):
        join_code.normalise("   ")


# --- per-second sums ------------------------------------------------------------------------------


def test_the_accumulator_sums_students_faces_and_labels_per_second() -> None:
    acc = ClassAccumulator(settle_s=1.0)
    acc.add(1, T0 + 0.1, faces("happy", "sad"))
    acc.add(1, T0 + 0.6, faces("happy"))
    acc.add(2, T0 + 0.5, faces("happy"))
    acc.frame_seen(3, T0 + 0.7)  # connected, no analysed frame this second
    acc.add(4, T0 + 0.8, [])  # analysed, no face
    assert acc.drain(T0 + 1.5) == []  # not settled yet
    (second,) = acc.drain(T0 + 2.1)
    assert (second.t, second.students, second.contributors, second.frames) == (T0, 4, 2, 4)
    assert second.faces == 3  # stream 1's best frame had 2 faces, stream 2's had 1
    assert second.observations == 4
    assert second.label_counts[EMOTION_INDEX["happy"]] == 3 and second.label_counts[EMOTION_INDEX["sad"]] == 1
    late = T0 + 0.9  # a frame analysed after its second was handed out counts in the next one
    acc.add(1, late, faces("fear"))
    (next_second,) = acc.drain(T0 + 5)
    assert next_second.t == T0 + 1 and next_second.label_counts[EMOTION_INDEX["fear"]] == 1


def second(t: int, contributors: int, label: str = "sad", per: int = 1, students: int | None = None) -> ClassSecond:
    counts = [0] * NUM_EMOTIONS
    counts[EMOTION_INDEX[label]] = contributors * per
    sums = [0.0] * NUM_EMOTIONS
    sums[EMOTION_INDEX[label]] = 0.9 * contributors * per
    return ClassSecond(t, students or contributors, contributors, contributors, contributors * per,
                       contributors * per, tuple(sums), tuple(counts))


def test_processes_add_up_and_the_privacy_floor_withholds_emotions_below_k() -> None:
    merged = merge_seconds([second(T0, 3), second(T0, 2), second(T0 + 1, 4)])
    assert [(s.t, s.contributors) for s in merged] == [(T0, 5), (T0 + 1, 4)]
    buckets, _events, summary = class_buckets(merged, min_students=5, negative_share=0.5, attention_seconds=3)
    shown, withheld = buckets
    assert shown.shares[EMOTION_INDEX["sad"]] == 1.0 and shown.students == 5
    assert all(np.isnan(withheld.mean_probs)) and sum(withheld.shares) == 0.0
    assert withheld.faces == 4 and withheld.students == 4  # counts stay, expressions do not
    assert summary.dominant_emotion == "sad" and summary.faces_seen == 5


def test_needs_attention_counts_only_seconds_above_the_floor() -> None:
    seconds = [second(T0 + k, 6) for k in range(4)] + [second(T0 + 4, 2)] + [second(T0 + 5 + k, 6) for k in range(2)]
    buckets, events, _ = class_buckets(seconds, min_students=5, negative_share=0.5, attention_seconds=3)
    assert [b.needs_attention for b in buckets] == [False, False, True, True, False, False, False]
    assert [(e.t_start, e.t_end) for e in events] == [(T0, None), (T0, T0 + 4)]


# --- the shared classifier ---------------------------------------------------------------------------


def test_batching_merges_concurrent_calls_and_each_caller_gets_its_own_rows() -> None:
    inner = FakeClassifier(label=None)
    batching = BatchingClassifier(inner, window_ms=50)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 255, (k % 3 + 1, 48, 48, 1)).astype(np.float32) for k in range(12)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(inputs))

    def call(k: int) -> None:
        barrier.wait()
        results[k] = batching.predict(inputs[k])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for k, faces_in in enumerate(inputs):
        np.testing.assert_allclose(results[k], inner.predict(faces_in))
    stats = batching.stats()
    assert stats.requests == 12 and stats.faces == sum(len(x) for x in inputs)
    assert stats.batches < 12 and max(inner.batch_sizes[: stats.batches]) > 3  # calls were merged
    batching.close()
    with pytest.raises(RuntimeError, match="closed"):
        batching.predict(inputs[0])


def test_a_model_error_reaches_every_caller_of_the_batch_and_the_worker_goes_on() -> None:
    class Broken(FakeClassifier):
        fail = True

        def _predict(self, faces: np.ndarray) -> np.ndarray:
            if self.fail:
                raise ValueError("bad model")
            return super()._predict(faces)

    inner = Broken()
    batching = BatchingClassifier(inner, window_ms=1)
    with pytest.raises(ValueError, match="bad model"):
        batching.predict(np.zeros((2, 48, 48, 1), np.float32))
    inner.fail = False
    assert batching.predict(np.zeros((2, 48, 48, 1), np.float32)).shape == (2, NUM_EMOTIONS)
    batching.close()


# --- the class tables ----------------------------------------------------------------------------------


@pytest.fixture
def classes(backend: str, database_url) -> ClassStore:
    """On each backend: the class tables are where several server processes meet (PostgreSQL)."""
    store = Store(database_url(backend))
    yield ClassStore(store)
    store.dispose()


def open_class(classes: ClassStore, **kw) -> object:
    options = {"min_students": 2, "max_students": 3, "code_ttl_s": 3600.0, **kw}
    return classes.open_class("Maths <b>9A</b>", "9A", **options)


def test_a_class_has_a_session_a_code_and_takes_each_browser_once(classes: ClassStore) -> None:
    info = open_class(classes)
    session = classes.store.get_session(info.session_id)
    assert session["source"] == "class" and session["name"] == "Maths <b>9A</b>"
    assert classes.find_class(info.code).id == info.id and classes.find_class("ZZZZZZZZZZ") is None
    first = classes.join(info.id, "browser-a", "p1", member_timeout_s=5)
    with pytest.raises(AlreadyInClass, match="another tab"):
        classes.join(info.id, "browser-a", "p2", member_timeout_s=5)
    classes.join(info.id, "browser-b", "p1", member_timeout_s=5)
    classes.join(info.id, "browser-c", "p2", member_timeout_s=5)
    with pytest.raises(ClassFull, match=r"full \(3 students\)"):
        classes.join(info.id, "browser-d", "p1", member_timeout_s=5)
    assert classes.students_connected(info.id, member_timeout_s=5) == 3
    classes.leave([first])
    assert classes.students_connected(info.id, member_timeout_s=5) == 2
    assert classes.join(info.id, "browser-a", "p2", member_timeout_s=5) == first  # back again: same row


def test_ended_and_expired_classes_refuse_joins(classes: ClassStore) -> None:
    info = open_class(classes)
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(ClassClosed, match="expired"):
        classes.join(info.id, "b", "p", member_timeout_s=5, now=later)
    assert classes.end_class(info.id) and not classes.end_class(info.id)
    with pytest.raises(ClassClosed, match="has ended"):
        classes.join(info.id, "b", "p", member_timeout_s=5)


def test_a_student_who_stops_sending_drops_out_of_the_count(classes: ClassStore) -> None:
    info = open_class(classes)
    start = datetime.now(UTC)
    member = classes.join(info.id, "b", "p", member_timeout_s=5, now=start)
    assert classes.students_connected(info.id, member_timeout_s=5, now=start + timedelta(seconds=4)) == 1
    assert classes.students_connected(info.id, member_timeout_s=5, now=start + timedelta(seconds=6)) == 0
    classes.heartbeat([member], start + timedelta(seconds=6))
    assert classes.students_connected(info.id, member_timeout_s=5, now=start + timedelta(seconds=7)) == 1


def test_two_processes_sums_meet_in_the_database_and_saving_keeps_only_class_level_rows(
    classes: ClassStore,
) -> None:
    info = open_class(classes)
    classes.join(info.id, "b1", "p1", member_timeout_s=5)
    classes.add_partials(info.id, "p1", [second(T0, 1, "happy"), second(T0 + 1, 1, "happy")])
    classes.add_partials(info.id, "p2", [second(T0, 2, "sad"), second(T0 + 1, 1, "sad")])
    merged = classes.class_seconds(info.id)
    assert [(s.t, s.contributors) for s in merged] == [(T0, 3), (T0 + 1, 2)]
    assert not classes.save_class(info.id, negative_share=0.5, attention_seconds=3)  # still open
    classes.end_class(info.id)
    assert classes.save_class(info.id, negative_share=0.5, attention_seconds=3)
    assert not classes.save_class(info.id, negative_share=0.5, attention_seconds=3)  # once only
    buckets = classes.store.session_buckets(info.session_id)
    assert list(buckets["students"]) == [3, 2] and list(buckets["faces"]) == [3, 2]
    assert buckets.loc[0, "share_sad"] == pytest.approx(2 / 3)
    session = classes.store.get_session(info.session_id)
    assert session["status"] == "completed" and session["dominant_emotion"] == "sad"
    assert classes.class_seconds(info.id) == []  # the per-process sums are gone
    with classes.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM class_members").scalar_one() == 0


def test_seconds_below_the_floor_weigh_nothing_in_a_saved_class_summary(classes: ClassStore) -> None:
    from fer_core.aggregate import current_distribution, overall_distribution

    info = open_class(classes, min_students=3)
    classes.add_partials(info.id, "p1", [second(T0, 4, "happy"), second(T0 + 1, 2, "sad")])
    classes.end_class(info.id)
    classes.save_class(info.id, negative_share=0.5, attention_seconds=3)
    buckets = classes.store.session_buckets(info.session_id)
    assert list(buckets["faces"]) == [4, 2] and buckets["p_sad"].isna().tolist() == [False, True]
    assert overall_distribution(buckets)["happy"] == pytest.approx(1.0)  # not diluted by the withheld second
    assert current_distribution(buckets)["happy"] == pytest.approx(1.0)


def test_upkeep_ends_idle_classes_and_marks_abandoned_ones_interrupted(classes: ClassStore) -> None:
    idle = open_class(classes)
    abandoned = open_class(classes)
    now = datetime.now(UTC)
    classes.add_partials(abandoned.id, "dead-process", [second(int(now.timestamp()) - 10, 2)])
    options = {"idle_s": 3600.0, "stale_s": 300.0, "save_grace_s": 3.0, "negative_share": 0.5,
               "attention_seconds": 10}
    assert classes.maintain(now=now, **options).saved == 0
    report = classes.maintain(now=now + timedelta(minutes=10), **options)
    assert report.interrupted == 1 and report.saved == 1
    assert classes.store.get_session(abandoned.session_id)["status"] == "interrupted"
    report = classes.maintain(now=now + timedelta(hours=2), **options)
    assert report.ended_idle == 1
    assert classes.get_class(idle.id).end_reason == "idle"
    assert classes.maintain(now=now + timedelta(hours=2, seconds=5), **options).saved == 1


def test_the_instructor_view_withholds_expressions_below_the_floor(classes: ClassStore) -> None:
    info = open_class(classes, min_students=3)
    now = time.time()
    t = int(now) - 3
    classes.add_partials(info.id, "p1", [second(t - 1, 3, "happy"), second(t, 2, "happy")])
    for k in range(2):
        classes.join(info.id, f"b{k}", "p1", member_timeout_s=5)
    options = {"window_s": 300, "negative_share": 0.5, "attention_seconds": 10, "member_timeout_s": 5.0}
    view = read_class_view(classes, info.id, now=now, **options)
    assert view.students_now == 2 and view.contributors_now == 2 and view.faces_now == 2
    assert not view.emotions_shown and "at least 3 students" in view.withheld_reason
    classes.add_partials(info.id, "p2", [second(t, 1, "sad")])
    view = read_class_view(classes, info.id, now=now, **options)
    assert view.emotions_shown and view.contributors_now == 3
    # "now" pools the last seconds above the floor: 3 happy, then 2 happy and 1 sad
    assert view.distribution_now["happy"] == pytest.approx(5 / 6) and set(view.distribution_now.index) == set(EMOTIONS)
    assert list(view.buckets["students"]) == [3, 3]
