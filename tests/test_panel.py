"""The locker's panel, typed at like a person at the locker, in front of the real locker
workflow on the lock-board simulator (and the scanner simulator) over ptys.

The people in these tests watch the panel's screen: when it says a slot stands open, a
courier puts a parcel in and shuts the door, a recipient takes it out, someone walks
away. The gateway is played by the workflow tests' recorder (``emit``) and by codes
installed with ``on_decision``, as in tests/test_locker_workflow.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from contracts import AnyEnvelope, DecisionMessage, DepositBody, DepositRequestBody, PickupBody
from edge.panel import run_locker_panel
from edge.workflows.locker import Slot
from firmware_bridge.scanner.driver import SerialScanner
from firmware_bridge.serial_link import SerialLink
from firmware_bridge.sim.lockboard import LockboardSim
from firmware_bridge.sim.scanner import ScannerScenario, ScannerSimulator, SimulatedCode
from tests.helpers import run_async
from tests.test_locker_workflow import (
    Recorder,
    code_for,
    code_list,
    config,
    decide_send,
    running,
    scenario,
)

pytestmark = pytest.mark.hil

CODE = "482913"
WRONG_CODES = ("135790", "246813", "357924")
EXPIRED_CODE = "975318"
_OPEN = re.compile(r"Slot (\d+)-(\d+) is open")


class Screen(io.StringIO):
    """The panel's output, which a test waits on the way a person watches a screen."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()
        self._read_to = 0

    def write(self, text: str) -> int:
        written = super().write(text)
        self._changed.set()
        return written

    async def shows(self, text: str, timeout: float = 5.0) -> str:
        """Wait for ``text`` after the last text waited for; the output up to its end."""
        try:
            async with asyncio.timeout(timeout):
                while (at := self.getvalue().find(text, self._read_to)) < 0:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the panel never showed {text!r}:\n{self.getvalue()}") from None
        start, self._read_to = self._read_to, at + len(text)
        return self.getvalue()[start : self._read_to]


class Keyboard:
    """Lines typed at the panel, queued until it reads them; ``unplug`` ends the input."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def type(self, *lines: str) -> None:
        for line in lines:
            self._queue.put_nowait(line)

    def unplug(self) -> None:
        self._queue.put_nowait(None)

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self._queue.get()) is not None:
            yield line


async def when_open(screen: Screen, sim: LockboardSim, act: Callable[[Slot], None]) -> Slot:
    """Wait for the panel to say a slot is open, check that it is, and ``act`` on it."""
    shown = await screen.shows("is open")
    found = _OPEN.findall(shown)
    assert found, shown
    slot = (int(found[-1][0]), int(found[-1][1]))
    assert sim.is_open(*slot), f"the panel says {slot} is open; the board says it is shut"
    act(slot)
    return slot


def put_parcel_in(sim: LockboardSim) -> Callable[[Slot], None]:
    def act(slot: Slot) -> None:
        sim.insert_item(*slot)
        sim.close_door(*slot)

    return act


def take_parcel_out(sim: LockboardSim) -> Callable[[Slot], None]:
    def act(slot: Slot) -> None:
        sim.remove_item(*slot)
        sim.close_door(*slot)

    return act


def test_a_courier_delivers_a_scanned_parcel_and_sees_each_step(tmp_path: Path) -> None:
    """The waybill comes from the locker's scanner; a wrong size and a bad courier id are
    asked again; the slot opens, the panel waits for the door, the deposit is shown."""
    scans = ScannerScenario((SimulatedCode("YT0000000031", delay_s=0),), repeat=False)
    screen, keys = Screen(), Keyboard()

    async def body() -> int:
        async with (
            ScannerSimulator(scans, autoplay=False) as scan_sim,
            SerialLink(scan_sim.device_path) as scan_link,
            SerialScanner(scan_link, reader="locker-scanner") as scanner,
            LockboardSim(scenario()) as sim,
            running(sim, tmp_path / "codes.json", scanner=scanner) as locker,
        ):
            panel = asyncio.create_task(run_locker_panel(locker.workflow, keys.lines(), screen))
            await screen.shows("Choose:")
            keys.type("d")
            await screen.shows("Scan the waybill")
            await scan_sim.play()
            await screen.shows("Waybill: YT0000000031")
            keys.type("xs", "s", "courier 7", "courier-7")
            assert await when_open(screen, sim, put_parcel_in(sim)) == (1, 3)
            await screen.shows("DEPOSITED YT0000000031 in slot 1-3")
            keys.type("q")
            completed = await panel
            assert locker.emitted.bodies(DepositBody) == [
                DepositBody(
                    waybill="YT0000000031", purpose="delivery", board=1, lock=3, courier="courier-7"
                )
            ]
            return completed

    assert run_async(body()) == 1
    shown = screen.getvalue()
    assert "无此尺寸 no such size here: S/M/L" in shown
    assert "工号无效 invalid courier id" in shown
    assert "格口 1-3 已打开" in shown
    assert "等待关门 Waiting for the door to close" in shown
    assert shown.rstrip().endswith("再见 Bye")


def test_a_recipient_picks_up_with_the_right_code_and_no_code_is_ever_shown_or_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed entry is asked again without reaching the keypad; a wrong code is
    refused; the right one opens its slot and the pickup is recorded; end of input ends."""
    caplog.set_level(logging.DEBUG)
    screen, keys = Screen(), Keyboard()

    async def body() -> int:
        async with (
            LockboardSim(scenario()) as sim,
            running(sim, tmp_path / "codes.json") as locker,
        ):
            locker.workflow.on_decision(code_list(1, code_for(CODE, "YT0000000001", (1, 1))))
            keys.type("p", "12ab", WRONG_CODES[0], "p", CODE)
            panel = asyncio.create_task(run_locker_panel(locker.workflow, keys.lines(), screen))
            assert await when_open(screen, sim, take_parcel_out(sim)) == (1, 1)
            await screen.shows("COLLECTED from slot 1-1")
            keys.unplug()
            completed = await panel
            assert locker.emitted.bodies(PickupBody) == [
                PickupBody(waybill="YT0000000001", board=1, lock=1)
            ]
            assert locker.workflow.keypad.wrong_codes == 1  # "12ab" was never checked
            assert not sim.is_occupied(1, 1)
            return completed

    assert run_async(body()) == 1
    shown = screen.getvalue()
    assert "取件码为6位数字 the code has 6 digits" in shown
    assert "拒绝 REFUSED [invalid_code] 取件码无效 / invalid code" in shown
    assert shown.rstrip().endswith("再见 Bye")
    for typed in (CODE, WRONG_CODES[0], "12ab"):
        assert typed not in shown
        assert typed not in caplog.text


def test_refusals_cancellations_and_timeouts_are_explained(tmp_path: Path) -> None:
    """Every way a step can end short is said in words: a deposit closed empty, a send
    without a real-name record, a send with the gateway silent, a door left open, an
    expired code, and the lockout after wrong codes."""
    refused, silent = "YT0000000041", "YT0000000042"

    def gateway(envelope: AnyEnvelope) -> DecisionMessage | None:
        body = envelope.body
        if isinstance(body, DepositRequestBody) and body.waybill == refused:
            return decide_send(False)(envelope)
        return None  # the gateway is unreachable for the other send

    settings = config(decision_timeout_s=0.2, deposit_timeout_s=0.3, max_wrong_codes=2)
    expired = code_for(EXPIRED_CODE, "YT0000000002", (1, 1), expires_in_s=-60)
    screen, keys = Screen(), Keyboard()
    keys.type(
        *("d", "bad waybill!", "YT0000000040", "l", ""),  # closed empty: cancelled
        *("s", refused, "M"),
        *("s", silent, "M"),
        *("d", "YT0000000043", "M", "c"),  # cancelled at the courier prompt: nothing opens
        *("d", "YT0000000043", "M", ""),  # nobody shuts the door: timeout
        *("p", EXPIRED_CODE),
        *("p", WRONG_CODES[1], "p", WRONG_CODES[2], "p", CODE),
        *("x", "q"),
    )

    async def body() -> int:
        async with (
            LockboardSim(scenario()) as sim,
            running(sim, tmp_path / "codes.json", settings, Recorder(gateway)) as locker,
        ):
            locker.workflow.on_decision(code_list(1, expired))
            panel = asyncio.create_task(run_locker_panel(locker.workflow, keys.lines(), screen))
            slot = await when_open(screen, sim, lambda slot: sim.close_door(*slot))
            assert slot == (1, 7)
            completed = await panel
            assert sim.open_commands == {(1, 7): 1, (1, 2): 1}
            assert locker.emitted.bodies(DepositBody) == []
            assert [r.waybill for r in locker.emitted.bodies(DepositRequestBody)] == [
                refused,
                silent,
            ]
            return completed

    assert run_async(body()) == 0
    shown = screen.getvalue()
    for expected in (
        "运单号无效 invalid waybill",
        "已取消 CANCELLED: the door of slot 1-7 closed on an empty slot",
        "正在核验寄件人实名信息",
        "拒绝 REFUSED [no_realname] 寄件人未实名登记",
        "拒绝 REFUSED [offline] 网络不通, 暂不能寄件 / offline",
        "已取消 Cancelled",
        "超时 TIMEOUT: the door of slot 1-2 is still open",
        "拒绝 REFUSED [expired] 取件码已过期",
        "拒绝 REFUSED [locked_out] 错误次数过多",
        "无此选项 unknown choice",
    ):
        assert expected in shown
    assert shown.count("[invalid_code]") == 2  # the third code was refused unchecked
    for typed in (EXPIRED_CODE, *WRONG_CODES[1:], CODE):
        assert typed not in shown


STATION = """
station = "village-23"
[broker]
port = 1
[[devices]]
id = "cold-1"
password = "pw"
[[devices]]
id = "locker-1"
password = "pw"
lockboard = { port = "/dev/null", boards = [1] }
[devices.locker]
slots = [{ board = 1, locks = "1-4", size = "S" }]
"""


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--panel", "cold-1"], "--panel cold-1: not a locker device of"),
        (["--panel", "nosuch"], "(lockers: locker-1)"),
    ],
)
def test_the_panel_option_must_name_a_locker_device(
    options: list[str], error: str, tmp_path: Path
) -> None:
    station = tmp_path / "station.toml"
    station.write_text(STATION)
    result = subprocess.run(
        [sys.executable, "-m", "postedge.cli", "edge", "run", str(station), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert error in result.stderr
    assert "Traceback" not in result.stderr
