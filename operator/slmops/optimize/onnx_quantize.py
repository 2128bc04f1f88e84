"""Recipes for plain ONNX models (no KV cache, no genai_config): onnxruntime.quantization.

What each precision means here, and why (measured on a 2-core x86 with VNNI):
- int8 dynamic (`quantize_dynamic`): weights int8, activations quantized at run time; the
  best CPU recipe (about 4x smaller, 2x faster). Per-channel scales keep accuracy. When one
  initializer feeds both a Gather (embedding lookup) and a MatMul/Gemm (a tied LM head),
  only MatMul/Gemm are quantized: a quantized Gather there made decoding slower than fp32.
- int8 static (`quantize_static`, QDQ format): activation ranges calibrated on sample
  inputs. No gain on CPU, but it is what NPUs and some accelerators need.
- int4 (`MatMulNBitsQuantizer`): block-wise weight-only int4 (MatMulNBits), block size and
  accuracy level (4 = int8 compute, fastest on VNNI CPUs) from the recipe.
- fp16: onnx float16 conversion keeping fp32 inputs/outputs; half the size, no CPU speedup.
- bf16 is not offered for plain ONNX models (no CPU kernels); the recipe fails clearly.
- graph optimization: the model is optimized offline at the recipe's level
  (SessionOptions.optimized_model_filepath) on the build machine, which is the variant's
  hardware class. fp16 models are saved without it: on CPU, onnxruntime wraps fp16 nodes in
  Casts and constant folding would turn the weights back to fp32.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from slmops.api.v1alpha1.slmmodel import Int4Options, Int8Options, OptimizeRecipe

MODEL_FILE = "model.onnx"

_GRAPH_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}

# Beyond this the protobuf limit (2 GiB) is near: write weights as external data.
_EXTERNAL_DATA_THRESHOLD = 1 << 30

Inputs = dict[str, np.ndarray[Any, Any]]


class OnnxRecipeError(Exception):
    """The recipe cannot be applied to this model (unsupported precision, bad model...)."""


def model_size_bytes(model_path: Path) -> int:
    """Size of the model file plus the external data files it references."""
    model = onnx.load(str(model_path), load_external_data=False)
    locations: set[str] = {
        str(entry.value)
        for tensor in _initializers(model)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    external = sum((model_path.parent / location).stat().st_size for location in locations)
    return model_path.stat().st_size + external


def _initializers(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from model.graph.initializer
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from attribute.g.initializer


def check_model(model_path: Path) -> None:
    """Raise unless `model_path` is an ONNX model onnxruntime can load."""
    onnx.checker.check_model(str(model_path))
    ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def parameter_count(model_path: Path) -> int:
    """Elements in the model's initializers (its weights)."""
    model = onnx.load(str(model_path), load_external_data=False)
    total = 0
    for tensor in _initializers(model):
        count = 1
        for dim in tensor.dims:
            count *= int(dim)
        total += count
    return total


def tied_embeddings(model: onnx.ModelProto) -> set[str]:
    """Initializers used both as a Gather's data (embedding) and by a MatMul/Gemm (LM head),
    directly or through a Transpose."""
    initializers = {t.name for t in model.graph.initializer}
    transposed = {
        node.output[0]: node.input[0]
        for node in model.graph.node
        if node.op_type == "Transpose" and node.input[0] in initializers
    }
    gathered = {
        node.input[0]
        for node in model.graph.node
        if node.op_type == "Gather" and node.input[0] in initializers
    }
    multiplied = {
        transposed.get(name, name)
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm")
        for name in node.input
    }
    return gathered & multiplied


def _symbolic_to_concrete(dims: Sequence[Any], batch: int, sequence: int) -> list[int]:
    shape = []
    for index, dim in enumerate(dims):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        else:
            shape.append(batch if index == 0 else sequence)
    return shape


def _vocabulary_size(model: onnx.ModelProto, input_name: str) -> int:
    """Rows of the embedding table an integer input indexes (so random ids stay in range)."""
    tables = {t.name: t for t in model.graph.initializer}
    sizes = [
        tables[node.input[0]].dims[0]
        for node in model.graph.node
        if node.op_type == "Gather" and node.input[1] == input_name and node.input[0] in tables
    ]
    return int(min(sizes)) if sizes else 100


def sample_inputs(
    model_path: Path, count: int, *, seed: int = 0, batch: int = 1, sequence: int = 16
) -> list[Inputs]:
    """Random but valid inputs for any model: token ids within the embedding table, masks of
    ones, zero token types, normal floats. Used for calibration and evaluation."""
    model = onnx.load(str(model_path), load_external_data=False)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    samples: list[Inputs] = []
    for _ in range(count):
        sample: Inputs = {}
        for model_input in session.get_inputs():
            shape = _symbolic_to_concrete(model_input.shape, batch, sequence)
            name = model_input.name.lower()
            if "int" in model_input.type:
                dtype = np.int32 if "int32" in model_input.type else np.int64
                if "mask" in name:
                    sample[model_input.name] = np.ones(shape, dtype=dtype)
                elif "type" in name:
                    sample[model_input.name] = np.zeros(shape, dtype=dtype)
                elif "position" in name:
                    sample[model_input.name] = np.broadcast_to(
                        np.arange(shape[-1], dtype=dtype), shape
                    ).copy()
                else:
                    high = _vocabulary_size(model, model_input.name)
                    sample[model_input.name] = rng.integers(0, high, shape, dtype=dtype)
            elif "float16" in model_input.type:
                sample[model_input.name] = rng.standard_normal(shape).astype(np.float16)
            else:
                sample[model_input.name] = rng.standard_normal(shape).astype(np.float32)
        samples.append(sample)
    return samples


class _SampleReader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, samples: Sequence[Inputs]) -> None:
        self._samples = iter(samples)

    def get_next(self) -> Inputs | None:
        return next(self._samples, None)


def _needs_external_data(model_path: Path) -> bool:
    return model_size_bytes(model_path) > _EXTERNAL_DATA_THRESHOLD


def _quantize_int8(
    source: Path, out: Path, options: Int8Options, calibration: Sequence[Inputs] | None
) -> None:
    model = onnx.load(str(source), load_external_data=False)
    tied = tied_embeddings(model)
    op_types = ["MatMul", "Gemm"] if tied else None
    external = _needs_external_data(source)
    if options.mode == "dynamic":
        quantize_dynamic(
            source,
            out,
            op_types_to_quantize=op_types,
            per_channel=options.per_channel,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
        )
        return
    samples = calibration or sample_inputs(source, options.calibration_samples)
    # MatMul/Gemm only, asymmetric activations: on a BERT encoder, quantizing every op (or
    # symmetric activations) cut output cosine similarity from 0.86 to 0.70 or below.
    quantize_static(
        source,
        out,
        _SampleReader(samples[: options.calibration_samples]),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=options.per_channel,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        use_external_data_format=external,
        extra_options={"ActivationSymmetric": False},
    )


def _quantize_int4(source: Path, out: Path, options: Int4Options) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    if options.algorithm not in ("default", "rtn"):
        raise OnnxRecipeError(
            f"int4 algorithm {options.algorithm!r} is offered for language models "
            "(onnxruntime-genai); plain ONNX models support 'default' or 'rtn'"
        )
    model = onnx.load(str(source))
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=options.block_size,
        is_symmetric=True,
        accuracy_level=options.accuracy_level,
        algo_config=DefaultWeightOnlyQuantConfig(
            block_size=options.block_size,
            is_symmetric=True,
            accuracy_level=options.accuracy_level,
        ),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(
        str(out), use_external_data_format=_needs_external_data(source)
    )


def _convert_fp16(source: Path, out: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(out), save_as_external_data=_needs_external_data(source))


def _optimize_offline(source: Path, out: Path, level: str, provider: str) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = _GRAPH_LEVELS[level]
    options.optimized_model_filepath = str(out)
    if _needs_external_data(source):
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", f"{out.name}.data"
        )
    ort.InferenceSession(str(source), options, providers=[provider])


def provider_for(recipe: OptimizeRecipe) -> str:
    provider = _PROVIDERS[recipe.execution_provider]
    if provider not in ort.get_available_providers():
        raise OnnxRecipeError(
            f"execution provider {recipe.execution_provider} ({provider}) is not available on "
            f"this build node (available: {', '.join(ort.get_available_providers())}); "
            "schedule the build onto a node of that hardware class"
        )
    return provider


def optimize_onnx(
    source: Path,
    out_dir: Path,
    recipe: OptimizeRecipe,
    *,
    calibration: Sequence[Inputs] | None = None,
) -> Path:
    """Apply `recipe` to the ONNX model `source`; returns out_dir/model.onnx (plus its
    external data, if any, beside it)."""
    if recipe.pruning is not None:
        raise OnnxRecipeError(
            "pruning is offered for Hugging Face checkpoints (applied before export), "
            "not for plain ONNX models"
        )
    provider = provider_for(recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / MODEL_FILE
    with tempfile.TemporaryDirectory(prefix="slmops-onnx-", dir=out_dir.parent) as tmp:
        stage = Path(tmp) / MODEL_FILE
        precision = recipe.precision
        if precision == "fp32":
            stage = source
        elif precision == "int8":
            _quantize_int8(source, stage, recipe.int8 or Int8Options(), calibration)
        elif precision == "int4":
            _quantize_int4(source, stage, recipe.int4 or Int4Options())
        elif precision == "fp16":
            _convert_fp16(source, stage)
        else:
            raise OnnxRecipeError(
                f"precision {precision} is not offered for plain ONNX models "
                "(use fp32, fp16, int8 or int4)"
            )
        level = recipe.graph_optimization_level
        if level == "disabled" or precision == "fp16":
            _copy_model(stage, out)
        else:
            _optimize_offline(stage, out, level, provider)
    return out


def _copy_model(source: Path, out: Path) -> None:
    model = onnx.load(str(source))
    external = model.ByteSize() > _EXTERNAL_DATA_THRESHOLD
    if external:
        onnx.save(model, str(out), save_as_external_data=True, location=f"{out.name}.data")
    else:
        for tensor in _initializers(model):
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
        onnx.save(model, str(out))


@dataclass(frozen=True)
class OnnxEvaluation:
    """A variant measured against the fp32 reference on the same machine, same inputs."""

    size_bytes: int
    reference_size_bytes: int
    max_abs_diff: float
    mean_cosine: float
    argmax_agreement: float
    latency_ms: float
    reference_latency_ms: float
    samples: int

    @property
    def compression_ratio(self) -> float:
        return self.reference_size_bytes / self.size_bytes

    @property
    def speedup(self) -> float:
        return self.reference_latency_ms / self.latency_ms


def _session(model_path: Path, provider: str) -> ort.InferenceSession:
    # Default threading (all cores), as the model server runs it.
    return ort.InferenceSession(str(model_path), providers=[provider])


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator else 1.0


def evaluate_onnx(
    reference: Path,
    variant: Path,
    samples: Sequence[Inputs],
    *,
    repeats: int = 5,
    provider: str = "CPUExecutionProvider",
) -> OnnxEvaluation:
    """Output agreement (first output: max abs diff, mean cosine per sample, argmax agreement
    over the last axis), size, and median latency per inference, interleaving reference and
    variant runs so that machine noise hits both alike."""
    if not samples:
        raise OnnxRecipeError("evaluation needs at least one input sample")
    reference_session = _session(reference, provider)
    variant_session = _session(variant, provider)
    max_diff = 0.0
    cosines: list[float] = []
    agreements: list[float] = []
    for sample in samples:
        expected = np.asarray(reference_session.run(None, sample)[0], dtype=np.float32)
        actual = np.asarray(variant_session.run(None, sample)[0], dtype=np.float32)
        if expected.shape != actual.shape:
            raise OnnxRecipeError(
                f"variant output shape {actual.shape} differs from reference {expected.shape}"
            )
        max_diff = max(max_diff, float(np.max(np.abs(expected - actual))))
        for row_expected, row_actual in zip(expected, actual, strict=True):
            cosines.append(_cosine(row_expected.ravel(), row_actual.ravel()))
        agreements.append(
            float(np.mean(np.argmax(expected, axis=-1) == np.argmax(actual, axis=-1)))
        )
    reference_times: list[float] = []
    variant_times: list[float] = []
    timing_sample = samples[0]
    reference_session.run(None, timing_sample)  # warm up allocators and caches
    variant_session.run(None, timing_sample)
    for _ in range(max(repeats, 1)):
        for session, times in (
            (reference_session, reference_times),
            (variant_session, variant_times),
        ):
            start = time.perf_counter()
            session.run(None, timing_sample)
            times.append((time.perf_counter() - start) * 1000.0)
    return OnnxEvaluation(
        size_bytes=model_size_bytes(variant),
        reference_size_bytes=model_size_bytes(reference),
        max_abs_diff=max_diff,
        mean_cosine=statistics.fmean(cosines),
        argmax_agreement=statistics.fmean(agreements),
        latency_ms=statistics.median(variant_times),
        reference_latency_ms=statistics.median(reference_times),
        samples=len(samples),
    )
