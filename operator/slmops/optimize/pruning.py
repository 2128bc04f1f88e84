"""Pruning a Hugging Face Llama-style checkpoint before it is exported.

onnxruntime-genai's builder quantizes but does not prune, so this runs on the checkpoint first:

- structured: remove whole MLP intermediate channels (a row of gate_proj and up_proj and the
  matching column of down_proj) in every layer. The matrices really get smaller, so the exported
  model is smaller and faster in proportion, at a perplexity cost that the evaluation measures.
- unstructured: zero the smallest-magnitude weights of each linear layer in the decoder blocks.
  The matrices keep their shape: onnxruntime's CPU kernels are dense, so there is no speedup and
  the export is no smaller. What does shrink is the compressed checkpoint (zeros compress), and
  that is what gets reported, next to the dense one, rather than a pretend speedup.

Embeddings and the LM head are left alone in both cases: they are lookups and the last
projection, the two places where damage hurts perplexity most for the least size.
"""

from __future__ import annotations

import json
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

WEIGHTS_FILENAME = "model.safetensors"
_MLP_KEY = re.compile(
    r"^(?P<prefix>.*layers\.(?P<layer>\d+)\.mlp)\.(?P<proj>gate|up|down)_proj\.weight$"
)
_LINEAR_KEY = re.compile(r"^.*layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$")
# Channel counts stay a multiple of this so MatMulNBits blocks (32 by default) tile exactly.
CHANNEL_MULTIPLE = 32
_COMPRESS_CHUNK = 1 << 22


class PruningError(ValueError):
    """The checkpoint or the recipe does not allow the requested pruning."""


@dataclass(frozen=True)
class PruningReport:
    method: Literal["structured", "unstructured"]
    requested: float
    """mlp_channel_fraction (structured) or sparsity (unstructured) as asked."""
    achieved: float
    """Fraction of MLP channels removed (structured) or of decoder linear weights that are
    zero (unstructured)."""
    parameters_before: int
    parameters_after: int
    """Stored parameters; unstructured pruning stores the zeros, so this does not change."""
    nonzero_parameters_after: int
    intermediate_size_before: int | None = None
    intermediate_size_after: int | None = None
    dense_compressed_bytes: int | None = None
    """Unstructured: zlib-compressed size of the weights file before pruning ..."""
    pruned_compressed_bytes: int | None = None
    """... and after: what sparsity saves when the weights are shipped compressed."""


def _load_state(checkpoint_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted(checkpoint_dir.glob("*.safetensors"))
    if not files:
        raise PruningError(f"{checkpoint_dir} has no *.safetensors weights to prune")
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def _copy_checkpoint_without_weights(checkpoint_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=False)
    for item in sorted(checkpoint_dir.iterdir()):
        if item.suffix == ".safetensors" or item.name == "model.safetensors.index.json":
            continue
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name)
        else:
            shutil.copy2(item, out_dir / item.name)


def _save_state(state: dict[str, Any], out_dir: Path) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(out_dir / WEIGHTS_FILENAME),
        metadata={"format": "pt"},
    )


def _parameter_count(state: dict[str, Any]) -> int:
    return sum(int(tensor.numel()) for tensor in state.values())


def kept_channel_count(intermediate_size: int, fraction: float) -> int:
    """Channels kept when removing `fraction`, rounded to a multiple of CHANNEL_MULTIPLE
    (never below one multiple, never all of them)."""
    if not 0 < fraction < 1:
        raise PruningError(f"mlpChannelFraction must be between 0 and 1, got {fraction}")
    kept = round(intermediate_size * (1 - fraction) / CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
    kept = max(CHANNEL_MULTIPLE, kept)
    if kept >= intermediate_size:
        raise PruningError(
            f"removing {fraction:.1%} of {intermediate_size} MLP channels rounds to nothing "
            f"(channels are removed in multiples of {CHANNEL_MULTIPLE}); ask for more"
        )
    return kept


def channel_importance(gate: Any, up: Any, down: Any) -> Any:
    """Importance of each intermediate channel: |gate row| * |up row| * |down column|.

    A channel's output is down[:, j] * silu(gate[j] . x) * (up[j] . x), so the product of the
    three norms bounds how much it can contribute for a unit input.
    """
    return gate.float().norm(dim=1) * up.float().norm(dim=1) * down.float().norm(dim=0)


def prune_mlp_channels(checkpoint_dir: Path, out_dir: Path, fraction: float) -> PruningReport:
    """Structured pruning: drop the least important `fraction` of MLP channels per layer."""
    import torch

    config_path = checkpoint_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    intermediate = int(config.get("intermediate_size", 0))
    if intermediate <= 0:
        raise PruningError(f"{config_path} has no intermediate_size; not a Llama-style MLP")
    kept = kept_channel_count(intermediate, fraction)

    state = _load_state(checkpoint_dir)
    before = _parameter_count(state)
    layers: dict[str, dict[str, str]] = {}
    for key in state:
        match = _MLP_KEY.match(key)
        if match:
            layers.setdefault(match["prefix"], {})[match["proj"]] = key
    if not layers:
        raise PruningError(
            f"{checkpoint_dir}: no gate_proj/up_proj/down_proj MLP weights found; structured "
            "pruning supports Llama-style (gated) MLPs only"
        )
    for prefix, keys in sorted(layers.items()):
        if set(keys) != {"gate", "up", "down"}:
            raise PruningError(f"{prefix}: incomplete gated MLP ({', '.join(sorted(keys))})")
        gate, up, down = state[keys["gate"]], state[keys["up"]], state[keys["down"]]
        if gate.shape[0] != intermediate or down.shape[1] != intermediate:
            raise PruningError(
                f"{prefix}: weights have {gate.shape[0]} channels, config says {intermediate}"
            )
        keep = torch.topk(channel_importance(gate, up, down), kept).indices.sort().values
        state[keys["gate"]] = gate[keep].clone()
        state[keys["up"]] = up[keep].clone()
        state[keys["down"]] = down[:, keep].clone()

    _copy_checkpoint_without_weights(checkpoint_dir, out_dir)
    config["intermediate_size"] = kept
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _save_state(state, out_dir)
    after = _parameter_count(state)
    return PruningReport(
        method="structured",
        requested=fraction,
        achieved=1 - kept / intermediate,
        parameters_before=before,
        parameters_after=after,
        nonzero_parameters_after=after,
        intermediate_size_before=intermediate,
        intermediate_size_after=kept,
    )


def compressed_size(path: Path) -> int:
    """zlib (level 6, streaming) size of a file: how big it is when shipped compressed."""
    compressor = zlib.compressobj(6)
    total = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_COMPRESS_CHUNK):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def prune_magnitude(checkpoint_dir: Path, out_dir: Path, sparsity: float) -> PruningReport:
    """Unstructured pruning: in every decoder linear layer, zero the `sparsity` share of
    weights with the smallest magnitude."""
    import torch

    if not 0 < sparsity < 1:
        raise PruningError(f"sparsity must be between 0 and 1, got {sparsity}")
    state = _load_state(checkpoint_dir)
    before = _parameter_count(state)
    linear_keys = sorted(k for k in state if _LINEAR_KEY.match(k) and state[k].dim() == 2)
    if not linear_keys:
        raise PruningError(f"{checkpoint_dir}: no decoder linear layers (*_proj.weight) found")
    zeros = 0
    total = 0
    for key in linear_keys:
        weight = state[key]
        count = int(weight.numel() * sparsity)
        if count:
            # kthvalue breaks ties arbitrarily; `<=` may zero a few more equal-magnitude
            # weights, which is why the achieved sparsity is measured, not assumed.
            threshold = weight.abs().flatten().float().kthvalue(count).values
            weight = torch.where(weight.abs() <= threshold, torch.zeros_like(weight), weight)
            state[key] = weight
        zeros += int((weight == 0).sum())
        total += int(weight.numel())

    _copy_checkpoint_without_weights(checkpoint_dir, out_dir)
    _save_state(state, out_dir)
    dense_files = sorted(checkpoint_dir.glob("*.safetensors"))
    return PruningReport(
        method="unstructured",
        requested=sparsity,
        achieved=zeros / total,
        parameters_before=before,
        parameters_after=before,
        nonzero_parameters_after=before - zeros,
        dense_compressed_bytes=sum(compressed_size(f) for f in dense_files),
        pruned_compressed_bytes=compressed_size(out_dir / WEIGHTS_FILENAME),
    )


def prune_checkpoint(
    checkpoint_dir: Path,
    out_dir: Path,
    method: Literal["structured", "unstructured"],
    mlp_channel_fraction: float | None = None,
    sparsity: float | None = None,
) -> PruningReport:
    """Apply a `PruningRecipe` to a checkpoint, writing the pruned copy to `out_dir`."""
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    if method == "structured":
        if mlp_channel_fraction is None:
            raise PruningError("structured pruning needs mlpChannelFraction")
        return prune_mlp_channels(checkpoint_dir, out_dir, mlp_channel_fraction)
    if sparsity is None:
        raise PruningError("unstructured pruning needs sparsity")
    return prune_magnitude(checkpoint_dir, out_dir, sparsity)
