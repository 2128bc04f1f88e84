"""Validating admission for both kinds: what the CRD schema cannot say on Kubernetes 1.20.

Enabled by `slmops operator --admission-listen ADDR:PORT` (env SLMOPS_ADMISSION_LISTEN).
kopf serves the webhook and manages the ValidatingWebhookConfiguration `slmops.io`. The
webhooks are registered with failurePolicy Ignore on purpose: while the operator is down
(upgrades, crashes) the schema still guards every field and the reconcilers re-check the
same rules (domain/admission.py), so a missing operator never blocks `kubectl apply` or an
Argo CD sync.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import kopf

from slmops.adapters.certificates import make_serving_certificate
from slmops.api.v1alpha1.common import GROUP, VERSION
from slmops.api.v1alpha1.slmmodel import SLMModelStatus
from slmops.domain.admission import ClusterFacts, Review, review_edgerollout, review_slmmodel

LISTEN_ENV = "SLMOPS_ADMISSION_LISTEN"
HOST_ENV = "SLMOPS_ADMISSION_HOST"
CERT_DIR_ENV = "SLMOPS_ADMISSION_CERT_DIR"
WEBHOOK_CONFIGURATION = "slmops.io"


@kopf.on.startup()
def configure_admission(settings: kopf.OperatorSettings, **_: Any) -> None:
    listen = os.environ[LISTEN_ENV]
    addr, _colon, port = listen.rpartition(":")
    host = os.environ.get(HOST_ENV) or addr
    cert_dir = os.environ.get(CERT_DIR_ENV)
    if cert_dir:
        directory = Path(cert_dir)
        certfile, pkeyfile = directory / "tls.crt", directory / "tls.key"
        ca_pem = (directory / "ca.crt").read_bytes()
    else:
        generated = make_serving_certificate(
            Path(tempfile.mkdtemp(prefix="slmops-admission-")), [host, addr]
        )
        certfile, pkeyfile, ca_pem = generated.certfile, generated.pkeyfile, generated.ca_pem
    settings.admission.server = kopf.WebhookServer(
        addr=addr,
        port=int(port),
        host=host,
        certfile=str(certfile),
        pkeyfile=str(pkeyfile),
        cadata=ca_pem,
    )
    settings.admission.managed = WEBHOOK_CONFIGURATION


@kopf.index("nodes")
def admission_node_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


@kopf.index(GROUP, VERSION, "slmmodels")
def admission_models(
    namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, name): dict(status)}


def _refuse_or_warn(review: Review, warnings: list[str]) -> None:
    warnings.extend(review.warnings)
    if not review.allowed:
        raise kopf.AdmissionError(review.summary(), code=422)


@kopf.on.validate(
    GROUP, VERSION, "slmmodels", operations=["CREATE", "UPDATE"], ignore_failures=True
)
def validate_slmmodel(spec: kopf.Spec, warnings: list[str], **_: Any) -> None:
    _refuse_or_warn(review_slmmodel(dict(spec)), warnings)


@kopf.on.validate(
    GROUP, VERSION, "edgerollouts", operations=["CREATE", "UPDATE"], ignore_failures=True
)
def validate_edgerollout(
    spec: kopf.Spec, namespace: str | None, warnings: list[str], **kwargs: Any
) -> None:
    # kopf passes every index by its function's name.
    node_index: kopf.Index[str, dict[str, str]] = kwargs["admission_node_labels"]
    admission_models: kopf.Index[tuple[str | None, str], dict[str, Any]] = kwargs[
        "admission_models"
    ]
    model_name = str((spec.get("model") or {}).get("name", ""))
    statuses = list(admission_models.get((namespace, model_name), []))
    model_status = None
    if statuses and statuses[0]:
        try:
            model_status = SLMModelStatus.model_validate(statuses[0])
        except ValueError:
            model_status = None  # a status we cannot read never blocks an apply
    facts = ClusterFacts(
        node_labels={name: labels for name, store in node_index.items() for labels in store},
        model_status=model_status,
        model_exists=bool(statuses),
    )
    _refuse_or_warn(review_edgerollout(dict(spec), facts), warnings)
