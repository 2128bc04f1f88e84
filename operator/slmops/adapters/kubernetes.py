"""Writes to the Kubernetes API for the rollout controller: apply children, patch status.

Reads do not come through here: the controller keeps nodes, pods, workloads and models in
kopf indexes fed by watches, so a reconcile costs no list calls. What is left are writes,
and they are made cheap: server-side apply under one field manager (the apiserver itself
turns an unchanged manifest into a no-op), a memory of what was last applied so unchanged
children cost no request at all, and status patches only when the status changed.

The `kubernetes` client is synchronous; calls run in worker threads so that a slow
apiserver never blocks kopf's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config

FIELD_MANAGER = "slmops-operator"


class KubeError(Exception):
    """A Kubernetes API call failed; the message names the object and the reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Resource:
    """Where objects of one kind live in the API."""

    group_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


RESOURCES: dict[tuple[str, str], Resource] = {
    ("apps/v1", "DaemonSet"): Resource("apps/v1", "daemonsets"),
    ("v1", "Service"): Resource("v1", "services"),
    ("networking.k8s.io/v1", "NetworkPolicy"): Resource("networking.k8s.io/v1", "networkpolicies"),
    ("slmops.io/v1alpha1", "EdgeRollout"): Resource("slmops.io/v1alpha1", "edgerollouts"),
    ("slmops.io/v1alpha1", "SLMModel"): Resource("slmops.io/v1alpha1", "slmmodels"),
}


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise KubeError(f"no API path known for {kind} {api_version}") from None


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client for the cluster the operator runs in, or of a kubeconfig (default: the
    KUBECONFIG environment variable, then ~/.kube/config). Nothing global is changed, so
    clients for two clusters can live in one process."""
    if kubeconfig is None:
        in_cluster = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=in_cluster)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            pass
        else:
            return client.ApiClient(in_cluster)
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    api: client.ApiClient = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
    return api


def manifest_fingerprint(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


class KubeWriter:
    """The controller's writes to the API."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # (kind, namespace, name) -> fingerprint of the manifest last applied successfully.
        self._applied: dict[tuple[str, str, str], str] = {}

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: object | None = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        http_method, url, headers, serialized, post = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                http_method, url, header_params=headers, body=serialized, post_params=post
            )
            data = response.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # An apiserver restarting or out of reach is a condition to wait out, like an
            # HTTP error: the reconcile loop retries a KubeError with a warning, while any
            # other exception is logged as a bug in the operator, with its traceback.
            raise KubeError(f"{method} {path}: the API server did not answer ({error})") from error
        if not 200 <= response.status < 300:
            raise KubeError(
                f"{method} {path} failed: HTTP {response.status} {_api_reason(data, response)}",
                status=response.status,
            )
        return json.loads(data) if data else None

    async def apply(self, manifest: Mapping[str, Any], *, force: bool = True) -> bool:
        """Server-side apply; False when it was skipped because nothing changed since the
        last successful apply by this process."""
        metadata = manifest["metadata"]
        key = (str(manifest["kind"]), str(metadata.get("namespace", "")), str(metadata["name"]))
        fingerprint = manifest_fingerprint(manifest)
        if self._applied.get(key) == fingerprint:
            return False
        resource = resource_of(str(manifest["apiVersion"]), str(manifest["kind"]))
        path = resource.path(metadata.get("namespace"), metadata["name"])
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            # Ours alone: another manager's edits to fields we own are overwritten, not
            # left to block every later apply with a conflict.
            query.append(("force", "true"))
        await asyncio.to_thread(
            self._call,
            "PATCH",
            path,
            body=dict(manifest),
            content_type="application/apply-patch+yaml",
            query=query,
        )
        self._applied[key] = fingerprint
        return True

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Drop the memory of an apply (the object was deleted behind our back)."""
        self._applied.pop((kind, namespace, name), None)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete an object (its dependents in the background); False if it was gone."""
        resource = resource_of(api_version, kind)
        self._applied.pop((kind, namespace, name), None)
        try:
            await asyncio.to_thread(
                self._call,
                "DELETE",
                resource.path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; returns the updated object.

        `status` should carry every field, None for absent ones: in a merge patch None
        deletes, so the stored status becomes exactly `status`.
        """
        resource = resource_of(api_version, kind)
        result: dict[str, Any] = await asyncio.to_thread(
            self._call,
            "PATCH",
            resource.path(namespace, name) + "/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        return result

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        resource = resource_of(api_version, kind)
        try:
            found: dict[str, Any] = await asyncio.to_thread(
                self._call, "GET", resource.path(namespace, name)
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found


def _api_reason(data: bytes | None, response: Any) -> str:
    try:
        body = json.loads(data or b"{}")
    except (TypeError, ValueError):
        return str(response.reason or "")
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or response.reason or "")
