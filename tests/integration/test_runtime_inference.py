"""The plain-ONNX model wrapper on a real onnxruntime session."""

from __future__ import annotations

import time

import numpy as np
import pytest

from slmops.runtime.inference import INLINE_MAX_ELEMENTS, OnnxInferenceModel
from slmops.runtime.slowdown import Slowdown
from tests.serving.fixtures import fixture_plain_model  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def test_only_small_fast_requests_run_on_the_event_loop(plain_model):
    model = OnnxInferenceModel(
        plain_model, threads=1, execution_provider="cpu", slowdown=Slowdown()
    )
    small = {"INPUT0": np.ones((1, 16), np.float32)}
    assert not model.runs_inline(small), "nothing is inline before warm-up measured the model"
    model.warm_up()
    assert model.runs_inline(small)
    rows = INLINE_MAX_ELEMENTS // 16 + 1
    assert not model.runs_inline({"INPUT0": np.ones((rows, 16), np.float32)})


def test_slowed_down_model_never_runs_on_the_event_loop(plain_model):
    model = OnnxInferenceModel(
        plain_model, threads=1, execution_provider="cpu", slowdown=Slowdown(3.0)
    )
    model.warm_up()
    assert not model.runs_inline({"INPUT0": np.ones((1, 16), np.float32)})


def test_slowdown_stretches_each_run(plain_model):
    """The test hook makes a run take about F times as long (sleep of the measured extra)."""
    x = {"INPUT0": np.ones((256, 16), np.float32)}
    normal = OnnxInferenceModel(
        plain_model, threads=1, execution_provider="cpu", slowdown=Slowdown()
    )
    slowed = OnnxInferenceModel(
        plain_model, threads=1, execution_provider="cpu", slowdown=Slowdown(200.0)
    )

    def best_of(model: OnnxInferenceModel) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            model.run(x)
            times.append(time.perf_counter() - started)
        return min(times)

    # a ratio within one run, not a timing threshold: 200x asked, well over 20x seen
    assert best_of(slowed) > 20 * best_of(normal)
    np.testing.assert_array_equal(normal.run(x)["OUTPUT0"], slowed.run(x)["OUTPUT0"])
