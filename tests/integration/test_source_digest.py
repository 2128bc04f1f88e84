"""The canonical directory digest is what coreutils compute, so users can check it by hand."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slmops.optimize.source import directory_digest

pytestmark = pytest.mark.integration

SHELL_DIGEST = (
    "cd \"$1\" && find . -type f | sed 's|^\\./||' | LC_ALL=C sort "
    "| xargs -d '\\n' sha256sum | sha256sum | cut -d' ' -f1"
)


def test_directory_digest_matches_sha256sum(tmp_path: Path) -> None:
    root = tmp_path / "checkpoint"
    (root / "tokenizer" / "Sub Dir").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 100)
    (root / "tokenizer" / "tokenizer.json").write_text('{"v": 1}')
    (root / "tokenizer" / "Sub Dir" / "B.txt").write_text("upper case sorts first")
    (root / "tokenizer" / "a.txt").write_text("lower")
    shell = subprocess.run(
        ["bash", "-c", SHELL_DIGEST, "digest", str(root)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert directory_digest(root) == shell.stdout.strip()
