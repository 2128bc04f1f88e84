from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmops.runtime.stop_sequences import StopSequenceMatcher

pytestmark = pytest.mark.unit


def _run(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    matcher = StopSequenceMatcher(stops)
    out = "".join(matcher.feed(piece) for piece in pieces)
    return out + matcher.flush(), matcher.stopped


def test_stop_sequence_split_across_pieces_is_found_and_dropped():
    assert _run(["Hello wo", "rld. E", "ND here"], ["END"]) == ("Hello world. ", True)


def test_possible_start_of_a_stop_sequence_is_held_back_then_released():
    matcher = StopSequenceMatcher(["</s>"])
    assert matcher.feed("a <") == "a "
    assert matcher.feed("/x") == "</x"
    assert not matcher.stopped


def test_earliest_of_several_stop_sequences_wins():
    assert _run(["one two three"], ["three", "two"]) == ("one ", True)


def test_nothing_after_a_stop():
    matcher = StopSequenceMatcher(["x"])
    matcher.feed("ax")
    assert matcher.feed("more") == ""
    assert matcher.flush() == ""


@given(
    pieces=st.lists(st.text(alphabet="abc", max_size=4), max_size=12),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=3),
)
def test_output_is_the_text_up_to_the_first_stop(pieces, stops):
    text = "".join(pieces)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = text[: min(hits)] if hits else text
    assert _run(pieces, stops) == (expected, bool(hits))
