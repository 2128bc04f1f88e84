"""Plain-ONNX recipes on a real encoder (all-MiniLM-L6-v2, real weights) with real
onnxruntime: each recipe must change the graph the way it claims and keep outputs close."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest

from slmops.api.v1alpha1.slmmodel import OptimizeRecipe
from slmops.optimize.onnx_quantize import (
    OnnxRecipeError,
    evaluate_onnx,
    model_size_bytes,
    optimize_onnx,
    parameter_count,
    sample_inputs,
    tied_embeddings,
)
from tests.integration.minilm_onnx import minilm_onnx

pytestmark = pytest.mark.integration

__all__ = ["minilm_onnx"]


@pytest.fixture(scope="module")
def samples(minilm_onnx: Path) -> list[dict[str, object]]:
    return sample_inputs(minilm_onnx, 4, sequence=24)  # type: ignore[return-value]


def op_counts(path: Path) -> Counter[str]:
    return Counter(
        node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node
    )


def recipe(**fields: object) -> OptimizeRecipe:
    return OptimizeRecipe.model_validate(fields)


def test_the_reference_is_a_real_encoder(minilm_onnx: Path) -> None:
    assert 22_000_000 < parameter_count(minilm_onnx) < 24_000_000
    # BERT has no LM head: its word embedding feeds only a Gather.
    assert tied_embeddings(onnx.load(str(minilm_onnx))) == set()


def test_int8_dynamic_per_channel(minilm_onnx: Path, tmp_path: Path, samples: list) -> None:
    out = optimize_onnx(minilm_onnx, tmp_path / "int8", recipe(precision="int8"))
    ops = op_counts(out)
    assert ops["DynamicQuantizeLinear"] + ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] > 0
    result = evaluate_onnx(minilm_onnx, out, samples, repeats=3)
    assert result.compression_ratio > 3.5
    assert result.mean_cosine > 0.97
    assert result.samples == 4


def test_int8_static_qdq_with_calibration(minilm_onnx: Path, tmp_path: Path, samples: list) -> None:
    out = optimize_onnx(
        minilm_onnx,
        tmp_path / "int8s",
        recipe(
            precision="int8",
            int8={"mode": "static", "calibrationSamples": 4},
            graphOptimizationLevel="disabled",
        ),
        calibration=samples,
    )
    ops = op_counts(out)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    result = evaluate_onnx(minilm_onnx, out, samples, repeats=1)
    # Static mode quantizes MatMul/Gemm only: the fp32 word embedding keeps it under 2x.
    assert result.compression_ratio > 1.4
    # Honest numbers: static QDQ on random calibration is far less accurate than dynamic.
    assert 0.0 < result.mean_cosine <= 1.0


def test_int4_weight_only(minilm_onnx: Path, tmp_path: Path, samples: list) -> None:
    out = optimize_onnx(
        minilm_onnx,
        tmp_path / "int4",
        recipe(precision="int4", int4={"blockSize": 32, "accuracyLevel": 4}),
    )
    nbits = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) >= 36  # 6 layers x (q, k, v, out, 2 MLP)
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
    assert attributes["block_size"] == 32 and attributes["bits"] == 4
    assert attributes["accuracy_level"] == 4
    result = evaluate_onnx(minilm_onnx, out, samples, repeats=1)
    # The word embedding (a Gather) stays fp32, so less than 4x overall.
    assert result.compression_ratio > 1.5
    assert result.mean_cosine > 0.9


def test_fp16_keeps_io_types(minilm_onnx: Path, tmp_path: Path, samples: list) -> None:
    out = optimize_onnx(minilm_onnx, tmp_path / "fp16", recipe(precision="fp16"))
    model = onnx.load(str(out))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert 1.9 < model_size_bytes(minilm_onnx) / model_size_bytes(out) < 2.1
    assert evaluate_onnx(minilm_onnx, out, samples, repeats=1).mean_cosine > 0.999


def test_graph_optimization_level_is_applied_offline(minilm_onnx: Path, tmp_path: Path) -> None:
    plain = optimize_onnx(
        minilm_onnx, tmp_path / "off", recipe(precision="fp32", graphOptimizationLevel="disabled")
    )
    fused = optimize_onnx(
        minilm_onnx, tmp_path / "all", recipe(precision="fp32", graphOptimizationLevel="all")
    )
    assert op_counts(plain) == op_counts(minilm_onnx)
    # Fusions (LayerNormalization, Gelu, attention) shrink the node count.
    assert sum(op_counts(fused).values()) < sum(op_counts(plain).values())


def test_unsupported_recipes_fail_clearly(minilm_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(OnnxRecipeError, match="bf16 is not offered"):
        optimize_onnx(minilm_onnx, tmp_path / "bf16", recipe(precision="bf16"))
    with pytest.raises(OnnxRecipeError, match="not available on this build node"):
        optimize_onnx(
            minilm_onnx, tmp_path / "cuda", recipe(precision="int8", executionProvider="cuda")
        )
    with pytest.raises(OnnxRecipeError, match="pruning"):
        optimize_onnx(
            minilm_onnx,
            tmp_path / "pruned",
            recipe(precision="int8", pruning={"method": "unstructured", "sparsity": 0.5}),
        )


def tiny_language_model(path: Path, *, tied: bool) -> Path:
    """ids -> Gather(embedding) -> MatMul(W) -> MatMul(head): with `tied`, the head is the
    embedding transposed (one initializer feeding Gather and MatMul), as in GPT-2 or Llama
    with tie_word_embeddings."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    vocab, hidden = 256, 64
    embedding = rng.standard_normal((vocab, hidden)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(embedding, "embedding"),
        numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["h0"]),
        helper.make_node("MatMul", ["h0", "w"], ["h1"]),
    ]
    if tied:
        nodes.append(helper.make_node("Transpose", ["embedding"], ["head"], perm=[1, 0]))
    else:
        head = rng.standard_normal((hidden, vocab)).astype(np.float32)
        initializers.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("MatMul", ["h1", "head"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny-lm",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_tied_embedding_keeps_its_gather_in_fp32(tmp_path: Path) -> None:
    tied = tiny_language_model(tmp_path / "tied.onnx", tied=True)
    untied = tiny_language_model(tmp_path / "untied.onnx", tied=False)
    assert tied_embeddings(onnx.load(str(tied))) == {"embedding"}
    assert tied_embeddings(onnx.load(str(untied))) == set()
    int8 = recipe(precision="int8", graphOptimizationLevel="disabled")
    tied_out = optimize_onnx(tied, tmp_path / "tied-int8", int8)
    untied_out = optimize_onnx(untied, tmp_path / "untied-int8", int8)

    def gather_table(path: Path) -> str:
        (gather,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Gather"]
        return str(gather.input[0])

    # Untied: the embedding table is quantized too (dequantized after the lookup) ...
    assert gather_table(untied_out) == "embedding_quantized"
    # ... tied: only the matmuls are; the lookup reads the fp32 table.
    assert gather_table(tied_out) == "embedding"
    # The hidden matmul is quantized; the head's weight is a Transpose output, not an
    # initializer, so the quantizer leaves it in fp32.
    assert op_counts(tied_out)["MatMulInteger"] == 1
    samples = sample_inputs(tied, 2, sequence=8)
    assert (
        evaluate_onnx(tied, tmp_path / "tied-int8" / "model.onnx", samples, repeats=1).mean_cosine
        > 0.98
    )
