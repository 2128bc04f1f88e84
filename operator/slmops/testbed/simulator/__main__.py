"""`python -m slmops.testbed.simulator --config FILE`: run the edge-fleet simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web

from slmops.testbed.simulator.apiclient import KubeApi
from slmops.testbed.simulator.config import SimulatorConfig
from slmops.testbed.simulator.control_api import ControlApi
from slmops.testbed.simulator.faults import Faults
from slmops.testbed.simulator.kubelet import Kubelet
from slmops.testbed.simulator.nodes import NodeHeartbeats, plan_fleet


async def run(config: SimulatorConfig) -> None:
    nodes = plan_fleet(config.nodes_per_profile, config.pod_ip_octet)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    kubeconfig = Path(config.state_dir) / "controlplane" / "kubeconfig"
    async with KubeApi(config.apiserver_url, config.token) as api:
        heartbeats = NodeHeartbeats(
            api,
            nodes,
            config.lease_renew_seconds,
            config.lease_duration_seconds,
            config.node_status_seconds,
        )
        kubelet = Kubelet(api, config, heartbeats.nodes, kubeconfig)
        control = ControlApi(heartbeats, kubelet, Faults(heartbeats, kubelet))
        runner = web.AppRunner(control.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", config.control_port).start()
        await heartbeats.register_all()
        logging.info("registered %d nodes", len(nodes))
        tasks = [
            asyncio.create_task(heartbeats.run(), name="heartbeats"),
            asyncio.create_task(kubelet.run(), name="kubelet"),
        ]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                logging.error(
                    "simulator task %s failed", task.get_name(), exc_info=task.exception()
                )
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await kubelet.stop_all()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m slmops.testbed.simulator")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(SimulatorConfig.read(args.config)))


if __name__ == "__main__":
    main()
