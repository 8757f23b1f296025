"""The machinery every ``postedge sim <kind>`` command shares (firmware_bridge.sim.runner)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from contracts.configfile import ConfigFileError
from firmware_bridge.sim.runner import (
    add_link_options,
    add_listen_options,
    port_number,
    positive_float,
    run_command,
    wait_until_stopped,
)


@pytest.mark.parametrize(("text", "value"), [("0.5", 0.5), ("2", 2.0), ("1e3", 1000.0)])
def test_positive_float_accepts_finite_numbers_above_zero(text: str, value: float) -> None:
    assert positive_float(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "must be a number, not abc"),
        ("", "must be a number, not "),
        ("0", "must be a finite number more than 0, not 0"),
        ("-1", "must be a finite number more than 0, not -1"),
        ("nan", "must be a finite number more than 0, not nan"),
        ("inf", "must be a finite number more than 0, not inf"),
    ],
)
def test_positive_float_rejects_with_a_message_naming_the_text(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        positive_float(text)
    assert str(raised.value) == message


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("502", 502), ("65535", 65535)])
def test_port_number_accepts_0_to_65535(text: str, value: int) -> None:
    assert port_number(text) == value


@pytest.mark.parametrize("text", ["-1", "65536", "x", "80.5"])
def test_port_number_rejects_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"must be 0..65535, not {text}"):
        port_number(text)


def test_link_options_parse_a_scenario_link_and_duration() -> None:
    parser = argparse.ArgumentParser()
    add_link_options(parser, scenario_help="the scenario", link_help="the link")
    args = parser.parse_args(["--scenario", "s.toml", "--link", "/tmp/x", "--duration", "3"])
    assert (args.scenario, args.link, args.duration) == (Path("s.toml"), Path("/tmp/x"), 3.0)
    assert vars(parser.parse_args([])) == {"scenario": None, "link": None, "duration": None}
    help_text = parser.format_help()
    assert "the scenario" in help_text
    assert "the link" in help_text


def test_listen_options_default_to_a_free_port_on_loopback() -> None:
    parser = argparse.ArgumentParser()
    add_listen_options(parser, scenario_help="the scenario")
    assert vars(parser.parse_args([])) == {
        "scenario": None,
        "host": "127.0.0.1",
        "port": 0,
        "duration": None,
    }
    assert parser.parse_args(["--port", "1502"]).port == 1502


def test_a_bad_option_value_exits_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="postedge sim fake")
    add_listen_options(parser, scenario_help="the scenario")
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--duration", "0"])
    assert exited.value.code == 2
    assert "argument --duration: must be a finite number more than 0, not 0" in (
        capsys.readouterr().err
    )


def _bad_scenario() -> str:
    raise ConfigFileError("bad.toml: sensors: List should have at least 1 item")


async def _never_served(scenario: str, stop: asyncio.Event) -> None:
    raise AssertionError("a scenario that does not load is not served")


def test_a_bad_scenario_exits_2_with_one_line_naming_the_kind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_command("fake", _bad_scenario, _never_served) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "postedge sim fake: bad.toml: sensors: List should have at least 1 item\n"


def test_an_os_error_while_serving_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def serve(scenario: str, stop: asyncio.Event) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/dev/nothing")

    assert run_command("fake", lambda: "scenario", serve) == 1
    assert capsys.readouterr().err == (
        "postedge sim fake: [Errno 2] No such file or directory: '/dev/nothing'\n"
    )


def test_serving_stops_cleanly_when_the_duration_ends() -> None:
    served: list[str] = []
    elapsed: list[float] = []

    async def serve(scenario: str, stop: asyncio.Event) -> None:
        served.append(scenario)
        started = time.monotonic()
        await wait_until_stopped(stop, 0.05)
        elapsed.append(time.monotonic() - started)
        assert stop.is_set(), "the end of the duration sets stop, for the tasks that watch it"

    assert run_command("fake", lambda: "scenario", serve) == 0
    assert served == ["scenario"]
    assert 0.04 <= elapsed[0] < 5


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_serving_cleanly(signum: signal.Signals) -> None:
    """The handlers are in place before serve starts, so an early signal still stops it."""

    async def serve(scenario: str, stop: asyncio.Event) -> None:
        os.kill(os.getpid(), signum)
        await wait_until_stopped(stop, None)

    assert run_command("fake", lambda: "scenario", serve) == 0


def test_wait_until_stopped_returns_at_once_when_already_stopped() -> None:
    async def body() -> None:
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(wait_until_stopped(stop, None), timeout=5)

    asyncio.run(body())
