"""The edge agent's composition root: one link and one poller per configured device."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from contracts import TemperatureBody
from edge.config import DeviceConfig, StationConfig
from edge.link import DeviceLink
from edge.probes import ProbePoller
from edge.sequence import SequenceStore

log = logging.getLogger(__name__)


class EdgeAgent:
    """Runs every device of a station until ``stop`` is set."""

    def __init__(self, config: StationConfig) -> None:
        self.config = config

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:  # one device failing stops the agent
            for device in self.config.devices:
                group.create_task(self._run_device(device, stop))

    async def _run_device(self, device: DeviceConfig, stop: asyncio.Event) -> None:
        with SequenceStore(self.config.data_dir / f"{device.id}.seq.json") as sequence:
            link = DeviceLink(
                station=self.config.station,
                device=device.id,
                password=device.secret(),
                broker=self.config.broker,
                sequence=sequence,
            )
            log.info("%s: boot %d, %d probes", device.id, sequence.boot, _probe_count(device))
            link.start()
            try:

                def publish(reading: TemperatureBody) -> None:
                    link.publish(link.envelope(reading))

                await ProbePoller(device.modbus, device.interval_s, publish).run(stop)
            finally:
                await asyncio.to_thread(link.stop)
                log.info(
                    "%s: stopped; %d published, %d dropped", device.id, link.published, link.dropped
                )


def _probe_count(device: DeviceConfig) -> int:
    return sum(len(bus.probes) for bus in device.modbus)


async def run_until_signalled(agent: EdgeAgent) -> None:
    """Run the agent until SIGINT or SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)
