"""The clerk's terminal at a station counter: a line prompt that walks one parcel at a
time through :class:`edge.workflows.counter.CounterWorkflow`.

It reads lines from any source (:func:`read_lines` makes one of a terminal, a pipe or a
``StringIO``) and writes short Chinese and English labels to a text stream, so a clerk
can use it on the station box's console and a test can script it. At the waybill
prompt it takes a scan from the scanner or a number the clerk types, whichever comes
first; at every other prompt it reads one line. ``c`` cancels the parcel at any prompt,
``q`` (or the end of input) ends the session.

Only masked identities are ever written (张*, 1101**********002X).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TextIO, TypeVar

from contracts.errors import ContractError
from contracts.ids import validate_id
from edge.terminal import Cancel, EndOfInput, LineQueue, Prompt, Quit
from edge.workflows.counter import CounterRefusal, CounterWorkflow

T = TypeVar("T")

ID_TYPE_LABELS: Final = {
    "resident": "居民身份证 resident ID",
    "passport": "护照 passport",
    "hk_macao_permit": "港澳通行证 HK/Macao permit",
    "taiwan_permit": "台胞证 Taiwan permit",
    "foreign_permanent_residence": "永居证 permanent residence",
}
_YES: Final = frozenset({"y", "yes", "是", "1"})
_NO: Final = frozenset({"n", "no", "否", "0"})
_ITEM_SEPARATORS: Final = re.compile(r"[,，、;；]")


async def run_clerk_terminal(
    workflow: CounterWorkflow,
    lines: AsyncIterator[str],
    out: TextIO,
    *,
    clerk: str | None = None,
) -> int:
    """Serve the clerk until ``q`` or the end of ``lines``; the number of parcels accepted.

    ``clerk`` defaults to the counter's configured clerk, else the terminal asks. A
    parcel in progress when the session ends (or the task is cancelled) is cancelled.
    """
    terminal = _Terminal(workflow, LineQueue(lines), out)
    try:
        await terminal.session(clerk)
    except (Quit, EndOfInput):
        terminal.say("再见 Bye")
    finally:
        workflow.cancel()
        await terminal.lines.close()
    return terminal.accepted


class _Terminal(Prompt):
    def __init__(self, workflow: CounterWorkflow, lines: LineQueue, out: TextIO) -> None:
        self.workflow = workflow
        super().__init__(lines, out)
        self.accepted = 0

    def refused(self, refusal: CounterRefusal) -> None:
        detail = f": {refusal.detail}" if refusal.detail else ""
        self.say(
            f"  拒收 REFUSED [{refusal.reason}] {refusal.label_zh} / {refusal.label_en}{detail}"
        )

    async def session(self, clerk: str | None) -> None:
        clerk_id = clerk or self.workflow.config.clerk or await self._ask_clerk()
        self.say(f"== 收寄 Counter acceptance == 收寄员 clerk {clerk_id}")
        while True:
            try:
                await self._parcel(clerk_id)
            except Cancel:
                self.workflow.cancel()
                self.say("  已取消 Cancelled")

    async def _ask_clerk(self) -> str:
        while True:
            text = await self.ask("收寄员工号 Clerk id:")
            try:
                return validate_id(text, "clerk")
            except ContractError:
                self.say("  工号无效 invalid clerk id (letters, digits, '_' or '-')")

    async def _parcel(self, clerk: str) -> None:
        waybill = await self._retry(self._waybill)
        self.say(f"  运单 Waybill: {waybill}")
        await self._retry(self._identity)
        await self._retry(self._phone)
        await self._retry(self._inspection)
        await self._retry(self._destination)
        await self._retry(lambda: self._submit(clerk))

    async def _retry(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` until the counter takes what it got; each refusal is shown."""
        while True:
            try:
                return await step()
            except CounterRefusal as refusal:
                self.refused(refusal)

    async def _waybill(self) -> str:
        self.say("[1/6] 扫描运单或输入运单号 Scan the waybill or type its number (q = quit)")
        waybill = await self.workflow.begin_if_scanned()
        while waybill is None:
            waybill = await self._scan_or_type()
        return waybill

    async def _scan_or_type(self) -> str | None:
        """A scan or a typed number, whichever comes first; None for an empty line."""
        scanned = asyncio.ensure_future(self.workflow.begin())
        typed = asyncio.ensure_future(self.lines.get())
        try:
            await asyncio.wait({scanned, typed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (scanned, typed):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if not typed.cancelled():  # a typed line wins: the clerk means it (or the end)
            text = self.command(typed.result())
            return self.workflow.enter_waybill(text) if text else None
        return scanned.result()  # a refusal (a scanned code that is no waybill) too

    async def _identity(self) -> None:
        await self.ask("[2/6] 请将身份证件放在读卡器上并回车 Put the ID card on the reader, Enter")
        sender = await self.workflow.read_id()
        kind = ID_TYPE_LABELS.get(sender.id_type, sender.id_type)
        self.say(f"  证件 ID: {sender.name} {sender.number} ({kind})")

    async def _phone(self) -> None:
        text = await self.ask("[3/6] 寄件人手机号 Sender's mobile (Enter to skip)")
        phone = self.workflow.set_phone(text)
        if phone is not None:
            self.say(f"  手机 Mobile: {phone}")

    async def _inspection(self) -> None:
        contents = await self.ask("[4/6] 内件品名 Declared contents:")
        inspected = await self._yes_no("  已开箱验视? Inspected? (y/n)")
        items = await self.ask("  禁寄物品 Refused items (comma-separated, Enter for none):")
        refused = [item for item in _ITEM_SEPARATORS.split(items) if item.strip()]
        self.workflow.inspect(contents, inspected, refused)
        self.say("  验视 Inspection recorded")

    async def _destination(self) -> None:
        text = await self.ask("[5/6] 目的地 Destination: 12-digit division code, name or postcode")
        self.say(f"  目的地 Destination: {self.workflow.destination(text)}")

    async def _submit(self, clerk: str) -> None:
        status = self.workflow.status
        if not await self._yes_no(
            f"[6/6] 提交 Submit {status.waybill} -> {status.destination}? (y/n)"
        ):
            raise Cancel
        envelope = self.workflow.submit(clerk)
        self.accepted += 1
        self.say(f"  已收寄 ACCEPTED {status.waybill} ({envelope.id})")

    async def _yes_no(self, prompt: str) -> bool:
        while True:
            answer = (await self.ask(prompt)).lower()
            if answer in _YES:
                return True
            if answer in _NO:
                return False
            self.say("  请输入 y 或 n / answer y or n")
