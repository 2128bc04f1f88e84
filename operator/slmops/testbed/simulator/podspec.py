"""Turning a pod's container spec into a local process, the way the kubelet would run it.

Pure functions (no I/O): which images run for real, env resolution (`value`, `fieldRef`,
`secretKeyRef`, `configMapKeyRef`, `envFrom`), `$(VAR)` expansion in env, command and
args, and volume mount paths rewritten to directories of the state dir.

Why paths are rewritten: a container sees its volumes at their `mountPath` (a bind mount).
A local process has no mount namespace, so the simulator replaces every occurrence of a
mount path in command, args, env values and workingDir by the directory that backs the
volume. A process that builds paths from its arguments or env then reads and writes the
same files the volume would hold; paths hard-coded in a program are not rewritten.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class PodSpecError(ValueError):
    """The pod cannot be run as given (the reason becomes the container's waiting reason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def image_repository(image: str) -> str:
    """`ghcr.io/slmops/slmops-runtime:0.1.0@sha256:..` -> `ghcr.io/slmops/slmops-runtime`."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    if ":" in last:
        without_digest = without_digest[: len(without_digest) - len(last)] + last.split(":")[0]
    return without_digest


def is_allowed_image(image: str, allowed_repositories: tuple[str, ...] | list[str]) -> bool:
    """True if the image's repository ends with one of the allowed names (path-wise)."""
    repository = image_repository(image)
    return any(
        repository == allowed or repository.endswith("/" + allowed)
        for allowed in allowed_repositories
    )


_VAR_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_variables(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined references are replaced, undefined ones are
    kept verbatim, and `$$` escapes a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _VAR_REFERENCE.sub(replace, text)


@dataclass(frozen=True)
class PodFacts:
    """What fieldRef can point at, known when the process starts."""

    name: str
    namespace: str
    uid: str
    node_name: str
    pod_ip: str
    host_ip: str
    service_account: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], pod_ip: str, host_ip: str) -> PodFacts:
        metadata = pod.get("metadata", {})
        spec = pod.get("spec", {})
        return cls(
            name=metadata.get("name", ""),
            namespace=metadata.get("namespace", "default"),
            uid=metadata.get("uid", ""),
            node_name=spec.get("nodeName", ""),
            pod_ip=pod_ip,
            host_ip=host_ip,
            service_account=spec.get("serviceAccountName", "default"),
            labels=metadata.get("labels") or {},
            annotations=metadata.get("annotations") or {},
        )


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_value(facts: PodFacts, field_path: str) -> str:
    simple = {
        "metadata.name": facts.name,
        "metadata.namespace": facts.namespace,
        "metadata.uid": facts.uid,
        "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": facts.service_account,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": facts.host_ip,
    }
    if field_path in simple:
        return simple[field_path]
    subscript = _SUBSCRIPT.match(field_path)
    if subscript:
        source = facts.labels if subscript.group(1) == "labels" else facts.annotations
        return source.get(subscript.group(2), "")
    if field_path in ("metadata.labels", "metadata.annotations"):
        source = facts.labels if field_path == "metadata.labels" else facts.annotations
        return "\n".join(f'{key}="{value}"' for key, value in sorted(source.items()))
    raise PodSpecError("CreateContainerConfigError", f"unsupported fieldRef {field_path!r}")


def decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    values = {
        key: base64.b64decode(value).decode(errors="replace")
        for key, value in (secret.get("data") or {}).items()
    }
    values.update(secret.get("stringData") or {})
    return values


def config_map_values(config_map: Mapping[str, Any]) -> dict[str, str]:
    return dict(config_map.get("data") or {})


def resolve_env(
    container: Mapping[str, Any],
    facts: PodFacts,
    secrets: Mapping[str, Mapping[str, str]],
    config_maps: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The container's environment, in kubelet order: envFrom first, then env entries, each
    value expanded against the variables defined before it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            ref = source["secretRef"]
            values = _lookup(secrets, ref["name"], "secret", ref.get("optional", False))
        elif "configMapRef" in source:
            ref = source["configMapRef"]
            values = _lookup(config_maps, ref["name"], "configmap", ref.get("optional", False))
        else:
            continue
        for key, value in values.items():
            env[prefix + key] = value
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = expand_variables(entry.get("value") or "", env)
            continue
        source = entry.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_value(facts, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            secret_value = _key(secrets, source["secretKeyRef"], "secret")
            if secret_value is not None:
                env[name] = secret_value
        elif "configMapKeyRef" in source:
            config_value = _key(config_maps, source["configMapKeyRef"], "configmap")
            if config_value is not None:
                env[name] = config_value
        elif "resourceFieldRef" in source:
            env[name] = _resource_field(container, source["resourceFieldRef"])
        else:
            env[name] = ""
    return env


def _lookup(
    store: Mapping[str, Mapping[str, str]], name: str, kind: str, optional: bool
) -> Mapping[str, str]:
    if name in store:
        return store[name]
    if optional:
        return {}
    raise PodSpecError("CreateContainerConfigError", f'{kind} "{name}" not found')


def _key(store: Mapping[str, Mapping[str, str]], ref: Mapping[str, Any], kind: str) -> str | None:
    optional = bool(ref.get("optional", False))
    values = _lookup(store, ref["name"], kind, optional)
    if ref["key"] in values:
        return values[ref["key"]]
    if optional:
        return None
    raise PodSpecError(
        "CreateContainerConfigError", f"couldn't find key {ref['key']} in {kind} {ref['name']}"
    )


def _resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    # The raw quantity as written in the spec; enough for the processes we run.
    section, _, resource = str(ref["resource"]).partition(".")
    resources = (container.get("resources") or {}).get(section) or {}
    return str(resources.get(resource, "0"))


def rewrite_paths(text: str, mounts: Mapping[str, str]) -> str:
    """Replace each mount path (longest first) where it appears as a whole path prefix."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        target = mounts[mount_path]
        clean = mount_path.rstrip("/") or "/"
        pattern = re.compile(
            r"(?<![A-Za-z0-9_./-])" + re.escape(clean) + r"(?=/|$|[^A-Za-z0-9_.-])"
        )
        # A function replacement: the target must not be read as a regex template.
        text = pattern.sub(_constant(target), text)
    return text


def _constant(replacement: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: replacement


def container_mounts(
    container: Mapping[str, Any], volume_dirs: Mapping[str, str]
) -> dict[str, str]:
    """mountPath -> local directory, for the container's volumeMounts."""
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        base = volume_dirs.get(mount["name"])
        if base is None:
            raise PodSpecError(
                "CreateContainerConfigError", f"volume {mount['name']!r} is not defined"
            )
        sub_path = mount.get("subPath")
        mounts[mount["mountPath"]] = str(PurePosixPath(base) / sub_path) if sub_path else base
    return mounts


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args, `$(VAR)`-expanded. Without a command, the project's images run
    `slmops` (their entrypoint)."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        command = ["slmops"]
    return [expand_variables(part, env) for part in command + args]


def restart_wanted(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def pod_phase(exit_codes: list[int | None]) -> str:
    """The pod phase from its containers' latest exit codes (None = still running or
    going to restart)."""
    if any(code is None for code in exit_codes):
        return "Running"
    if all(code == 0 for code in exit_codes):
        return "Succeeded"
    return "Failed"


def http_probe_target(
    probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str
) -> tuple[str, float, float, int] | None:
    """(url, initialDelaySeconds, periodSeconds, failureThreshold) of an httpGet probe."""
    http_get = probe.get("httpGet")
    if not http_get:
        return None
    port = http_get.get("port")
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if port not in named:
            raise PodSpecError("CreateContainerConfigError", f"unknown probe port name {port!r}")
        port = named[port]
    host = http_get.get("host") or pod_ip
    scheme = str(http_get.get("scheme", "HTTP")).lower()
    path = http_get.get("path", "/")
    if not path.startswith("/"):
        path = "/" + path
    return (
        f"{scheme}://{host}:{port}{path}",
        float(probe.get("initialDelaySeconds", 0)),
        float(probe.get("periodSeconds", 10)),
        int(probe.get("failureThreshold", 3)),
    )
