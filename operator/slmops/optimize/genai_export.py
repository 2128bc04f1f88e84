"""Export a Hugging Face checkpoint to ONNX with onnxruntime-genai's model builder.

The builder does the hard parts (KV cache, fused attention, MatMulNBits weight-only quantization,
genai_config.json, copying the tokenizer); this module only maps a variant's recipe onto its
command line and turns its failures into one readable error. It runs as a subprocess because the
builder is a script with module-level imports of its own helpers, it holds the whole model in
memory, and a crash in it must not take the caller down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slmops.api.v1alpha1.slmmodel import ExecutionProvider, Int4Algorithm, OptimizeRecipe, Precision

MODEL_FILENAME = "model.onnx"
GENAI_CONFIG_FILENAME = "genai_config.json"

_STDERR_TAIL_CHARS = 4000


class GenaiExportError(RuntimeError):
    """The builder refused the recipe or failed; the message carries its stderr tail."""


@dataclass(frozen=True)
class GenaiExportOptions:
    """What the builder needs to know; a flat view of the variant's `OptimizeRecipe`."""

    precision: Precision = "int4"
    execution_provider: ExecutionProvider = "cpu"
    # Weight-only (MatMulNBits) quantization knobs; used for int4 only.
    block_size: int = 32
    accuracy_level: int = 4
    algorithm: Int4Algorithm = "default"

    def builder_extra_options(self) -> dict[str, str]:
        if self.precision != "int4":
            return {}
        extra = {"block_size": str(self.block_size), "algo_config": self.algorithm}
        # 0 means "let the builder choose" (4, int8 compute, on CPU; fp32 elsewhere).
        if self.accuracy_level:
            extra["accuracy_level"] = str(self.accuracy_level)
        return extra

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.builder_extra_options().items()))
        return f"{self.precision}/{self.execution_provider}" + (f" ({extra})" if extra else "")


def export_options_from_recipe(recipe: OptimizeRecipe) -> GenaiExportOptions:
    int4 = recipe.int4
    if int4 is None:
        return GenaiExportOptions(recipe.precision, recipe.execution_provider)
    return GenaiExportOptions(
        precision=recipe.precision,
        execution_provider=recipe.execution_provider,
        block_size=int4.block_size,
        accuracy_level=int4.accuracy_level,
        algorithm=int4.algorithm,
    )


@dataclass(frozen=True)
class GenaiExport:
    """An exported model folder: model.onnx (+ .data), genai_config.json, tokenizer files."""

    directory: Path
    options: GenaiExportOptions
    size_bytes: int
    seconds: float

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILENAME


def directory_size_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def builder_command(
    checkpoint_dir: Path, out_dir: Path, cache_dir: Path, options: GenaiExportOptions
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "--input",
        str(checkpoint_dir),
        "--output",
        str(out_dir),
        "--precision",
        options.precision,
        "--execution_provider",
        options.execution_provider,
        "--cache_dir",
        str(cache_dir),
    ]
    extra = options.builder_extra_options()
    if extra:
        command += ["--extra_options", *(f"{k}={v}" for k, v in sorted(extra.items()))]
    return command


def export_with_genai_builder(
    checkpoint_dir: Path,
    out_dir: Path,
    options: GenaiExportOptions,
    timeout_seconds: float = 1800,
) -> GenaiExport:
    """Export `checkpoint_dir` into `out_dir` (created; must not exist yet).

    The builder writes into a temporary sibling that is renamed at the end, so `out_dir` exists
    only when the export is complete.
    """
    if not (checkpoint_dir / "config.json").is_file():
        raise GenaiExportError(
            f"{checkpoint_dir} is not a Hugging Face checkpoint: config.json is missing"
        )
    if not (checkpoint_dir / "tokenizer.json").is_file():
        # The builder copies the tokenizer into the export; og.Generator cannot run without it.
        raise GenaiExportError(f"{checkpoint_dir} has no tokenizer.json; the builder needs one")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; refusing to overwrite an export")
    options.builder_extra_options()  # rejects an unsupported recipe before spawning anything

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    started = time.monotonic()
    try:
        command = builder_command(checkpoint_dir, staging / "model", staging / "cache", options)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        try:
            completed = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise GenaiExportError(
                f"onnxruntime-genai builder did not finish within {timeout_seconds:.0f} s "
                f"exporting {checkpoint_dir} as {options.describe()}"
            ) from exc
        produced = staging / "model"
        if completed.returncode != 0 or not (produced / MODEL_FILENAME).is_file():
            tail = (completed.stderr or completed.stdout or "")[-_STDERR_TAIL_CHARS:].strip()
            raise GenaiExportError(
                f"onnxruntime-genai builder failed (exit {completed.returncode}) exporting "
                f"{checkpoint_dir} as {options.describe()}:\n{tail}"
            )
        produced.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return GenaiExport(
        directory=out_dir,
        options=options,
        size_bytes=directory_size_bytes(out_dir),
        seconds=time.monotonic() - started,
    )
