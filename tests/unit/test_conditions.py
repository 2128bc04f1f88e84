from __future__ import annotations

import pytest

from slmops.domain import conditions as cond

pytestmark = pytest.mark.unit


def test_transition_time_only_changes_with_status() -> None:
    first = cond.set_condition(
        [], "Ready", "False", reason="A", message="a", generation=1, now="2026-01-01T00:00:00Z"
    )
    same = cond.set_condition(
        first, "Ready", "False", reason="B", message="b", generation=2, now="2026-01-02T00:00:00Z"
    )
    flipped = cond.set_condition(
        same, "Ready", "True", reason="C", message="c", generation=2, now="2026-01-03T00:00:00Z"
    )
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert same[0].reason == "B" and same[0].observed_generation == 2
    assert flipped[0].last_transition_time == "2026-01-03T00:00:00Z"


def test_first_sight_is_idempotent_per_generation() -> None:
    seen = cond.first_sight([], 3, "2026-01-01T00:00:00Z")
    assert [(c.type, c.status) for c in seen] == [("Ready", "Unknown"), ("Reconciling", "True")]
    assert all(c.observed_generation == 3 for c in seen)
    assert cond.first_sight(seen, 3, "2026-02-01T00:00:00Z") == seen
    assert cond.first_sight(seen, 4, "2026-02-01T00:00:00Z")[0].observed_generation == 4


def test_order_is_ready_reconciling_stalled_then_alphabetical() -> None:
    conditions: list[cond.Condition] = []
    for kind in ("VariantsBuilt", "Stalled", "Ready", "SourceVerified", "Reconciling"):
        conditions = cond.set_condition(
            conditions, kind, "False", reason="R", message="", generation=1, now="t"
        )
    assert [c.type for c in conditions] == [
        "Ready",
        "Reconciling",
        "Stalled",
        "SourceVerified",
        "VariantsBuilt",
    ]


def test_rfc3339() -> None:
    from datetime import UTC, datetime

    assert cond.now_rfc3339(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == (
        "2026-01-02T03:04:05Z"
    )
