"""The demo model's recipe, on a tiny shape so that it runs in seconds: the same inputs give
byte-identical checkpoints, and the cache is filled atomically and reused.

(The real demo model is checked in test_lm_pipeline.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmops.optimize.demo_model import (
    TRAINING_REPORT_FILENAME,
    DemoModelShape,
    build_demo_model,
    ensure_demo_model,
)
from slmops.optimize.source import path_digest

pytestmark = pytest.mark.integration

TINY = DemoModelShape(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    sequence_length=64,
    batch_size=2,
    train_steps=3,
    warmup_steps=1,
    eval_windows=2,
)


def test_same_recipe_gives_the_same_checkpoint_and_the_cache_is_reused(tmp_path: Path) -> None:
    cached = ensure_demo_model(cache_root=tmp_path / "cache", shape=TINY)
    assert cached.parent == tmp_path / "cache"
    leftovers = [p.name for p in cached.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no staging directory is left behind"

    again = build_demo_model(tmp_path / "again", TINY)
    assert path_digest(tmp_path / "again") == path_digest(cached), "training is reproducible"
    assert again.parameters > 0
    assert again.train_tokens_seen == 3 * 2 * 64

    modified_before = (cached / TRAINING_REPORT_FILENAME).stat().st_mtime_ns
    assert ensure_demo_model(cache_root=tmp_path / "cache", shape=TINY) == cached
    assert (cached / TRAINING_REPORT_FILENAME).stat().st_mtime_ns == modified_before

    config = json.loads((cached / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer"


def test_make_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        build_demo_model(tmp_path, TINY)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_make_demo_copies_the_cached_model_and_digest_matches(tmp_path: Path) -> None:
    import subprocess
    import sys

    cached = ensure_demo_model()
    out = tmp_path / "demo"
    made = subprocess.run(
        [sys.executable, "-m", "slmops.cli", "model", "make-demo", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "held-out perplexity" in made.stdout
    printed = subprocess.run(
        [sys.executable, "-m", "slmops.cli", "model", "digest", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == path_digest(cached)

    refused = subprocess.run(
        [sys.executable, "-m", "slmops.cli", "model", "make-demo", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "not empty" in refused.stderr
