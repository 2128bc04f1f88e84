"""Pruning math on a tiny random Llama checkpoint (real torch, real safetensors files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="pruning needs the `train` extra (torch)")
transformers = pytest.importorskip("transformers", reason="needs the `train` extra")
from safetensors.torch import load_file  # noqa: E402

from slmops.optimize.pruning import (  # noqa: E402
    CHANNEL_MULTIPLE,
    PruningError,
    channel_importance,
    kept_channel_count,
    prune_checkpoint,
)

pytestmark = pytest.mark.unit

INTERMEDIATE = 128


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer.json").write_text("{}", encoding="utf-8")
    return out


def load_model(path: Path) -> object:
    return transformers.LlamaForCausalLM.from_pretrained(path).eval()


@pytest.mark.parametrize(
    ("intermediate", "fraction", "kept"),
    [(1408, 0.25, 1056), (1408, 0.3, 992), (128, 0.5, 64), (128, 0.9, 32)],
)
def test_kept_channels_round_to_whole_blocks(intermediate: int, fraction: float, kept: int) -> None:
    assert kept_channel_count(intermediate, fraction) == kept
    assert kept % CHANNEL_MULTIPLE == 0


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.05])
def test_fractions_that_remove_nothing_or_everything_are_refused(fraction: float) -> None:
    with pytest.raises(PruningError):
        kept_channel_count(64, fraction)


def test_structured_pruning_keeps_the_most_important_channels(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pruned"
    report = prune_checkpoint(checkpoint, out, "structured", mlp_channel_fraction=0.5)

    assert report.intermediate_size_before == INTERMEDIATE
    assert report.intermediate_size_after == 64
    assert report.achieved == pytest.approx(0.5)
    removed_per_layer = 3 * 64 * 64  # gate + up + down, 64 channels of hidden size 64
    assert report.parameters_before - report.parameters_after == 2 * removed_per_layer
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 64
    assert (out / "tokenizer.json").is_file(), "non-weight files travel with the checkpoint"

    original = load_file(str(checkpoint / "model.safetensors"))
    pruned = load_file(str(out / "model.safetensors"))
    for layer in range(2):
        prefix = f"model.layers.{layer}.mlp"
        gate, up, down = (original[f"{prefix}.{p}_proj.weight"] for p in ("gate", "up", "down"))
        importance = channel_importance(gate, up, down)
        expected = torch.topk(importance, 64).indices.sort().values
        assert torch.equal(pruned[f"{prefix}.gate_proj.weight"], gate[expected])
        assert torch.equal(pruned[f"{prefix}.up_proj.weight"], up[expected])
        assert torch.equal(pruned[f"{prefix}.down_proj.weight"], down[:, expected])
        dropped = torch.ones(INTERMEDIATE, dtype=torch.bool)
        dropped[expected] = False
        assert importance[dropped].max() <= importance[expected].min()


def test_structured_pruning_equals_silencing_the_removed_channels(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Removing channel j is exactly zeroing down_proj[:, j]: the pruned model must compute the
    same logits as the original with those columns zeroed."""
    out = tmp_path / "pruned"
    prune_checkpoint(checkpoint, out, "structured", mlp_channel_fraction=0.25)
    pruned_model = load_model(out)
    silenced = load_model(checkpoint)
    pruned_state = load_file(str(out / "model.safetensors"))
    with torch.no_grad():
        for layer, block in enumerate(silenced.model.layers):  # type: ignore[attr-defined]
            kept_gate = pruned_state[f"model.layers.{layer}.mlp.gate_proj.weight"]
            keep = [
                int(torch.nonzero((block.mlp.gate_proj.weight == row).all(dim=1))[0])
                for row in kept_gate
            ]
            mask = torch.zeros(INTERMEDIATE, dtype=torch.bool)
            mask[keep] = True
            block.mlp.down_proj.weight[:, ~mask] = 0
        ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(1))
        expected = silenced(input_ids=ids).logits  # type: ignore[operator]
        actual = pruned_model(input_ids=ids).logits  # type: ignore[operator]
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_unstructured_pruning_zeroes_the_smallest_weights_and_reports_honestly(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sparse"
    report = prune_checkpoint(checkpoint, out, "unstructured", sparsity=0.5)
    original = load_file(str(checkpoint / "model.safetensors"))
    pruned = load_file(str(out / "model.safetensors"))

    linear = [k for k in original if k.endswith("_proj.weight")]
    assert len(linear) == 2 * 7
    for key in linear:
        before, after = original[key], pruned[key]
        assert after.shape == before.shape, "unstructured pruning keeps shapes"
        zero = after == 0
        assert zero.float().mean() >= 0.5
        assert torch.equal(after[~zero], before[~zero])
        assert before[zero].abs().max() <= before[~zero].abs().min()
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(pruned[key], original[key]), f"{key} must not be pruned"

    assert report.method == "unstructured"
    assert 0.5 <= report.achieved < 0.51
    assert report.parameters_after == report.parameters_before
    assert report.nonzero_parameters_after < report.parameters_before
    assert report.pruned_compressed_bytes is not None
    assert report.dense_compressed_bytes is not None
    assert report.pruned_compressed_bytes < 0.85 * report.dense_compressed_bytes
    assert (out / "model.safetensors").stat().st_size == (
        checkpoint / "model.safetensors"
    ).stat().st_size, "the dense file is no smaller: only its compressed form is"


def test_missing_recipe_fields_and_existing_output_are_clear_errors(
    checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(PruningError, match="mlpChannelFraction"):
        prune_checkpoint(checkpoint, tmp_path / "a", "structured")
    with pytest.raises(PruningError, match="sparsity"):
        prune_checkpoint(checkpoint, tmp_path / "b", "unstructured")
    with pytest.raises(PruningError, match="between 0 and 1"):
        prune_checkpoint(checkpoint, tmp_path / "c", "unstructured", sparsity=1.5)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        prune_checkpoint(checkpoint, tmp_path / "exists", "unstructured", sparsity=0.5)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_checkpoint_without_a_gated_mlp_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = tmp_path / "gpt"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"intermediate_size": 128}))
    save_file({"h.0.mlp.c_fc.weight": torch.zeros(128, 64)}, str(source / "model.safetensors"))
    with pytest.raises(PruningError, match="gate_proj/up_proj/down_proj"):
        prune_checkpoint(source, tmp_path / "out", "structured", mlp_channel_fraction=0.5)
    with pytest.raises(PruningError, match="no decoder linear layers"):
        prune_checkpoint(source, tmp_path / "out2", "unstructured", sparsity=0.5)
