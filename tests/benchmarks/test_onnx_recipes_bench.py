"""Plain-ONNX recipes on all-MiniLM-L6-v2 (real weights): size, latency and output agreement
of each recipe against fp32, measured in the same run on the same inputs, interleaved.

Results go to docs/benchmarks.md ("Plain ONNX recipes"). Expectations from ANCHORS (26 M
decoder on this kind of machine): dynamic int8 about 4x smaller and faster than fp32; fp16
half the size with no CPU speedup; static QDQ no gain on CPU. Checked after the table is
written, on ratios only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slmops.api.v1alpha1.slmmodel import OptimizeRecipe
from slmops.optimize.onnx_quantize import (
    OnnxEvaluation,
    evaluate_onnx,
    optimize_onnx,
    sample_inputs,
)
from tests.integration.minilm_onnx import minilm_onnx
from tests.serving.benchmark_report import machine_description, write_section

pytestmark = pytest.mark.benchmark

__all__ = ["minilm_onnx"]

RECIPES: dict[str, dict[str, object]] = {
    "fp32, graph optimization all": {"precision": "fp32"},
    "int8 dynamic, per-channel": {"precision": "int8"},
    "int8 static QDQ (16 calibration samples)": {
        "precision": "int8",
        "int8": {"mode": "static", "calibrationSamples": 16},
    },
    "int4 MatMulNBits, block 32, accuracy 4": {"precision": "int4"},
    "fp16 (fp32 inputs/outputs)": {"precision": "fp16"},
}


def test_plain_onnx_recipes(minilm_onnx: Path, tmp_path: Path) -> None:
    load_at_start = os.getloadavg()[0]
    samples = sample_inputs(minilm_onnx, 16, sequence=64, seed=7)
    results: dict[str, OnnxEvaluation] = {}
    for index, (label, fields) in enumerate(RECIPES.items()):
        out = optimize_onnx(
            minilm_onnx,
            tmp_path / str(index),
            OptimizeRecipe.model_validate(fields),
            calibration=samples,
        )
        results[label] = evaluate_onnx(minilm_onnx, out, samples[:8], repeats=20)

    rows = [
        "| recipe | size MiB | smaller | latency ms (fp32 ms) | speedup | output cosine "
        "| argmax agreement |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in results.items():
        rows.append(
            f"| {label} | {r.size_bytes / 2**20:.1f} | {r.compression_ratio:.2f}x | "
            f"{r.latency_ms:.1f} ({r.reference_latency_ms:.1f}) | {r.speedup:.2f}x | "
            f"{r.mean_cosine:.4f} | {r.argmax_agreement:.3f} |"
        )
    body = "\n".join(
        [
            "all-MiniLM-L6-v2 encoder (22.7 M parameters, real weights), exported to ONNX, one",
            "inference of batch 1 x 64 tokens; median of 20 runs, fp32 and variant interleaved;",
            "agreement over 8 random inputs.",
            "Written by tests/benchmarks/test_onnx_recipes_bench.py.",
            f"Machine: {machine_description()}; 1-minute load average {load_at_start:.1f} at the",
            "start (absolute latencies move with load; the ratios are measured side by side).",
            "",
            *rows,
        ]
    )
    write_section("Plain ONNX recipes", body)

    dynamic = results["int8 dynamic, per-channel"]
    assert dynamic.compression_ratio > 3.5
    assert dynamic.speedup > 1.2, f"int8 dynamic is not faster than fp32: {dynamic}"
    assert dynamic.mean_cosine > 0.97
    fp16 = results["fp16 (fp32 inputs/outputs)"]
    assert 1.9 < fp16.compression_ratio < 2.1 and fp16.mean_cosine > 0.999
