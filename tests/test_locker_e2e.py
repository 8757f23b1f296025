"""The locker workflow end to end: lock-board simulator → edge agent → Mosquitto → gateway.

A courier's delivery becomes a ``deposit`` event, the gateway issues a pickup code (the
test reads it where the SMS gateway would) and sends the locker its list of hashed codes;
the recipient's code opens the slot, also while the broker is down. The rig is
:class:`tests.test_workflows_e2e.Rig`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contracts import AcceptanceBody, CommandResultEnvelope, Inspection, decode
from contracts.commands import Command, encode_command
from edge.workflows.locker import LockerWorkflow
from firmware_bridge.sim.idcard import SAMPLE_IDENTITY
from firmware_bridge.sim.lockboard import LockboardScenario, LockboardSim, SimBoard
from postedge.localservers import Mosquitto
from tests.conftest import (
    GATEWAY_PASSWORD,
    GATEWAY_USER,
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    device_password,
)
from tests.helpers import Observer, Publisher, wait_until
from tests.test_locker_workflow import courier, recipient
from tests.test_workflows_e2e import (
    COUNTER,
    LOCKER,
    ROLES,
    STATION,
    TO_TANGYIN,
    Agent,
    Rig,
)

pytestmark = [pytest.mark.integration, pytest.mark.hil]


@pytest.fixture
def rig(tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]) -> Iterator[Rig]:
    with contextlib.ExitStack() as stack:
        yield Rig(tmp_path, make_mosquitto(devices=list(ROLES)), stack)


def start_locker(rig: Rig, settings: str = "") -> tuple[Agent, LockerWorkflow, LockboardSim]:
    """A locker of eight small slots on one board that reports door changes; ``settings``
    are more lines for its ``[devices.locker]`` section."""
    sim = rig.start_sim(LockboardSim(LockboardScenario((SimBoard(1, locks=8, reports=True),))))
    agent = rig.start_agent(
        f'[[devices]]\nid = "{LOCKER}"\npassword = "{device_password(LOCKER)}"\n'
        f'lockboard = {{ port = "{sim.device_path}", boards = [1], locks_per_board = 8, '
        "poll_interval_s = 0.2 }\n\n"
        '[devices.locker]\nslots = [{ board = 1, locks = "1-8", size = "S" }]\n'
        "decision_timeout_s = 5\n" + settings
    )
    locker = agent.workflow(LOCKER, LockerWorkflow)
    wait_until(locker.ready.is_set, 10, "the locker to know its doors")
    return agent, locker, sim


def deliver(rig: Rig, locker: LockerWorkflow, sim: LockboardSim, waybill: str) -> str:
    """A courier's delivery; returns the clear code once the locker has its hashed list."""
    outcome = rig.run(locker.deliver(waybill, "S", "courier-1", on_open=courier(sim)))
    assert (outcome.status, outcome.slot) == ("deposited", (1, 1))
    code = wait_until(lambda: rig.gateway.codes.get(waybill), 15, "the pickup code")
    assert code is not None
    wait_until(
        lambda: [(e.waybill, e.board, e.lock) for e in locker.codes.entries()] == [(waybill, 1, 1)],
        15,
        "the locker's code list",
    )
    return code


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def test_a_delivery_gets_a_code_that_opens_its_slot_and_send_deposits_need_a_realname(
    rig: Rig,
) -> None:
    agent, locker, sim = start_locker(rig)
    code = deliver(rig, locker, sim, "YT7300001")
    assert rig.gateway.count("deposit.delivery") == 1
    assert [e.body["waybill"] for e in rig.gateway.events(LOCKER, "deposit")] == ["YT7300001"]

    refused = rig.run(locker.pickup(wrong(code)))
    assert (refused.status, refused.reason) == ("refused", "invalid_code")
    assert sum(sim.open_commands.values()) == 1  # only the courier's
    assert not sim.is_open(1, 1)

    picked = rig.run(locker.pickup(code, on_open=recipient(sim)))
    assert (picked.status, picked.slot, picked.waybill) == ("collected", (1, 1), "YT7300001")
    assert sim.open_commands[1, 1] == 2
    assert not sim.is_occupied(1, 1)
    rig.gateway.wait_count("pickup.collected", 1)
    wait_until(lambda: locker.codes.entries() == (), 15, "the code list without the code")

    # A send-deposit: allowed for an accepted waybill, refused for one never accepted.
    rig.send(COUNTER, acceptance("YT7300002"))
    rig.gateway.wait_count("acceptance.accepted", 1)
    sent = rig.run(locker.send("YT7300002", "S", on_open=courier(sim)))
    assert (sent.status, sent.slot) == ("deposited", (1, 1))
    unknown = rig.run(locker.send("YT7300404", "S"))
    assert (unknown.status, unknown.reason) == ("refused", "no_realname")
    assert sum(sim.open_commands.values()) == 3  # the refused send opened nothing
    rig.gateway.wait_count("deposit.send", 1)
    assert (rig.gateway.count("deposit.allowed"), rig.gateway.count("deposit.refused")) == (1, 1)
    assert locker.stats.sends_refused == 1
    assert rig.gateway.codes.keys() == {"YT7300001"}  # a send-deposit issues no code
    wait_until(lambda: agent.agent.outbox.depth(LOCKER) == 0, 15, "the receipts")


def stored_kinds(rig: Rig) -> list[str]:
    """The locker's events in the telemetry store, doors left out."""
    return [event.kind for event in rig.gateway.events(LOCKER) if event.kind != "door"]


def test_a_pickup_works_with_the_broker_down_and_reaches_the_gateway_afterwards(
    rig: Rig,
) -> None:
    agent, locker, sim = start_locker(rig)
    code = deliver(rig, locker, sim, "YT7400001")
    wait_until(lambda: agent.agent.outbox.depth(LOCKER) == 0, 15, "the receipts")
    # One receipt (the ledger path's, say) empties the outbox; the store may write later.
    wait_until(lambda: stored_kinds(rig) == ["deposit"], 15, "the deposit in the store")
    before = rig.gateway.events(LOCKER)

    rig.broker.stop()
    wait_until(lambda: agent.link_state(LOCKER) == "down", 10, "the link down")
    picked = rig.run(locker.pickup(code, on_open=recipient(sim)))
    assert (picked.status, picked.slot, picked.waybill) == ("collected", (1, 1), "YT7400001")
    kept = [decode(pending.payload) for pending in agent.agent.outbox.pending(LOCKER)]
    assert picked.event in [envelope.id for envelope in kept if envelope.kind == "pickup"]

    rig.broker.start()
    rig.gateway.wait_count("pickup.collected", 1, timeout=30)
    wait_until(lambda: agent.agent.outbox.depth(LOCKER) == 0, 30, "the receipts")
    wait_until(lambda: stored_kinds(rig) == ["deposit", "pickup"], 15, "the pickup in the store")
    after = rig.gateway.events(LOCKER)
    assert after[: len(before)] == before
    assert [e.seq for e in after] == sorted(e.seq for e in after)  # stored in device order
    assert after[-1].msg_id == picked.event
    assert {e.kind for e in after[len(before) :]} == {"door", "pickup"}
    wait_until(lambda: locker.codes.entries() == (), 15, "the new code list")


def acceptance(waybill: str) -> AcceptanceBody:
    return AcceptanceBody(
        waybill=waybill,
        destination=TO_TANGYIN,
        sender=SAMPLE_IDENTITY,
        inspection=Inspection(inspected=True, declared_contents="干枣 dried dates"),
        clerk="clerk-1",
    )


def test_an_operators_open_slot_goes_through_the_workflow(rig: Rig) -> None:
    """``open_slot`` on a locker that runs its workflow opens through it: the door is
    the workflow's to watch, so left open it raises ``left_open`` (a door opened behind
    the workflow's back was never timed), and its closing is reported."""
    _, locker, sim = start_locker(rig, "door_open_alarm_s = 0.3\n")
    topic = f"postedge/v1/{STATION}/{LOCKER}/cmd"
    results = Observer(rig.broker, OBSERVER_USER, OBSERVER_PASSWORD, f"{topic}/result")
    operator = Publisher(rig.broker, GATEWAY_USER, GATEWAY_PASSWORD)
    try:
        operator.publish(topic, encode_command(Command(id="c-open", command="open_slot",
                                                       args={"board": 1, "lock": 4})))  # fmt: skip
        wait_until(lambda: results.messages, 15, "the command's result")
        result = decode(results.messages[0].payload)
        assert isinstance(result, CommandResultEnvelope)
        assert (result.body.command_id, result.body.ok) == ("c-open", True)
        assert result.body.result is not None
        assert result.body.result["door"] == "open"
    finally:
        operator.close()
        results.close()
    assert sim.open_commands == {(1, 4): 1}
    alarms = wait_until(lambda: rig.gateway.events(LOCKER, "door_alarm"), 15, "the alarm")
    assert [(a.body["lock"], a.body["alarm"]) for a in alarms] == [(4, "left_open")]

    async def shut() -> None:  # the simulator lives on the agent's loop
        sim.close_door(1, 4)

    rig.run(shut())

    def shut_seen() -> bool:
        doors = [e.body for e in rig.gateway.events(LOCKER, "door") if e.body["lock"] == 4]
        return bool(doors) and doors[-1]["door"] == "closed"

    wait_until(shut_seen, 15, "the door's closing stored at the gateway")
    assert (locker.stats.opened_on_command, locker.stats.left_open, locker.stats.forced) == (
        1, 1, 0,
    )  # fmt: skip
