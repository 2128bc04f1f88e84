"""The slmops.io/v1alpha1 API: the single source of truth for both CRDs."""

from slmops.api.v1alpha1.common import API_VERSION, GROUP, VERSION, Condition, LabelSelector
from slmops.api.v1alpha1.edgerollout import EdgeRollout, EdgeRolloutSpec, EdgeRolloutStatus
from slmops.api.v1alpha1.slmmodel import SLMModel, SLMModelSpec, SLMModelStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "EdgeRollout",
    "EdgeRolloutSpec",
    "EdgeRolloutStatus",
    "LabelSelector",
    "SLMModel",
    "SLMModelSpec",
    "SLMModelStatus",
]
