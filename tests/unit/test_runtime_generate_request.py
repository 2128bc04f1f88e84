from __future__ import annotations

import pytest

from slmops.runtime.generate_request import GenerationRequest, parse_generation_request
from slmops.runtime.protocol import ProtocolError

pytestmark = pytest.mark.unit


def test_knobs_at_top_level_or_in_parameters():
    top = parse_generation_request(
        {"text_input": "hi", "max_tokens": 5, "temperature": 0, "stop": ["\n"]}
    )
    nested = parse_generation_request(
        {"text_input": "hi", "parameters": {"max_tokens": 5, "temperature": 0, "stop": "\n"}}
    )
    assert top == nested == GenerationRequest("hi", max_tokens=5, temperature=0.0, stop=("\n",))


def test_top_level_wins_over_parameters():
    parsed = parse_generation_request(
        {"text_input": "hi", "max_tokens": 3, "parameters": {"max_tokens": 9}}
    )
    assert parsed.max_tokens == 3


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "text_input"),
        ({"text_input": ""}, "text_input"),
        ({"text_input": 5}, "text_input"),
        ({"text_input": "x", "max_tokens": 0}, "max_tokens"),
        ({"text_input": "x", "max_tokens": "10"}, "integer"),
        ({"text_input": "x", "max_tokens": True}, "integer"),
        ({"text_input": "x", "temperature": -1}, "temperature"),
        ({"text_input": "x", "top_p": 0}, "top_p"),
        ({"text_input": "x", "top_p": 1.5}, "top_p"),
        ({"text_input": "x", "top_k": -3}, "top_k"),
        ({"text_input": "x", "stop": [1]}, "stop"),
        ({"text_input": "x", "stop": [""]}, "stop"),
        ({"text_input": "x", "parameters": []}, "parameters"),
    ],
)
def test_bad_knobs_are_rejected_with_their_name(document, message):
    with pytest.raises(ProtocolError, match=message):
        parse_generation_request(document)
