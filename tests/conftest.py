"""Shared fixtures. The testbed fixtures (a real control plane, Prometheus, registry and
the edge-fleet simulator) come from the `slmops.testbed.pytest_plugin` plugin."""

pytest_plugins = ["slmops.testbed.pytest_plugin"]
