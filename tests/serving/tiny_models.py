"""Models for the model server's tests, made here and cached under ~/.cache/slmops/test-models.

- a random-weight Llama exported by onnxruntime-genai's model builder (fp32 and int8), with a
  byte-level BPE tokenizer trained on text every Debian machine has;
- a plain ONNX graph (MatMul + Add, input INPUT0 FP32 [-1, 16]) for v2 infer.

Random weights are enough: the server's job is the protocol, the Generator wiring and the
limits, not the quality of the text. Each artefact is built in a temporary directory and
renamed into place, so an interrupted build never looks cached.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_ROOT = Path(
    os.environ.get("SLMOPS_TEST_MODEL_CACHE", Path.home() / ".cache/slmops/test-models")
)
_FORMAT = 1


@dataclass(frozen=True)
class LlamaShape:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 512
    context_length: int = 256

    @property
    def key(self) -> str:
        return (
            f"llama-h{self.hidden_size}-i{self.intermediate_size}-l{self.num_hidden_layers}"
            f"-a{self.num_attention_heads}-kv{self.num_key_value_heads}-v{self.vocab_size}"
            f"-c{self.context_length}-f{_FORMAT}"
        )


TINY = LlamaShape()


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _corpus() -> str:
    texts = []
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if path.is_file():
            texts.append(path.read_text(errors="ignore"))
    corpus = "\n".join(texts)
    if len(corpus) < 10_000:
        raise RuntimeError("need some text in /usr/share/common-licenses to train a tokenizer")
    return corpus[:200_000]


def _make_checkpoint(shape: LlamaShape, out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([_corpus()], trainer)
    out.mkdir(parents=True)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "model_max_length": shape.context_length,
            }
        )
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.context_length,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out)


def genai_model(shape: LlamaShape = TINY, precision: str = "fp32") -> Path:
    """An onnxruntime-genai model directory for `shape` at `precision` (fp32, int8, int4)."""
    target = CACHE_ROOT / f"{shape.key}-{precision}"
    if (target / "genai_config.json").is_file():
        return target
    with _locked(shape.key):
        if (target / "genai_config.json").is_file():
            return target
        checkpoint = CACHE_ROOT / f"{shape.key}-checkpoint"
        if not (checkpoint / "config.json").is_file():
            staging = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=CACHE_ROOT))
            _make_checkpoint(shape, staging / "ckpt")
            (staging / "ckpt").rename(checkpoint)
            shutil.rmtree(staging, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{precision}-", dir=CACHE_ROOT))
        try:
            subprocess.run(
                [
                    sys.executable, "-m", "onnxruntime_genai.models.builder",
                    "-i", str(checkpoint), "-o", str(staging / "out"),
                    "-p", precision, "-e", "cpu",
                    "-c", str(staging / "builder-cache"),
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )  # fmt: skip
            (staging / "out").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def plain_onnx_model(features: int = 16) -> Path:
    """OUTPUT0 = INPUT0 @ W + b, INPUT0 FP32 [-1, features], W and b fixed random numbers;
    the weights are saved beside it so tests can compute the expected answer."""
    target = CACHE_ROOT / f"matmul-add-{features}-f{_FORMAT}"
    if (target / "model.onnx").is_file():
        return target
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight = rng.standard_normal((features, features)).astype(np.float32)
    bias = rng.standard_normal((features,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["INPUT0", "W"], ["product"]),
            helper.make_node("Add", ["product", "b"], ["OUTPUT0"]),
        ],
        "matmul_add",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", features])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".matmul-", dir=CACHE_ROOT))
    onnx.save(model, str(staging / "model.onnx"))
    np.save(staging / "weight.npy", weight)
    np.save(staging / "bias.npy", bias)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def demo_genai_model(precision: str) -> Path:
    """The project's demo model (trained once per machine and cached by the optimize
    package), exported by onnxruntime-genai's builder at `precision`, cached beside the test
    models under its version key."""
    from slmops.optimize.demo_model import DEMO_VERSION_KEY, ensure_demo_model
    from slmops.optimize.genai_export import GenaiExportOptions, export_with_genai_builder

    target = CACHE_ROOT / f"demo-{DEMO_VERSION_KEY}-{precision}"
    if (target / "genai_config.json").is_file():
        return target
    checkpoint = ensure_demo_model()
    with _locked(f"demo-{precision}"):
        if not (target / "genai_config.json").is_file():
            export_with_genai_builder(checkpoint, target, GenaiExportOptions(precision=precision))
    return target
