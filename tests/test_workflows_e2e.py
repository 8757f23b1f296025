"""The station workflows end to end: simulators → edge agent → Mosquitto → gateway → back.

The agent runs in this process on a background loop, so a test can take the clerk's,
courier's or recipient's steps on its workflow objects; the simulators run on that loop
too. The gateway (registry, SQLite ledger and telemetry store) runs in this process and
is stopped and started again where a test needs it offline. This module holds the
counter and sorter scenarios and the :class:`Rig` that ``tests/test_locker_e2e.py``
shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from contracts import (
    AnyBody,
    AnyEnvelope,
    DecisionMessage,
    SortDecision,
    XrayBody,
    encode,
    make_envelope,
    utc_now,
)
from edge.agent import EdgeAgent
from edge.config import load_station_config
from edge.workflows.counter import CounterRefusal, CounterWorkflow
from edge.workflows.sorter import SorterWorkflow
from firmware_bridge.sim.idcard import (
    SAMPLE_IDENTITY,
    IdCardScenario,
    IdCardSimulator,
    SimulatedAnswer,
)
from firmware_bridge.sim.scanner import ScannerScenario, ScannerSimulator, SimulatedCode
from firmware_bridge.sim.sorter import SimParcel, SorterScenario, SorterSimulator
from firmware_bridge.sorter import registers as reg
from gateway.config import BrokerConfig, GatewayConfig, IngestConfig, LedgerConfig
from gateway.personal import Keyring
from gateway.service import GatewayWorker
from gateway.telemetry import open_store
from gateway.telemetry.config import SqliteStoreConfig
from postedge.localservers import Mosquitto
from tests.conftest import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import BackgroundLoop, FakeClock, Observer, Publisher, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.hil]

T = TypeVar("T")


class Simulator(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=Simulator)
STATION = "county-7"
COUNTER, XRAY, SORTER, LOCKER = "counter-1", "xray-1", "sorter-1", "locker-1"
ROLES = {COUNTER: "counter", XRAY: "xray", LOCKER: "locker", SORTER: "sorter"}
EXCEPTION_CHUTE = 24
TO_TANGYIN, TO_XICHENG = "410523101001", "110102000000"  # routes 410523 → 5, 11 → 7
REGISTRY = (
    f'[[stations]]\nid = "{STATION}"\nname = "汤阴县分拣中心"\ndivision = "410523000000"\n'
    'tier = "county"\n'
    + "".join(
        f'\n[[devices]]\nid = "{device}"\nstation = "{STATION}"\nrole = "{role}"\n'
        for device, role in ROLES.items()  # the sorter last: the routing table is its own
    )
    + f"\n[devices.routing]\nexception_chute = {EXCEPTION_CHUTE}\n"
    'routes = { "4105" = 3, "410523" = 5, "11" = 7 }\n'
)
PERSONAL = (SAMPLE_IDENTITY.name, SAMPLE_IDENTITY.id_number, SAMPLE_IDENTITY.authority)


@dataclass(frozen=True)
class Stored:
    """One event point in the gateway's telemetry store."""

    time_ns: int
    seq: int
    msg_id: str
    kind: str
    body: dict[str, Any]


class Gateway:
    """The gateway in this process, with its registry, ledger and store; it may be stopped
    and started again (a new worker on the same persistent sessions)."""

    def __init__(self, tmp_path: Path, broker: Mosquitto) -> None:
        registry = tmp_path / "registry.toml"
        registry.write_text(REGISTRY)
        keys = tmp_path / "personal.keys"
        keys.write_text(Keyring.generate().dump())
        keys.chmod(0o600)
        self.store_path = tmp_path / "telemetry.sqlite"
        self.config = GatewayConfig(
            broker=BrokerConfig(
                host=broker.host, port=broker.port, username=GATEWAY_USER,
                password=GATEWAY_PASSWORD, client_id="gw-e2e", reconnect_max_s=1,
            ),
            store=SqliteStoreConfig(kind="sqlite", path=self.store_path),
            ingest=IngestConfig(batch_wait_ms=5),
            registry=registry,
            ledger=LedgerConfig(url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", keys_file=keys),
        )  # fmt: skip
        self.codes: dict[str, str] = {}
        """Clear pickup codes by waybill, as the SMS gateway would get them."""
        self.worker: GatewayWorker | None = None
        self._store = open_store(self.config.store)

    def start(self) -> None:
        worker = GatewayWorker(self.config, client_id="gw-e2e", notify_pickup=self._notify)
        worker.start()
        self.worker = worker
        assert worker.wait_ready(10)

    def stop(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()

    def close(self) -> None:
        self.stop()
        self._store.close()

    def _notify(self, station: str, device: str, waybill: str, code: str) -> None:
        assert (station, device) == (STATION, LOCKER)
        self.codes[waybill] = code

    def count(self, name: str) -> int:
        assert self.worker is not None
        return self.worker.counters.snapshot().get(name, 0)

    def wait_count(self, name: str, value: int, timeout: float = 15) -> None:
        wait_until(lambda: self.count(name) == value, timeout, f"gateway counter {name} = {value}")

    def events(self, device: str, kind: str | None = None) -> list[Stored]:
        """The device's events in the telemetry store, in time order."""
        self._store.open()
        found = []
        for tags in self._store.series("event"):
            if tags["device"] != device or kind not in (None, tags["kind"]):
                continue
            columns = [
                self._store.query_series("event", name, tags) for name in ("seq", "msg_id", "body")
            ]
            for seq, msg_id, body in zip(*columns, strict=True):
                found.append(
                    Stored(seq.time_ns, int(seq.value), str(msg_id.value), tags["kind"],
                           json.loads(str(body.value)))
                )  # fmt: skip
        return sorted(found, key=lambda event: event.time_ns)


class Agent:
    """An :class:`EdgeAgent` running on the background loop until :meth:`stop`."""

    def __init__(self, background: BackgroundLoop, config: Path) -> None:
        self.agent = EdgeAgent(load_station_config(config), config_path=config)
        self._loop = background.loop
        self._stop = asyncio.Event()
        self._running: Future[None] = asyncio.run_coroutine_threadsafe(
            self.agent.run(self._stop), background.loop
        )

    def workflow(self, device: str, kind: type[T]) -> T:
        """The device's workflow once it runs and the device's link is up (subscribed)."""

        def ready() -> object:
            if self._running.done():
                self._running.result()  # the agent failed: say why
            runtime = self.agent._runtimes.get(device)
            if runtime is None or not runtime.workflows or runtime.link_state != "up":
                return None
            return runtime.workflows[0]

        workflow = wait_until(ready, 15, f"{device}'s workflow and link")
        assert isinstance(workflow, kind)
        return workflow

    def link_state(self, device: str) -> str:
        return self.agent._runtimes[device].link_state

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._running.result(30)


class Rig:
    """Broker, gateway, simulators and agents of one test, stopped in reverse order."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, stack: contextlib.ExitStack) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self._stack = stack
        self.background = stack.enter_context(BackgroundLoop())
        self.gateway = Gateway(tmp_path, broker)
        stack.callback(self.gateway.close)
        self.gateway.start()
        self.decisions = Observer(
            broker, OBSERVER_USER, OBSERVER_PASSWORD, f"postedge/v1/{STATION}/+/decision"
        )
        stack.callback(self.decisions.close)
        self._seq = itertools.count(1)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coroutine`` on the agent's loop (workflow steps, simulator actions)."""
        result: T = self.background.run(coroutine, timeout)
        return result

    def start_sim(self, sim: S) -> S:
        """Start ``sim`` on the agent's loop; it stops after the agents."""
        self.run(sim.start())
        self._stack.callback(lambda: self.run(sim.stop()))
        return sim

    def start_agent(self, *devices: str) -> Agent:
        """An agent for the station file with ``devices`` (``[[devices]]`` sections).

        Receipts are waited for 1 s only: a test that stops the gateway wants the outbox
        to send again soon once it is back."""
        path = self.tmp_path / "station.toml"
        path.write_text(
            f'station = "{STATION}"\ndata_dir = "edge-data"\n\n'
            f'[broker]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
            "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n\n"
            "[limits]\nreceipt_timeout_s = 1\n\n"
            "[health]\ninterval_s = 3600\n\n" + "\n".join(devices)
        )
        agent = Agent(self.background, path)
        self._stack.callback(agent.stop)
        return agent

    def send(self, device: str, body: AnyBody) -> AnyEnvelope:
        """Publish ``body`` as ``device`` would (a device no agent here plays)."""
        envelope = make_envelope(
            station=STATION, device=device, boot=1, seq=next(self._seq), ts=utc_now(), body=body
        )
        publisher = Publisher(self.broker, device, device_password(device))
        try:
            publisher.publish(f"postedge/v1/{STATION}/{device}/event", encode(envelope))
        finally:
            publisher.close()
        return envelope

    def decision(self, where: Callable[[DecisionMessage], bool]) -> DecisionMessage:
        def found() -> DecisionMessage | None:
            decoded = (
                DecisionMessage.model_validate_json(m.payload) for m in self.decisions.messages
            )
            return next((message for message in decoded if where(message)), None)

        message = wait_until(found, 15, "the gateway's decision")
        assert message is not None
        return message


@pytest.fixture
def rig(tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]) -> Iterator[Rig]:
    with contextlib.ExitStack() as stack:
        yield Rig(tmp_path, make_mosquitto(devices=list(ROLES)), stack)


# --- devices --------------------------------------------------------------------------------


def counter_section(scanner: ScannerSimulator, idcard: IdCardSimulator) -> str:
    return (
        f'[[devices]]\nid = "{COUNTER}"\npassword = "{device_password(COUNTER)}"\n'
        f'scanner = {{ port = "{scanner.device_path}", reader = "counter-scanner" }}\n\n'
        '[devices.counter]\nclerk = "clerk-1"\n'
        f'idcard = {{ port = "{idcard.device_path}", reader = "counter-id", retries = 0 }}\n'
        "id_wait_s = 0.3\nid_read_timeout_s = 0.5\nid_poll_s = 0.02\n"
    )


def sorter_section(sim: SorterSimulator, deadline_ms: int) -> str:
    host, port = sim.address
    return (
        f'[[devices]]\nid = "{SORTER}"\npassword = "{device_password(SORTER)}"\n\n'
        f'[devices.sorter]\nhost = "{host}"\nport = {port}\npoll_interval_ms = 5\n'
        f"timeout_ms = 150\ndeadline_ms = {deadline_ms}\nexception_chute = {EXCEPTION_CHUTE}\n"
    )


@dataclass
class CounterDesk:
    workflow: CounterWorkflow
    scanner: ScannerSimulator


def start_counter(rig: Rig, *more_devices: str) -> tuple[Agent, CounterDesk]:
    """A counter whose ID-card reader has a card for two reads, and then none."""
    scanner = rig.start_sim(
        ScannerSimulator(ScannerScenario((SimulatedCode("YT0", "code128", 0.0),)), autoplay=False)
    )
    card = SimulatedAnswer("card", SAMPLE_IDENTITY, reads=2)
    idcard = rig.start_sim(
        IdCardSimulator(IdCardScenario((card, SimulatedAnswer("none")), repeat=False))
    )
    agent = rig.start_agent(counter_section(scanner, idcard), *more_devices)
    return agent, CounterDesk(agent.workflow(COUNTER, CounterWorkflow), scanner)


async def accept(counter: CounterDesk, waybill: str, destination: str) -> AnyEnvelope:
    """The clerk's steps for one parcel, on the agent's loop."""
    workflow = counter.workflow
    await counter.scanner.scan(SimulatedCode(waybill, "code128", 0.0))
    assert await workflow.begin(5) == waybill
    await workflow.read_id()
    workflow.inspect("干枣 dried dates", True)
    workflow.destination(destination)
    return workflow.submit()


def diverts(sim: SorterSimulator) -> list[tuple[int, int]]:
    """(transaction, chute) of every divert the PLC accepted."""
    return [
        (command.transaction, command.chute)
        for command, result in list(sim.plc.commands)
        if command is not None and result is reg.CommandResult.ACCEPTED
    ]


def sorter_sim(clock: FakeClock, *parcels: SimParcel) -> SorterSimulator:
    """A PLC whose parcels arrive when the test moves ``clock``; it never gives up itself."""
    scenario = SorterScenario(
        parcels=parcels, travel_s=0.0, decision_timeout_s=1e6, ack_timeout_s=1e6
    )
    return SorterSimulator(scenario, clock=clock)


# --- counter --------------------------------------------------------------------------------


def test_a_counter_acceptance_reaches_the_ledger_and_refusals_publish_nothing(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("edge", "gateway"):
        caplog.set_level(logging.DEBUG, logger=name)
    agent, counter = start_counter(rig)
    workflow = counter.workflow

    envelope = rig.run(accept(counter, "YT7000001", TO_XICHENG))
    assert envelope.kind == "acceptance"
    enqueued = agent.agent.outbox.stats().enqueued

    async def not_inspected() -> None:
        await counter.scanner.scan(SimulatedCode("YT7000002", "code128", 0.0))
        await workflow.begin(5)
        await workflow.read_id()  # the card's second read
        with pytest.raises(CounterRefusal) as refusal:
            workflow.inspect("干枣 dried dates", False)
        assert refusal.value.reason == "not_inspected"
        workflow.destination(TO_XICHENG)
        with pytest.raises(CounterRefusal) as refusal:
            workflow.submit()
        assert refusal.value.reason == "no_inspection"

    async def no_card() -> None:
        await counter.scanner.scan(SimulatedCode("YT7000003", "code128", 0.0))
        await workflow.begin(5)
        with pytest.raises(CounterRefusal) as refusal:
            await workflow.read_id()  # the reader has no card now
        assert refusal.value.reason == "no_identity"
        workflow.inspect("干枣 dried dates", True)
        workflow.destination(TO_XICHENG)
        with pytest.raises(CounterRefusal) as refusal:
            workflow.submit()
        assert refusal.value.reason == "no_identity"

    rig.run(not_inspected())
    rig.run(no_card())
    assert workflow.stats.accepted == 1
    assert workflow.stats.refused == {"not_inspected": 1, "no_inspection": 1, "no_identity": 2}

    rig.gateway.wait_count("acceptance.accepted", 1)
    stored = wait_until(lambda: rig.gateway.events(COUNTER, "acceptance"), 15, "the event")
    assert [(event.seq, event.body["waybill"]) for event in stored] == [(envelope.seq, "YT7000001")]
    assert not {"sender", "sender_phone"} & stored[0].body.keys()
    wait_until(lambda: agent.agent.outbox.depth(COUNTER) == 0, 15, "the receipt")
    assert agent.agent.outbox.stats().enqueued == enqueued  # the refusals left nothing
    assert rig.gateway.count("acceptance.accepted") == 1
    store_files = b"".join(p.read_bytes() for p in rig.tmp_path.glob("telemetry.sqlite*"))
    for secret in PERSONAL:
        assert secret.encode() not in store_files
        assert secret not in caplog.text


# --- sorter ---------------------------------------------------------------------------------


def test_an_accepted_and_screened_parcel_is_routed_and_one_without_xray_is_not(
    rig: Rig,
) -> None:
    """Counter → X-ray PASS → induction → the gateway's chute, through the real PLC sim;
    an accepted parcel with no X-ray goes to the exception chute by the gateway's word."""
    clock = FakeClock()
    plc = rig.start_sim(
        sorter_sim(
            clock,
            SimParcel(1.0, 7001, barcode="YT7100001"),
            SimParcel(2.0, 7002, barcode="YT7100002"),
        )
    )
    agent, counter = start_counter(rig, sorter_section(plc, deadline_ms=3000))
    sorter = agent.workflow(SORTER, SorterWorkflow)

    rig.run(accept(counter, "YT7100001", TO_TANGYIN))
    rig.run(accept(counter, "YT7100002", TO_XICHENG))
    rig.send(XRAY, XrayBody(waybill="YT7100001", verdict="PASS", operator="op-1",
                            image="img-1", scanned_at=utc_now()))  # fmt: skip
    rig.gateway.wait_count("acceptance.accepted", 2)
    rig.gateway.wait_count("xray.pass", 1)

    clock.at(1.0)  # the first parcel reaches the induction point
    wait_until(lambda: (7001, 5) in diverts(plc), 10, "the divert to chute 5 (route 410523)")
    clock.at(2.0)
    wait_until(lambda: (7002, EXCEPTION_CHUTE) in diverts(plc), 10, "the exception divert")
    second = rig.decision(
        lambda m: isinstance(m.body, SortDecision) and m.body.transaction == 7002
    ).body
    assert isinstance(second, SortDecision)
    assert (second.chute, second.reason, second.waybill) == (
        EXCEPTION_CHUTE,
        "no_xray",
        "YT7100002",
    )

    assert diverts(plc) == [(7001, 5), (7002, EXCEPTION_CHUTE)]
    stats = sorter.stats  # counted once the PLC has answered the divert, after it shows
    wait_until(lambda: stats.routed == 2, 10, "both diverts counted as routed")
    assert (stats.inductions, stats.routed, stats.deadline_missed) == (2, 2, 0)
    assert (rig.gateway.count("sort.routed"), rig.gateway.count("sort.exception.no_xray")) == (1, 1)
    wait_until(lambda: len(rig.gateway.events(SORTER, "divert")) == 2, 15, "the confirmations")
    confirmed = rig.gateway.events(SORTER, "divert")
    assert [(e.body["transaction"], e.body["chute"], e.body["outcome"]) for e in confirmed] == [
        (7001, 5, "diverted"), (7002, EXCEPTION_CHUTE, "diverted"),
    ]  # fmt: skip


def test_with_the_gateway_down_the_deadline_sends_the_parcel_to_the_exception_chute(
    rig: Rig,
) -> None:
    """The belt does not wait for a stopped gateway; the sort_miss reaches it once it runs."""
    clock = FakeClock()
    plc = rig.start_sim(sorter_sim(clock, SimParcel(1.0, 7201, barcode="YT7200001")))
    agent = rig.start_agent(sorter_section(plc, deadline_ms=300))
    sorter = agent.workflow(SORTER, SorterWorkflow)
    rig.gateway.stop()

    clock.at(1.0)
    wait_until(lambda: diverts(plc), 10, "the exception divert")
    assert diverts(plc) == [(7201, EXCEPTION_CHUTE)]
    assert sorter.stats.deadline_missed == 1
    pending = [p.kind for p in agent.agent.outbox.pending(SORTER)]
    assert {"induction", "sort_miss"} <= set(pending)
    assert rig.gateway.events(SORTER) == []

    rig.gateway.start()
    (miss,) = wait_until(lambda: rig.gateway.events(SORTER, "sort_miss"), 20, "the sort_miss")
    (induction,) = rig.gateway.events(SORTER, "induction")
    assert (miss.body["transaction"], miss.body["chute"], miss.body["waybill"]) == (
        7201, EXCEPTION_CHUTE, "YT7200001",
    )  # fmt: skip
    assert miss.body["request"] == induction.msg_id
    assert 300 <= miss.body["waited_ms"] < 2000
    assert induction.seq < miss.seq
    # The gateway decides the induction it got late; the workflow ignores that decision.
    wait_until(lambda: sorter.stats.late_decisions == 1, 15, "the late decision")
    wait_until(lambda: agent.agent.outbox.depth(SORTER) == 0, 15, "the receipts")
    assert diverts(plc) == [(7201, EXCEPTION_CHUTE)]
