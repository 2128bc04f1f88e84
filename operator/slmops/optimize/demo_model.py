"""The demo language model: a small Llama decoder trained here, offline, on Python's stdlib.

No model hub is reachable and no PyPI package ships a decoder checkpoint, so the project makes its
own. The text is the standard library's source, which every Python installation has; a fixed,
sorted list of files makes the corpus (and with it the tokenizer and the weights) reproducible for
one Python version. The size (23.5 M parameters, 94 MB in fp32) is chosen so that batch-1
decoding is bound by memory bandwidth and int4 weights therefore pay off, while a few minutes of
training on 2 CPU cores still brings held-out perplexity far below the untrained one.

torch, transformers and tokenizers come from the `train` extra; they are imported inside the
functions that need them so that importing this module (for `DEMO_VERSION_KEY`, the cache path)
stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HELDOUT_FILENAME = "heldout.txt"
TRAINING_REPORT_FILENAME = "training.json"
END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class DemoModelShape:
    """Architecture and training schedule; every field is part of the cache key."""

    vocab_size: int = 4096
    hidden_size: int = 512
    intermediate_size: int = 1408
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    # As many KV heads as query heads: the builder's fp16 CPU graph breaks on grouped-query
    # attention (its repeat_kv fallback fails at run time), and fp16 is one of the variants.
    num_key_value_heads: int = 8
    max_position_embeddings: int = 512
    sequence_length: int = 256
    batch_size: int = 4
    train_steps: int = 240
    peak_learning_rate: float = 3e-3
    warmup_steps: int = 10
    seed: int = 20240607
    # Every tenth file (by sorted position) is held out: whole files, so that held-out text is
    # not a continuation of something the model trained on.
    heldout_every: int = 10
    heldout_max_chars: int = 200_000
    eval_windows: int = 24


DEMO_SHAPE = DemoModelShape()


def _version_key(shape: DemoModelShape) -> str:
    # The corpus depends on the Python version, the numerics on torch; both belong in the key.
    from importlib import metadata

    def version_of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    material = {
        "format": 1,
        "shape": asdict(shape),
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "torch": version_of("torch"),
        "transformers": version_of("transformers"),
        "tokenizers": version_of("tokenizers"),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"llama-{shape.hidden_size}x{shape.num_hidden_layers}-{digest[:12]}"


def demo_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slmops" / "demo-model"


def stdlib_corpus_files() -> list[Path]:
    """The top-level `*.py` modules of the standard library, sorted by name.

    Top level only: packages like `test/` and `site-packages/` differ between installations.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(path for path in stdlib.glob("*.py") if path.is_file())
    if len(files) < 50:
        raise RuntimeError(
            f"found only {len(files)} Python modules in the standard library at {stdlib}; "
            "the demo model needs the standard library's source files (*.py)"
        )
    return files


@dataclass(frozen=True)
class CorpusSplit:
    train_texts: list[str]
    heldout_text: str
    train_files: int
    heldout_files: int


def split_corpus(files: Sequence[Path], shape: DemoModelShape = DEMO_SHAPE) -> CorpusSplit:
    train: list[str] = []
    heldout: list[str] = []
    for index, path in enumerate(files):
        text = path.read_text(encoding="utf-8", errors="replace")
        (heldout if index % shape.heldout_every == 0 else train).append(text)
    heldout_text = "\n".join(heldout)[: shape.heldout_max_chars]
    return CorpusSplit(train, heldout_text, len(train), len(heldout))


@dataclass(frozen=True)
class PerplexityPair:
    train: float
    heldout: float


@dataclass(frozen=True)
class TrainingReport:
    """Written as training.json beside the weights. No timings: the file is part of the
    checkpoint's digest, which must not change between two builds of the same model."""

    version_key: str
    parameters: int
    corpus_files_train: int
    corpus_files_heldout: int
    train_tokens_seen: int
    untrained: PerplexityPair
    trained: PerplexityPair


def _train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # Byte-level BPE (GPT-2 style): every byte is representable, so held-out text never hits an
    # unknown token, and onnxruntime-genai's tokenizer reads it from tokenizer.json.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _token_stream(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    eos = tokenizer.token_to_id(END_OF_TEXT)
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        stream.extend(encoding.ids)
        stream.append(eos)
    return stream


def _windows(stream: Any, length: int, count: int) -> Any:
    """`count` evenly spaced, non-overlapping windows of `length` tokens (deterministic)."""
    import torch

    available = (len(stream) - 1) // length
    if available < 1:
        raise ValueError(f"text too short: {len(stream)} tokens, need more than {length}")
    picks = torch.linspace(0, available - 1, steps=min(count, available)).long()
    return torch.stack([stream[int(i) * length : int(i) * length + length] for i in picks])


def _perplexity(model: Any, windows: Any) -> float:
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for row in windows:
            total += float(model(input_ids=row.unsqueeze(0), labels=row.unsqueeze(0)).loss)
    model.train()
    return math.exp(total / len(windows))


def build_demo_model(out_dir: Path, shape: DemoModelShape = DEMO_SHAPE) -> TrainingReport:
    """Train the demo model and write it to `out_dir` (which must not exist or be empty)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; make-demo writes into an empty directory")

    torch.manual_seed(shape.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with contextlib.suppress(RuntimeError):
        torch.use_deterministic_algorithms(True, warn_only=True)

    corpus = split_corpus(stdlib_corpus_files(), shape)
    tokenizer = _train_tokenizer(corpus.train_texts, shape.vocab_size)
    train_stream = torch.tensor(_token_stream(tokenizer, corpus.train_texts), dtype=torch.long)
    heldout_stream = torch.tensor(_token_stream(tokenizer, [corpus.heldout_text]), dtype=torch.long)
    logger.info(
        "corpus: %d train files (%d tokens), %d held-out files (%d tokens)",
        corpus.train_files,
        len(train_stream),
        corpus.heldout_files,
        len(heldout_stream),
    )

    eos_id = tokenizer.token_to_id(END_OF_TEXT)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        # Untied: a tied embedding feeds both Gather and MatMul, and quantizing that shared
        # initializer made decoding slower than fp32 in our measurements.
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())

    train_eval = _windows(train_stream, shape.sequence_length, shape.eval_windows)
    heldout_eval = _windows(heldout_stream, shape.sequence_length, shape.eval_windows)
    untrained = PerplexityPair(_perplexity(model, train_eval), _perplexity(model, heldout_eval))

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=shape.peak_learning_rate, betas=(0.9, 0.95), weight_decay=0.1
    )

    def learning_rate_factor(step: int) -> float:
        if step < shape.warmup_steps:
            return (step + 1) / shape.warmup_steps
        progress = (step - shape.warmup_steps) / max(1, shape.train_steps - shape.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    sampler = torch.Generator().manual_seed(shape.seed)
    span = shape.sequence_length
    model.train()
    for step in range(shape.train_steps):
        starts = torch.randint(
            0, len(train_stream) - span - 1, (shape.batch_size,), generator=sampler
        )
        batch = torch.stack([train_stream[int(s) : int(s) + span] for s in starts])
        # bf16 autocast doubles training throughput on CPUs with AVX512-BF16 and is a no-op
        # slowdown elsewhere; the saved weights stay fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == shape.train_steps - 1:
            logger.info("step %d/%d loss %.3f", step + 1, shape.train_steps, loss.item())

    trained = PerplexityPair(_perplexity(model, train_eval), _perplexity(model, heldout_eval))

    model.generation_config.do_sample = False
    model.save_pretrained(out_dir, safe_serialization=True)
    fast_tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=shape.max_position_embeddings,
    )
    fast_tokenizer.save_pretrained(out_dir)
    _declare_gpt2_tokenizer(out_dir)
    (out_dir / HELDOUT_FILENAME).write_text(corpus.heldout_text, encoding="utf-8")

    report = TrainingReport(
        version_key=_version_key(shape),
        parameters=parameters,
        corpus_files_train=corpus.train_files,
        corpus_files_heldout=corpus.heldout_files,
        train_tokens_seen=shape.train_steps * shape.batch_size * span,
        untrained=untrained,
        trained=trained,
    )
    (out_dir / TRAINING_REPORT_FILENAME).write_text(
        json.dumps(asdict(report), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    logger.info(
        "demo model: %d parameters, held-out perplexity %.1f -> %.1f, %.0f s",
        parameters,
        untrained.heldout,
        trained.heldout,
        time.monotonic() - started,
    )
    return report


def _declare_gpt2_tokenizer(out_dir: Path) -> None:
    # onnxruntime-genai picks its tokenizer implementation from tokenizer_class; a byte-level
    # BPE is what it calls GPT2Tokenizer. transformers would write the generic
    # "PreTrainedTokenizerFast", which it does not recognise.
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "GPT2Tokenizer"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_training_report(checkpoint_dir: Path) -> TrainingReport:
    raw = json.loads((checkpoint_dir / TRAINING_REPORT_FILENAME).read_text(encoding="utf-8"))
    return TrainingReport(
        version_key=raw["version_key"],
        parameters=raw["parameters"],
        corpus_files_train=raw["corpus_files_train"],
        corpus_files_heldout=raw["corpus_files_heldout"],
        train_tokens_seen=raw["train_tokens_seen"],
        untrained=PerplexityPair(**raw["untrained"]),
        trained=PerplexityPair(**raw["trained"]),
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_demo_model(cache_root: Path | None = None, shape: DemoModelShape = DEMO_SHAPE) -> Path:
    """Return the cached demo checkpoint, training it first if this machine has none.

    The first call on a fresh machine takes a few minutes. Concurrent callers (parallel test
    workers, two shells) wait on a lock instead of training twice; a build that dies half-way
    leaves only a temporary directory, never a half-written cache entry.
    """
    root = cache_root or demo_cache_root()
    final = root / _version_key(shape)
    if (final / TRAINING_REPORT_FILENAME).is_file():
        return final
    with _exclusive_lock(root / f"{final.name}.lock"):
        if (final / TRAINING_REPORT_FILENAME).is_file():
            return final
        # Holding the lock, any staging directory of this key belongs to a killed build.
        for stale in root.glob(f".{final.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            build_demo_model(staging, shape)
            os.chmod(staging, 0o755)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


DEMO_VERSION_KEY = _version_key(DEMO_SHAPE)
