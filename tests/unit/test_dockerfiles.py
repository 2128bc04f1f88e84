"""The Dockerfiles under operator/images, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from slmops.testbed.simulator.profiles import DEFAULT_ALLOWED_IMAGE_REPOSITORIES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "operator" / "images"
CHART_VALUES = ROOT / "helm" / "slmops" / "values.yaml"
IMAGE_NAMES = ("operator", "runtime", "builder")
# What the chart's securityContext runs as.
NONROOT_UID = 65532
# Image name (the chart's values key) -> extras the image must install.
EXTRAS = {"operator": set(), "runtime": set(), "builder": {"train"}}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    parsed: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, arguments = full.partition(" ")
        parsed.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, f"{path.name} ends in a continuation line"
    return parsed


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args(parsed: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for instruction in parsed:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            defaults[name] = value
    return defaults


def from_parts(instruction: Instruction) -> tuple[dict[str, str], str, str | None]:
    words = instruction.arguments.split()
    flags = {}
    while words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    image = words[0]
    alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
    return flags, image, alias


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), text)


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    _, _, tag = image.rpartition(":")
    # A full version (python:3.11.13-slim-bookworm), never a moving tag like latest or 3.11.
    return bool(re.match(r"^\d+\.\d+\.\d+", tag))


@pytest.fixture(params=IMAGE_NAMES)
def image_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def dockerfile(name: str) -> Path:
    return IMAGES / f"{name}.Dockerfile"


def test_every_image_has_a_dockerfile_and_an_ignore_file(image_name: str) -> None:
    assert dockerfile(image_name).is_file()
    # BuildKit reads <Dockerfile>.dockerignore beside it: keeps .venv and caches out of the context.
    assert (IMAGES / f"{image_name}.Dockerfile.dockerignore").is_file()


def test_runs_as_the_charts_nonroot_user(image_name: str) -> None:
    final = stages(instructions(dockerfile(image_name)))[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "the final stage must set USER, or the image runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "a numeric USER lets runAsNonRoot verify it without /etc/passwd"
    assert int(uid) == NONROOT_UID
    assert not gid or int(gid) != 0


def test_no_add_of_urls_and_only_local_copies(image_name: str) -> None:
    for instruction in instructions(dockerfile(image_name)):
        if instruction.keyword == "ADD":
            assert "://" not in instruction.arguments, "ADD of a URL is neither pinned nor cached"
        if instruction.keyword == "COPY":
            words = shlex.split(instruction.arguments)
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words[:-1] if not w.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_base_images_are_pinned_and_multi_arch_ready(image_name: str) -> None:
    parsed = instructions(dockerfile(image_name))
    variables = global_args(parsed)
    aliases: set[str] = set()
    froms = [i for i in parsed if i.keyword == "FROM"]
    for instruction in froms:
        flags, image, alias = from_parts(instruction)
        resolved = expand(image, variables)
        if resolved not in aliases:
            assert is_pinned(resolved), f"FROM {resolved} is not pinned to a version or digest"
            assert flags.get("platform") in ("$TARGETPLATFORM", "$BUILDPLATFORM")
        if alias:
            aliases.add(alias)
    final_flags, final_image, _ = from_parts(froms[-1])
    assert final_flags.get("platform") == "$TARGETPLATFORM"
    assert expand(final_image, variables).startswith("python:3.11")


def test_entrypoint_is_slmops(image_name: str) -> None:
    final = stages(instructions(dockerfile(image_name)))[-1]
    entrypoints = [i.arguments for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert yaml.safe_load(entrypoints[-1]) == ["slmops"], "exec form, so signals reach slmops"


def test_installs_the_package_with_the_right_extras(image_name: str) -> None:
    text = " ".join(i.arguments for i in instructions(dockerfile(image_name)) if i.keyword == "RUN")
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    extras = set()
    for match in re.finditer(r"slmops-\*\.whl\)\[([\w,]+)\]", text):
        extras |= set(match.group(1).split(","))
    assert extras == EXTRAS[image_name]
    assert extras <= declared
    assert "--no-cache-dir" in text, "pip's cache would end up in the image"


def test_chart_defaults_name_these_images() -> None:
    values = yaml.safe_load(CHART_VALUES.read_text())
    repositories = {
        "operator": values["image"]["repository"],
        "runtime": values["runtimeImage"]["repository"],
        "builder": values["builderImage"]["repository"],
    }
    for name, repository in repositories.items():
        assert repository == f"ghcr.io/slmops/slmops-{name}"
        # The testbed's simulator runs containers of these repositories as real processes.
        assert repository.rsplit("/", 1)[-1] in DEFAULT_ALLOWED_IMAGE_REPOSITORIES
        title = [
            i.arguments
            for i in instructions(dockerfile(name))
            if i.keyword == "LABEL" and "org.opencontainers.image.title" in i.arguments
        ]
        assert title
        assert f'org.opencontainers.image.title="slmops-{name}"' in title[0]
