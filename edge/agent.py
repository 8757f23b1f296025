"""The edge agent's composition root: the station's outbox and command log, its devices,
the health report, and configuration reloads.

The agent runs in generations: every device of the current configuration runs until the
agent stops or a ``reload_config`` command swaps in a new, validated configuration; then
the devices stop cleanly and the next generation starts with the new one. The outbox
and command log stay open across generations, so nothing is lost or repeated by a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from pydantic import BaseModel, JsonValue

from contracts import HealthBody
from contracts.configfile import ConfigFileError
from contracts.timestamps import utc_now
from edge.commandlog import CommandLog
from edge.commands import CommandFailed, Handler
from edge.config import StationConfig, load_station_config
from edge.device import DeviceRuntime
from edge.health import HealthSampler
from edge.outbox import Outbox

log = logging.getLogger(__name__)

_MB = 1024 * 1024


class EdgeAgent:
    """Runs every device of a station until ``stop`` is set."""

    def __init__(
        self,
        config: StationConfig,
        *,
        config_path: Path | None = None,
        clerk_device: str | None = None,
        panel_device: str | None = None,
    ) -> None:
        self.config = config
        self._clerk_device = clerk_device
        self._panel_device = panel_device
        self._config_path = config_path
        self._next_config: StationConfig | None = None
        self._generation = asyncio.Event()
        self._runtimes: dict[str, DeviceRuntime] = {}
        self._health: HealthSampler | None = None
        self._thinned_at_start = 0
        self.outbox = Outbox(
            config.data_dir / "outbox.sqlite",
            max_bytes=int(config.limits.outbox_max_mb * _MB),
            thin_window_s=config.limits.thin_window_s,
        )
        self.commands = CommandLog(config.data_dir / "commands.sqlite")

    async def run(self, stop: asyncio.Event) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._health = HealthSampler(self.config.data_dir)
        with self.outbox, self.commands:
            self._thinned_at_start = self.outbox.stats().thinned
            while not stop.is_set():
                await self._run_generation(stop)
                if self._next_config is None:
                    break
                self.config, self._next_config = self._next_config, None
                log.info("configuration reloaded: %d devices", len(self.config.devices))

    async def _run_generation(self, stop: asyncio.Event) -> None:
        self._generation = generation = asyncio.Event()
        station_handlers = {
            "report_status": self._report_status_handler,
            "reload_config": self._reload_handler,
        }
        self._runtimes = {
            device.id: DeviceRuntime(
                self.config,
                device,
                outbox=self.outbox,
                commands=self.commands,
                station_handlers=station_handlers,
                on_answered=self._reload_if_asked,
                clerk_terminal=device.id == self._clerk_device,
                panel_terminal=device.id == self._panel_device,
            )
            for device in self.config.devices
        }

        async def end_generation_on_stop() -> None:
            await stop.wait()
            generation.set()

        # Devices end by themselves when the generation ends, so each stops cleanly (its
        # link says offline); only the helpers are cancelled. One device failing stops all.
        async with asyncio.TaskGroup() as group:
            for runtime in self._runtimes.values():
                group.create_task(runtime.run(generation))
            helpers = [
                group.create_task(end_generation_on_stop()),
                group.create_task(self._health_loop()),
            ]
            await generation.wait()
            for task in helpers:
                task.cancel()

    # -- health ---------------------------------------------------------------------

    def health(self) -> HealthBody:
        """The agent's health now."""
        if self._health is None:
            raise RuntimeError("the agent is not running")
        stats = self.outbox.stats()
        now_ms = utc_now().timestamp() * 1000
        oldest = None if stats.oldest_ts_ms is None else max(0.0, now_ms - stats.oldest_ts_ms)
        return self._health.sample(
            outbox_depth=stats.depth,
            outbox_bytes=stats.bytes,
            oldest_unconfirmed_s=None if oldest is None else oldest / 1000,
            thinned=stats.thinned,
            links={device: runtime.link_state for device, runtime in self._runtimes.items()},
            warnings=self._warnings(stats.thinned, stats.over_quota),
        )

    def _warnings(self, thinned: int, over_quota: bool) -> list[str]:
        warnings = []
        if thinned > self._thinned_at_start:
            warnings.append(
                f"outbox full: {thinned - self._thinned_at_start} temperature readings "
                "thinned since start"
            )
        if over_quota:
            warnings.append("outbox over its quota with events only; nothing more can be thinned")
        for device, runtime in self._runtimes.items():
            failure = runtime.link_failure
            if failure is not None:
                warnings.append(f"{device}: {failure}")
            if runtime.emit_failures:
                warnings.append(f"{device}: {runtime.emit_failures} messages could not be kept")
        return warnings

    def _publish_health(self) -> HealthBody:
        body = self.health()
        runtime = self._runtimes.get(self.config.health_device)
        if runtime is not None and runtime.running:
            runtime.emit(body)
        return body

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health.interval_s)
            self._publish_health()

    # -- station-wide commands --------------------------------------------------------

    def _reload_if_asked(self) -> None:
        """After a command's result is in the outbox: end the generation for a reload."""
        if self._next_config is not None:
            self._generation.set()

    def _report_status_handler(self, device: str) -> Handler:
        async def handle(args: BaseModel) -> dict[str, JsonValue]:
            body = self._publish_health()
            result: dict[str, JsonValue] = body.model_dump(mode="json")
            return result

        return handle

    def _reload_handler(self, device: str) -> Handler:
        async def handle(args: BaseModel) -> dict[str, JsonValue]:
            new = self._load_for_reload()
            self._next_config = new  # swapped in once this result is in the outbox
            return {"devices": [d.id for d in new.devices]}

        return handle

    def _load_for_reload(self) -> StationConfig:
        if self._config_path is None:
            raise CommandFailed("unsupported", "this agent was not started from a config file")
        try:
            new = load_station_config(self._config_path)
        except ConfigFileError as exc:
            raise CommandFailed("invalid_config", str(exc)[:480]) from None
        old = self.config
        if (new.station, new.data_dir, new.limits.outbox_max_mb, new.limits.thin_window_s) != (
            old.station,
            old.data_dir,
            old.limits.outbox_max_mb,
            old.limits.thin_window_s,
        ):
            raise CommandFailed(
                "restart_required",
                "station, data_dir and the outbox limits change only with a restart",
            )
        return new


async def run_until_signalled(agent: EdgeAgent) -> None:
    """Run the agent until SIGINT or SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)
