"""The body of Triton's generate extension (`/v2/models/{m}/generate[_stream]`), validated.

Triton maps top-level keys to model inputs and `parameters` to request parameters; backends
differ on which knob lives where (vLLM takes `max_tokens` at the top, TensorRT-LLM takes
`stop_words`), so every knob is accepted in either place, the top level winning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slmops.runtime.protocol import ProtocolError

DEFAULT_MAX_TOKENS = 64
MAX_STOP_SEQUENCES = 16


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    # 0 means greedy search
    temperature: float = 1.0
    # 0 means no top-k cut
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


def parse_generation_request(document: Mapping[str, Any]) -> GenerationRequest:
    parameters = document.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")

    def knob(*names: str) -> Any:
        for source in (document, parameters):
            for name in names:
                if name in source and source[name] is not None:
                    return source[name]
        return None

    prompt = knob("text_input", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ProtocolError("'text_input' must be a non-empty string")

    max_tokens = _integer(knob("max_tokens", "max_new_tokens"), "max_tokens", DEFAULT_MAX_TOKENS)
    if max_tokens < 1:
        raise ProtocolError("'max_tokens' must be >= 1")
    temperature = _number(knob("temperature"), "temperature", 1.0)
    if temperature < 0:
        raise ProtocolError("'temperature' must be >= 0")
    top_k = _integer(knob("top_k"), "top_k", 0)
    if top_k < 0:
        raise ProtocolError("'top_k' must be >= 0")
    top_p = _number(knob("top_p"), "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise ProtocolError("'top_p' must be in (0, 1]")
    seed_value = knob("seed", "random_seed")
    seed = None if seed_value is None else _integer(seed_value, "seed", 0)

    raw_stop = knob("stop", "stop_words", "stop_sequences")
    if raw_stop is None:
        stop: tuple[str, ...] = ()
    elif isinstance(raw_stop, str):
        stop = (raw_stop,)
    elif isinstance(raw_stop, list) and all(isinstance(s, str) for s in raw_stop):
        stop = tuple(raw_stop)
    else:
        raise ProtocolError("'stop' must be a string or a list of strings")
    if len(stop) > MAX_STOP_SEQUENCES or any(not s for s in stop):
        raise ProtocolError(f"'stop' takes 1..{MAX_STOP_SEQUENCES} non-empty strings")

    return GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop=stop,
        seed=seed,
    )


def _integer(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"'{name}' must be an integer, got {value!r}")
    return value


def _number(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"'{name}' must be a number, got {value!r}")
    return float(value)
