"""`slmops build` on the demo language model: a checkpoint directory verified by its canonical
digest, exported by onnxruntime-genai's builder, evaluated against fp32 here, pushed as a
ModelPack artifact to the testbed registry, inspected with skopeo and pulled back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from slmops.adapters.oci import Credentials, RegistryClient, pull_artifact
from slmops.optimize.demo_model import ensure_demo_model
from slmops.optimize.packaging import EVALUATION_KEY, WEIGHT_RAW, read_model_config
from slmops.optimize.source import directory_digest
from slmops.testbed.registry import RegistryAccess
from slmops.testbed.testbed import Testbed
from tests.integration.test_build_command import auth_file, run_build
from tests.integration.test_oci_registry import skopeo_inspect

pytestmark = pytest.mark.integration


def test_int4_variant_of_the_demo_model_is_built_pushed_and_pullable(
    testbed: Testbed, tmp_path: Path
) -> None:
    registry: RegistryAccess = testbed.registry
    checkpoint = ensure_demo_model()
    repository = f"models/demo-{uuid.uuid4().hex[:8]}"
    body = json.dumps(
        {
            "revision": "r1",
            "model": "demo",
            "source": {"uri": checkpoint.as_uri(), "sha256": directory_digest(checkpoint)},
            "variant": {
                "name": "int4-cpu",
                "optimize": {"precision": "int4", "int4": {"blockSize": 32, "accuracyLevel": 4}},
                "target": {"nodeSelector": {"matchLabels": {"kubernetes.io/arch": "amd64"}}},
            },
            # Plumbing, not quality (tests/integration/test_lm_pipeline.py and the benchmark
            # judge that): a loose budget and a short timing run keep this test quick.
            "evaluation": {"maxPerplexityIncreasePercent": 50, "maxNewTokens": 16, "repeats": 1},
            "image": {"registry": registry.host, "repository": repository, "insecure": True},
        }
    )
    code, result, stderr = run_build(body, tmp_path, auth_file(tmp_path, registry))
    assert code == 0, stderr
    assert result.phase == "Qualified", result.message
    assert result.format == "onnx-genai" and result.precision == "int4"
    assert result.compression_ratio is not None and result.compression_ratio > 2.5
    assert result.perplexity is not None and result.reference_perplexity is not None
    assert result.perplexity_delta_percent is not None and result.perplexity_delta_percent < 50
    assert result.tokens_per_second and result.time_to_first_token_ms and result.speedup
    assert result.budgets[0].name == "maxPerplexityIncreasePercent"

    manifest = skopeo_inspect(registry, f"{registry.host}/{repository}@{result.digest}", raw=True)
    layers = {
        layer["annotations"]["org.cncf.model.filepath"]: layer  # type: ignore[index]
        for layer in manifest["layers"]  # type: ignore[attr-defined]
    }
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= set(layers)
    assert layers["model.onnx"]["mediaType"] == WEIGHT_RAW
    assert sum(layer["size"] for layer in layers.values()) == result.size_bytes

    client = RegistryClient(
        registry.host, credentials=Credentials(registry.username, registry.password), insecure=True
    )
    pulled = pull_artifact(
        f"{registry.host}/{repository}@{result.digest}", tmp_path / "pulled", client=client
    )
    config = read_model_config(client, repository, pulled)
    assert config["config"]["format"] == "onnx-genai"
    assert config["config"]["quantization"].startswith("int4")
    assert config["descriptor"]["revision"] == f"sha256:{directory_digest(checkpoint)}"
    assert config[EVALUATION_KEY]["perplexity"] == result.perplexity
    assert (tmp_path / "pulled" / "genai_config.json").is_file()
