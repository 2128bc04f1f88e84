"""Hardware profiles of simulated edge nodes, with the label names real clusters carry.

Labels follow the standards the operator consumes: `kubernetes.io/arch`, Node Feature
Discovery's `feature.node.kubernetes.io/cpu-cpuid.*`, NVIDIA GPU feature discovery's
`nvidia.com/gpu.*` (memory in MiB), topology zone/region, plus two of the project's own:
`slmops.io/site` and `slmops.io/hardware-class`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HARDWARE_CLASS_LABEL = "slmops.io/hardware-class"
SITE_LABEL = "slmops.io/site"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
HOSTNAME_LABEL = "kubernetes.io/hostname"
SIMULATED_NODE_LABEL = "slmops.io/simulated"

# Image repositories whose containers the simulator really runs as local processes.
DEFAULT_ALLOWED_IMAGE_REPOSITORIES = ("slmops-runtime", "slmops-builder", "slmops-operator")

# Sites of the simulated fleet; nodes are spread round-robin over them.
SITES = (
    ("store-berlin", "eu-central", "eu-central-1a"),
    ("store-paris", "eu-west", "eu-west-1a"),
    ("plant-austin", "us-south", "us-south-1a"),
)


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    arch: str
    cpu_cores: int
    memory_mib: int
    labels: dict[str, str]
    ephemeral_storage_gib: int = 64
    max_pods: int = 110
    gpus: int = 0
    kernel: str = "6.1.0-edge"
    os_image: str = "Debian GNU/Linux 12 (bookworm)"
    extra_capacity: dict[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        capacity = {
            "cpu": str(self.cpu_cores),
            "memory": f"{self.memory_mib}Mi",
            "pods": str(self.max_pods),
            "ephemeral-storage": f"{self.ephemeral_storage_gib}Gi",
            **self.extra_capacity,
        }
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        return capacity

    def allocatable(self) -> dict[str, str]:
        """What is left after the system and kubelet reservations a real node makes."""
        reserved_cpu_millis = 250 if self.cpu_cores <= 8 else 500
        reserved_memory_mib = 512 if self.memory_mib <= 16 * 1024 else 1024
        allocatable = self.capacity()
        allocatable["cpu"] = f"{self.cpu_cores * 1000 - reserved_cpu_millis}m"
        allocatable["memory"] = f"{self.memory_mib - reserved_memory_mib}Mi"
        allocatable["ephemeral-storage"] = f"{self.ephemeral_storage_gib - 4}Gi"
        return allocatable


PROFILES: dict[str, HardwareProfile] = {
    "rpi5": HardwareProfile(
        name="rpi5",
        arch="arm64",
        cpu_cores=4,
        memory_mib=8 * 1024,
        ephemeral_storage_gib=64,
        kernel="6.6.31+rpt-rpi-2712",
        labels={
            "feature.node.kubernetes.io/cpu-cpuid.ASIMD": "true",
            "feature.node.kubernetes.io/cpu-cpuid.ASIMDDP": "true",
            "feature.node.kubernetes.io/cpu-model.vendor_id": "ARM",
        },
    ),
    "jetson-orin": HardwareProfile(
        name="jetson-orin",
        arch="arm64",
        cpu_cores=8,
        memory_mib=16 * 1024,
        ephemeral_storage_gib=128,
        gpus=1,
        kernel="5.15.136-tegra",
        os_image="Ubuntu 22.04.4 LTS",
        labels={
            "feature.node.kubernetes.io/cpu-cpuid.ASIMD": "true",
            "feature.node.kubernetes.io/cpu-cpuid.ASIMDDP": "true",
            "feature.node.kubernetes.io/cpu-model.vendor_id": "ARM",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": "Orin",
            # Orin shares system memory with the GPU; GFD reports it in MiB.
            "nvidia.com/gpu.memory": "15360",
            "nvidia.com/gpu.count": "1",
            "nvidia.com/gpu.family": "ampere",
        },
    ),
    "x86-vnni": HardwareProfile(
        name="x86-vnni",
        arch="amd64",
        cpu_cores=16,
        memory_mib=32 * 1024,
        ephemeral_storage_gib=256,
        labels={
            "feature.node.kubernetes.io/cpu-cpuid.AVX2": "true",
            "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true",
            "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI": "true",
            "feature.node.kubernetes.io/cpu-cpuid.FMA3": "true",
            "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
        },
    ),
    "x86-avx2": HardwareProfile(
        name="x86-avx2",
        arch="amd64",
        cpu_cores=4,
        memory_mib=16 * 1024,
        ephemeral_storage_gib=128,
        labels={
            "feature.node.kubernetes.io/cpu-cpuid.AVX2": "true",
            "feature.node.kubernetes.io/cpu-cpuid.FMA3": "true",
            "feature.node.kubernetes.io/cpu-model.vendor_id": "AMD",
        },
    ),
}


def node_name(profile: str, index: int) -> str:
    return f"edge-{profile}-{index:04d}"


def node_labels(profile: HardwareProfile, name: str, index: int) -> dict[str, str]:
    site, region, zone = SITES[index % len(SITES)]
    return {
        "kubernetes.io/arch": profile.arch,
        "kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": profile.arch,
        "beta.kubernetes.io/os": "linux",
        HOSTNAME_LABEL: name,
        ZONE_LABEL: zone,
        REGION_LABEL: region,
        SITE_LABEL: site,
        HARDWARE_CLASS_LABEL: profile.name,
        SIMULATED_NODE_LABEL: "true",
        **profile.labels,
    }


def node_manifest(profile: HardwareProfile, name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels(profile, name, index)},
        "spec": {},
    }


def node_info(profile: HardwareProfile, name: str) -> dict[str, str]:
    return {
        "architecture": profile.arch,
        "operatingSystem": "linux",
        "osImage": profile.os_image,
        "kernelVersion": profile.kernel,
        "kubeletVersion": "v1.20.2-slmops-sim",
        "kubeProxyVersion": "v1.20.2-slmops-sim",
        "containerRuntimeVersion": "slmops-sim://0.1",
        "machineID": name,
        "systemUUID": name,
        "bootID": name,
    }
