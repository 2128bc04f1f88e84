"""Measure an exported language-model variant against its fp32 reference, on this machine.

Quality comes from onnxruntime running the exported `model.onnx` directly over held-out windows
with an empty KV cache: that yields the logits of every position, which onnxruntime-genai's
generator does not expose, so perplexity and greedy next-token agreement are computed over the
same tokens for both models. Speed comes from `og.Generator` (greedy search, fixed prompt,
exactly `max_new_tokens` tokens), which is how the variant is served. Reference and variant runs
alternate, so that a neighbour stealing CPU slows both alike and the ratio stays fair.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from slmops.domain.qualification import LMMeasurements
from slmops.optimize.genai_export import GENAI_CONFIG_FILENAME, MODEL_FILENAME, directory_size_bytes

TokenIds = npt.NDArray[np.int64]

DEFAULT_WINDOW_TOKENS = 256
DEFAULT_MAX_WINDOWS = 24
PROMPT_TOKENS = 32
_MIN_WINDOW_TOKENS = 16


class EvaluationError(RuntimeError):
    """The model could not be evaluated (unloadable, fails at run time, bad held-out text)."""


def measured_on() -> str:
    """`<node> (<cpu model>, <n> cores)`: the node comes from `NODE_NAME` (the downward API in
    a build Job), so the number in status says which node's hardware produced it."""
    node = os.environ.get("NODE_NAME") or socket.gethostname()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{node} ({cpu}, {os.cpu_count()} cores)"


def _genai_model_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / GENAI_CONFIG_FILENAME
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["model"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{model_dir} is not an onnxruntime-genai export: {exc}") from exc
    return config


def _load_genai_model(model_dir: Path) -> Any:
    import onnxruntime_genai as og

    try:
        return og.Model(str(model_dir))
    except Exception as exc:
        raise EvaluationError(f"onnxruntime-genai cannot load {model_dir}: {exc}") from exc


def tokenize(model_dir: Path, text: str) -> TokenIds:
    """Token ids of `text` with the export's own tokenizer (the one it will be served with)."""
    import onnxruntime_genai as og

    tokenizer = og.Tokenizer(_load_genai_model(model_dir))
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def heldout_windows(
    token_ids: TokenIds,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
    max_windows: int = DEFAULT_MAX_WINDOWS,
) -> TokenIds:
    """Evenly spaced, non-overlapping windows [n, window_tokens] over the held-out tokens.

    Text shorter than one window becomes a single shorter window, as long as it has enough
    tokens for a perplexity to mean something.
    """
    total = len(token_ids)
    if total < _MIN_WINDOW_TOKENS:
        raise EvaluationError(
            f"held-out text has only {total} tokens; at least {_MIN_WINDOW_TOKENS} are needed "
            "to measure perplexity"
        )
    if total < window_tokens:
        return token_ids[np.newaxis, :]
    available = total // window_tokens
    picks = np.linspace(0, available - 1, num=min(max_windows, available)).round().astype(int)
    picks = np.unique(picks)
    return np.stack([token_ids[i * window_tokens : (i + 1) * window_tokens] for i in picks])


class _LogitsSession:
    """onnxruntime over the exported decoder: full logits for one window, empty KV cache."""

    def __init__(self, model_dir: Path) -> None:
        import onnxruntime as ort

        config = _genai_model_config(model_dir)
        decoder = config.get("decoder", {})
        self._head_size = int(decoder.get("head_size", 0))
        try:
            self._session = ort.InferenceSession(
                str(model_dir / MODEL_FILENAME), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EvaluationError(
                f"onnxruntime cannot load {model_dir / MODEL_FILENAME}: {exc}"
            ) from exc
        self._inputs = self._session.get_inputs()

    def logits(self, ids: TokenIds) -> npt.NDArray[np.float32]:
        length = len(ids)
        feed: dict[str, Any] = {}
        for spec in self._inputs:
            if spec.name == "input_ids":
                feed[spec.name] = ids[np.newaxis, :]
            elif spec.name == "attention_mask":
                feed[spec.name] = np.ones((1, length), dtype=np.int64)
            elif spec.name == "position_ids":
                feed[spec.name] = np.arange(length, dtype=np.int64)[np.newaxis, :]
            elif spec.name.startswith("past_key_values."):
                dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
                kv_heads = spec.shape[1] if isinstance(spec.shape[1], int) else 1
                head = spec.shape[3] if isinstance(spec.shape[3], int) else self._head_size
                feed[spec.name] = np.zeros((1, kv_heads, 0, head), dtype=dtype)
            else:
                raise EvaluationError(f"unexpected model input {spec.name!r}")
        try:
            (logits,) = self._session.run(["logits"], feed)
        except Exception as exc:
            raise EvaluationError(f"onnxruntime failed running the model: {exc}") from exc
        return np.asarray(logits[0], dtype=np.float32)


@dataclass(frozen=True)
class QualityMeasurement:
    """Held-out perplexity and the greedy prediction at every scored position."""

    perplexity: float
    predictions: npt.NDArray[np.int64]
    tokens_scored: int


def measure_quality(model_dir: Path, windows: TokenIds) -> QualityMeasurement:
    session = _LogitsSession(model_dir)
    total_nll = 0.0
    scored = 0
    predictions: list[npt.NDArray[np.int64]] = []
    for window in windows:
        logits = session.logits(window)[:-1].astype(np.float64)
        targets = window[1:]
        peak = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[:, 0]
        total_nll += float((log_norm - logits[np.arange(len(targets)), targets]).sum())
        scored += len(targets)
        predictions.append(logits.argmax(axis=-1).astype(np.int64))
    perplexity = float(np.exp(total_nll / scored))
    if not np.isfinite(perplexity):
        raise EvaluationError(f"{model_dir}: perplexity is not finite (the model outputs NaN/inf)")
    return QualityMeasurement(perplexity, np.concatenate(predictions), scored)


def next_token_agreement(variant: QualityMeasurement, reference: QualityMeasurement) -> float:
    """Share of held-out positions where both models' greedy next token is the same."""
    if variant.predictions.shape != reference.predictions.shape:
        raise EvaluationError("variant and reference were scored on different held-out tokens")
    return float((variant.predictions == reference.predictions).mean())


@dataclass(frozen=True)
class SpeedMeasurement:
    """Medians over repeated greedy generations (after one warm-up)."""

    time_to_first_token_ms: float
    tokens_per_second: float
    new_tokens: int
    repeats: int


class _GenerationRunner:
    def __init__(self, model_dir: Path, prompt: TokenIds, new_tokens: int) -> None:
        import onnxruntime_genai as og

        self._og = og
        self._model = _load_genai_model(model_dir)
        self._prompt = prompt
        self._new_tokens = new_tokens
        context = int(_genai_model_config(model_dir).get("context_length", 0))
        if context and len(prompt) + new_tokens > context:
            raise EvaluationError(
                f"prompt ({len(prompt)} tokens) + maxNewTokens ({new_tokens}) exceeds the "
                f"model's context length {context}"
            )
        self.ttft_ms: list[float] = []
        self.tokens_per_second: list[float] = []

    def run(self, record: bool = True) -> None:
        og = self._og
        total = len(self._prompt) + self._new_tokens
        params = og.GeneratorParams(self._model)
        # min_length = max_length: exactly `new_tokens` tokens even if the model would stop,
        # so every run (and both models) do the same amount of work.
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
        try:
            generator = og.Generator(self._model, params)
            started = time.perf_counter()
            generator.append_tokens(self._prompt)
            generator.generate_next_token()
            first = time.perf_counter()
            produced = 1
            while not generator.is_done():
                generator.generate_next_token()
                produced += 1
            finished = time.perf_counter()
        except Exception as exc:
            raise EvaluationError(f"onnxruntime-genai failed generating: {exc}") from exc
        if record:
            self.ttft_ms.append((first - started) * 1000.0)
            if produced > 1:
                self.tokens_per_second.append((produced - 1) / (finished - first))

    def result(self) -> SpeedMeasurement:
        return SpeedMeasurement(
            time_to_first_token_ms=statistics.median(self.ttft_ms),
            tokens_per_second=statistics.median(self.tokens_per_second or [float("nan")]),
            new_tokens=self._new_tokens,
            repeats=len(self.ttft_ms),
        )


def measure_speeds(
    model_dirs: list[Path], prompt: TokenIds, new_tokens: int, repeats: int
) -> list[SpeedMeasurement]:
    """Time every model, one run of each in turn, `repeats` rounds after a warm-up round."""
    if new_tokens < 2:
        raise EvaluationError("maxNewTokens must be at least 2 to measure tokens/s")
    runners = [_GenerationRunner(d, prompt, new_tokens) for d in model_dirs]
    for runner in runners:
        runner.run(record=False)
    for _ in range(repeats):
        for runner in runners:
            runner.run()
    return [runner.result() for runner in runners]


@dataclass(frozen=True)
class VariantEvaluation:
    """Everything measured for one variant next to its fp32 reference."""

    size_bytes: int
    reference_size_bytes: int
    perplexity: float
    reference_perplexity: float
    next_token_agreement: float
    time_to_first_token_ms: float
    tokens_per_second: float
    reference_time_to_first_token_ms: float
    reference_tokens_per_second: float
    tokens_scored: int
    new_tokens: int
    repeats: int
    measured_on: str

    def measurements(self) -> LMMeasurements:
        return LMMeasurements(
            size_bytes=self.size_bytes,
            reference_size_bytes=self.reference_size_bytes,
            perplexity=self.perplexity,
            reference_perplexity=self.reference_perplexity,
            next_token_agreement=self.next_token_agreement,
            tokens_per_second=self.tokens_per_second,
            reference_tokens_per_second=self.reference_tokens_per_second,
        )


@dataclass(frozen=True)
class HeldoutSet:
    """Held-out windows and the speed prompt, tokenized once with the reference's tokenizer."""

    windows: TokenIds
    prompt: TokenIds

    @classmethod
    def from_text(
        cls,
        reference_dir: Path,
        text: str,
        window_tokens: int = DEFAULT_WINDOW_TOKENS,
        max_windows: int = DEFAULT_MAX_WINDOWS,
    ) -> HeldoutSet:
        ids = tokenize(reference_dir, text)
        windows = heldout_windows(ids, window_tokens, max_windows)
        return cls(windows, ids[: min(PROMPT_TOKENS, len(ids))])


def evaluate_variant(
    variant_dir: Path,
    reference_dir: Path,
    heldout: HeldoutSet,
    *,
    max_new_tokens: int,
    repeats: int,
    reference_quality: QualityMeasurement | None = None,
) -> VariantEvaluation:
    """Evaluate `variant_dir` against `reference_dir` (both onnxruntime-genai exports).

    `reference_quality` may be passed in when several variants share one reference; speed is
    always measured afresh, side by side with the variant.
    """
    reference = reference_quality or measure_quality(reference_dir, heldout.windows)
    variant = measure_quality(variant_dir, heldout.windows)
    variant_speed, reference_speed = measure_speeds(
        [variant_dir, reference_dir], heldout.prompt, max_new_tokens, repeats
    )
    return VariantEvaluation(
        size_bytes=directory_size_bytes(variant_dir),
        reference_size_bytes=directory_size_bytes(reference_dir),
        perplexity=variant.perplexity,
        reference_perplexity=reference.perplexity,
        next_token_agreement=next_token_agreement(variant, reference),
        time_to_first_token_ms=variant_speed.time_to_first_token_ms,
        tokens_per_second=variant_speed.tokens_per_second,
        reference_time_to_first_token_ms=reference_speed.time_to_first_token_ms,
        reference_tokens_per_second=reference_speed.tokens_per_second,
        tokens_scored=variant.tokens_scored,
        new_tokens=max_new_tokens,
        repeats=variant_speed.repeats,
        measured_on=measured_on(),
    )
