"""The smart locker's panel: a line prompt in front of
:class:`edge.workflows.locker.LockerWorkflow`, the locker's counterpart of the clerk's
terminal (:mod:`edge.clerk`).

It reads lines from any source (:func:`edge.terminal.read_lines` makes one of a terminal, a
pipe or a ``StringIO``) and writes short Chinese and English labels to a text stream, so
it serves on the locker box's console and a test can script it. From the menu a courier
delivers (``d``: the waybill scanned by the locker's scanner or typed, a slot size, an
optional courier id), a sender sends (``s``: waybill and size; the gateway must know the
sender's real name), a recipient picks up (``p``: the 6-digit code). Each step says what
happened: which slot opened, that the panel waits for the door, and how it ended.
``c`` cancels a step at any prompt, ``q`` (or the end of input) ends the session.

A pickup code is never written back, logged or kept: only the slot it opened is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TextIO

from pydantic import TypeAdapter, ValidationError

from contracts.errors import ContractError
from contracts.events import Waybill
from contracts.ids import validate_id
from edge.terminal import Cancel, EndOfInput, LineQueue, Prompt, Quit
from edge.workflows.locker import DepositOutcome, LockerWorkflow, PickupOutcome
from edge.workflows.lockercodes import Slot

SIZES: Final = ("S", "M", "L", "XL")
REASONS: Final = {
    "invalid_waybill": ("运单号无效", "invalid waybill"),
    "invalid_courier": ("快递员工号无效", "invalid courier id"),
    "no_slot": ("没有该尺寸的空格口", "no free slot of that size"),
    "no_realname": ("寄件人未实名登记, 请到网点办理", "no real-name record: register at a counter"),
    "offline": ("网络不通, 暂不能寄件", "offline: the gateway did not answer"),
    "not_recorded": ("未能记录", "could not be recorded"),
    "bad_decision": ("网关答复无效", "the gateway's answer did not fit"),
    "not_opened": ("格口未能打开", "the lock did not open"),
    "bus_error": ("锁控板无响应", "the lock board did not answer"),
    "invalid_code": ("取件码无效", "invalid code"),
    "expired": ("取件码已过期, 请联系快递员", "the code has expired: call the courier"),
    "locked_out": ("错误次数过多, 请稍后再试", "too many wrong codes: try again later"),
    "busy": ("格口正在使用", "the slot is in use"),
}
"""What each refusal or failure of the workflow means, for the person at the locker."""

MENU: Final = (
    "== 智能快递柜 Smart locker ==\n"
    "  d 投递 Deliver (courier)\n"
    "  s 寄件 Send a parcel\n"
    "  p 取件 Pick up\n"
    "  q 退出 Quit\n"
    "请选择 Choose:"
)
_CHOICES: Final = {"d": "d", "投递": "d", "s": "s", "寄件": "s", "p": "p", "取件": "p"}
_CODE: Final = re.compile(r"[0-9]{6}")
_SCAN_WAIT_S: Final = 3600.0
_WAYBILL: TypeAdapter[str] = TypeAdapter(Waybill)


async def run_locker_panel(workflow: LockerWorkflow, lines: AsyncIterator[str], out: TextIO) -> int:
    """Serve the locker until ``q`` or the end of ``lines``; the number of operations
    completed (parcels deposited and parcels collected).

    The workflow's :meth:`~LockerWorkflow.run` must be running: the panel waits until it
    knows the doors. A slot open when the session ends still finishes at the workflow.
    """
    panel = _Panel(workflow, LineQueue(lines), out)
    try:
        await panel.session()
    except (Quit, EndOfInput):
        panel.say("再见 Bye")
    finally:
        await panel.lines.close()
    return panel.completed


class _Panel(Prompt):
    def __init__(self, workflow: LockerWorkflow, lines: LineQueue, out: TextIO) -> None:
        self.workflow = workflow
        super().__init__(lines, out)
        self.completed = 0
        configured = set(workflow.config.sizes().values())
        self.sizes = [size for size in SIZES if size in configured]

    async def session(self) -> None:
        await self.workflow.ready.wait()  # a door change before it would go unwatched
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "d": self._deliver,
            "s": self._send,
            "p": self._pickup,
        }
        while True:
            choice = (await self.ask(MENU)).lower()
            step = steps.get(_CHOICES.get(choice, ""))
            if step is None:
                if choice:
                    self.say("  无此选项 unknown choice: d, s, p or q")
                continue
            try:
                await step()
            except Cancel:
                self.say("  已取消 Cancelled")

    # --- the three operations ------------------------------------------------------------

    async def _deliver(self) -> None:
        self.say("== 投递 Deliver == (c = 取消 cancel)")
        waybill = await self._waybill("[1/3]")
        size = await self._size("[2/3]")
        courier = await self._courier("[3/3]")
        outcome = await self.workflow.deliver(waybill, size, courier, on_open=self._deposit_open)
        self._deposited(waybill, outcome)

    async def _send(self) -> None:
        self.say("== 寄件 Send == (c = 取消 cancel)")
        waybill = await self._waybill("[1/2]")
        size = await self._size("[2/2]")
        self.say("  正在核验寄件人实名信息 Checking the sender's real-name record...")
        outcome = await self.workflow.send(waybill, size, on_open=self._deposit_open)
        self._deposited(waybill, outcome)

    async def _pickup(self) -> None:
        self.say("== 取件 Pick up == (c = 取消 cancel)")
        while True:
            code = "".join((await self.ask("请输入6位取件码 Type your 6-digit code:")).split())
            if _CODE.fullmatch(code):
                break
            self.say("  取件码为6位数字 the code has 6 digits")  # never the line itself
        outcome = await self.workflow.pickup(code, on_open=self._pickup_open)
        self._picked_up(outcome)

    # --- prompts -----------------------------------------------------------------------

    async def _waybill(self, step: str) -> str:
        self.say(f"{step} 扫描运单或输入运单号 Scan the waybill or type its number")
        while True:
            text = await self._scan_or_type()
            if text is None:
                continue
            if _valid_waybill(text):
                self.say(f"  运单 Waybill: {text}")
                return text
            self.say("  运单号无效 invalid waybill (4-40 letters, digits or '-'); again:")

    async def _scan_or_type(self) -> str | None:
        """A scanned waybill or a typed line, whichever comes first; None for an empty line."""
        scanned = asyncio.ensure_future(self._next_scan())
        typed = asyncio.ensure_future(self.lines.get())
        try:
            await asyncio.wait({scanned, typed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (scanned, typed):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if not typed.cancelled():  # a typed line wins: the person means it (or the end)
            return self.command(typed.result()) or None
        return scanned.result()

    async def _next_scan(self) -> str:
        while (waybill := await self.workflow.next_waybill(_SCAN_WAIT_S)) is None:
            pass
        return waybill

    async def _size(self, step: str) -> str:
        choices = "/".join(self.sizes)
        while True:
            size = (await self.ask(f"{step} 格口尺寸 Slot size ({choices}):")).upper()
            if size in self.sizes:
                return size
            self.say(f"  无此尺寸 no such size here: {choices}")

    async def _courier(self, step: str) -> str | None:
        while True:
            text = await self.ask(f"{step} 快递员工号 Courier id (Enter to skip):")
            if not text:
                return None
            try:
                return validate_id(text, "courier")
            except ContractError:
                self.say("  工号无效 invalid courier id (letters, digits, '_' or '-')")

    # --- outcomes ----------------------------------------------------------------------

    def _deposit_open(self, slot: Slot) -> None:
        name = _slot(slot)
        self.say(
            f"  格口 {name} 已打开, 请放入包裹并关门 Slot {name} is open: put the parcel in"
            " and close the door"
        )
        self.say("  等待关门 Waiting for the door to close...")

    def _pickup_open(self, slot: Slot) -> None:
        name = _slot(slot)
        self.say(
            f"  格口 {name} 已打开, 请取出包裹并关门 Slot {name} is open: take your parcel"
            " and close the door"
        )
        self.say("  等待关门 Waiting for the door to close...")

    def _deposited(self, waybill: str, outcome: DepositOutcome) -> None:
        at = "" if outcome.slot is None else f" slot {_slot(outcome.slot)}"
        if outcome.status == "deposited":
            self.completed += 1
            self.say(f"  已存入 DEPOSITED {waybill} in{at}")
        elif outcome.status == "cancelled":
            self.say(f"  已取消 CANCELLED: the door of{at} closed on an empty slot")
        elif outcome.status == "timeout":
            self.say(
                f"  超时 TIMEOUT: the door of{at} is still open; 关门后自动登记 the parcel is"
                " recorded when it closes"
            )
        else:
            self._refused(outcome.status, outcome.reason, at)

    def _picked_up(self, outcome: PickupOutcome) -> None:
        at = "" if outcome.slot is None else f" slot {_slot(outcome.slot)}"
        if outcome.status == "collected":
            self.completed += 1
            self.say(f"  已取件 COLLECTED from{at}. 谢谢 Thank you")
        elif outcome.status == "not_taken":
            self.say(f"  未取出 NOT TAKEN: the parcel is still in{at}; the code stays valid")
        elif outcome.status == "timeout":
            self.say(f"  超时 TIMEOUT: the door of{at} is still open; please close it")
        else:
            self._refused(outcome.status, outcome.reason, at)

    def _refused(self, status: str, reason: str | None, at: str) -> None:
        label = "拒绝 REFUSED" if status == "refused" else "失败 FAILED"
        zh, en = REASONS.get(reason or "", ("", reason or status))
        meaning = f"{zh} / {en}" if zh else en
        where = f" ({at.strip()})" if at else ""
        self.say(f"  {label} [{reason}] {meaning}{where}")


def _slot(slot: Slot) -> str:
    return f"{slot[0]}-{slot[1]}"


def _valid_waybill(text: str) -> bool:
    try:
        _WAYBILL.validate_python(text)
    except ValidationError:
        return False
    return True
