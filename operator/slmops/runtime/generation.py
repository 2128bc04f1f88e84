"""Text generation on onnxruntime-genai. Its Generator owns the KV cache and the search; this
module only feeds it the request's knobs, turns tokens into text, applies stop sequences and
checks for cancellation between tokens. Everything here runs in a worker thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime_genai as og

from slmops.runtime.generate_request import GenerationRequest
from slmops.runtime.inference import TensorSpec
from slmops.runtime.protocol import ProtocolError
from slmops.runtime.slowdown import Slowdown
from slmops.runtime.stop_sequences import StopSequenceMatcher

GENAI_CONFIG = "genai_config.json"

FINISH_STOP = "stop"  # end-of-sequence token or a stop sequence
FINISH_LENGTH = "length"  # max_tokens or the context length
FINISH_CANCELLED = "cancelled"  # the client went away


@dataclass
class GenerationResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    generated_tokens: int
    # perf_counter() when each token came out, for time-to-first-token and inter-token latency
    token_times: list[float] = field(default_factory=list)


def is_generation_model(path: Path) -> bool:
    return path.is_dir() and (path / GENAI_CONFIG).is_file()


class TextGenerationModel:
    platform = "onnxruntime_genai"
    inputs = (TensorSpec("text_input", "BYTES", (1,)),)
    outputs = (TensorSpec("text_output", "BYTES", (1,)),)

    def __init__(
        self, path: Path, threads: int, execution_provider: str, slowdown: Slowdown
    ) -> None:
        self.path = path
        config = og.Config(str(path))
        config.clear_providers()
        if execution_provider == "cuda":
            if not og.is_cuda_available():
                raise RuntimeError(
                    "--execution-provider cuda asked for, but this onnxruntime-genai build has "
                    "no CUDA support (install onnxruntime-genai-cuda)"
                )
            config.append_provider("cuda")
        if threads:
            config.overlay(
                json.dumps(
                    {
                        "model": {
                            "decoder": {
                                "session_options": {
                                    "intra_op_num_threads": threads,
                                    "inter_op_num_threads": 1,
                                }
                            }
                        }
                    }
                )
            )
        self._model = og.Model(config)
        self._tokenizer = og.Tokenizer(self._model)
        self._eos_token_ids = frozenset(int(t) for t in self._tokenizer.eos_token_ids)
        genai_config = json.loads((path / GENAI_CONFIG).read_text())
        self.context_length = int(genai_config["model"]["context_length"])
        self.vocab_size = int(genai_config["model"]["vocab_size"])
        self.providers = [execution_provider.upper() + "ExecutionProvider"]
        self._slowdown = slowdown

    def encode_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids, or ProtocolError if the model cannot take it; separate from
        `generate` so a stream can refuse a bad prompt with 400 before it starts."""
        prompt_ids = [int(t) for t in self._tokenizer.encode(request.prompt)]
        if not prompt_ids:
            raise ProtocolError("'text_input' encodes to no tokens")
        if len(prompt_ids) >= self.context_length:
            raise ProtocolError(
                f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                f"{self.context_length}"
            )
        return prompt_ids

    def generate(
        self,
        request: GenerationRequest,
        cancelled: threading.Event,
        on_text: Callable[[str], None] | None = None,
        prompt_ids: list[int] | None = None,
    ) -> GenerationResult:
        if prompt_ids is None:
            prompt_ids = self.encode_prompt(request)
        prompt_tokens = len(prompt_ids)
        max_length = min(prompt_tokens + request.max_tokens, self.context_length)
        params = og.GeneratorParams(self._model)
        search: dict[str, float | int | bool] = {"max_length": max_length, "batch_size": 1}
        if request.temperature == 0:
            search["do_sample"] = False
        else:
            search.update(do_sample=True, temperature=request.temperature, top_p=request.top_p)
            # onnxruntime-genai refuses top_k above the vocabulary and has no "no cut" value,
            # so "no cut" is the whole vocabulary.
            search["top_k"] = min(request.top_k or self.vocab_size, self.vocab_size)
        if request.seed is not None:
            search["random_seed"] = request.seed
        params.set_search_options(**search)
        generator = og.Generator(self._model, params)
        stream = self._tokenizer.create_stream()
        matcher = StopSequenceMatcher(request.stop)
        pieces: list[str] = []
        token_times: list[float] = []
        finish = FINISH_LENGTH
        started = time.perf_counter()
        generator.append_tokens(np.array(prompt_ids, dtype=np.int32))
        self._slowdown.stretch(time.perf_counter() - started)
        while True:
            if cancelled.is_set():
                finish = FINISH_CANCELLED
                break
            if generator.is_done():
                finish = FINISH_LENGTH if generator.token_count() >= max_length else FINISH_STOP
                break
            step_started = time.perf_counter()
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            now = time.perf_counter()
            self._slowdown.stretch(now - step_started)
            token_times.append(time.perf_counter())
            if token in self._eos_token_ids:
                # The eos token itself is not text the user asked for.
                finish = FINISH_STOP
                break
            text = matcher.feed(stream.decode(token))
            if text:
                pieces.append(text)
                if on_text is not None:
                    on_text(text)
            if matcher.stopped:
                finish = FINISH_STOP
                break
        tail = matcher.flush()
        if tail and finish != FINISH_CANCELLED:
            pieces.append(tail)
            if on_text is not None:
                on_text(tail)
        return GenerationResult(
            text="".join(pieces),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            generated_tokens=len(token_times),
            token_times=token_times,
        )

    def warm_up(self) -> None:
        """A short greedy run, so the first real request does not pay for lazy allocation."""
        self.generate(
            GenerationRequest(prompt="warm up", max_tokens=4, temperature=0),
            threading.Event(),
        )
