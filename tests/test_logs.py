"""Structured logs: one JSON object per line on stdout, for journald and jq."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3

from postedge.cli import configure_logging
from postedge.logs import JsonFormatter, log_handler

TS_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger that writes through ``log_handler("json")`` into a buffer."""
    buffer = io.StringIO()
    logger = logging.getLogger(f"test.logs.{id(buffer)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = log_handler("json", buffer)
    logger.addHandler(handler)
    yield logger, buffer
    logger.removeHandler(handler)


def entries(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_record_is_one_line_with_ts_level_logger_and_formatted_msg(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    before = datetime.now(UTC)
    logger.warning("%s: %d probes, %.1f °C", "village-23-cold", 2, 4.25)
    assert buffer.getvalue().count("\n") == 1
    (entry,) = entries(buffer)
    assert set(entry) == {"ts", "level", "logger", "msg"}, "nothing but what the call said"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == logger.name
    assert entry["msg"] == "village-23-cold: 2 probes, 4.2 °C"
    assert re.match(TS_PATTERN, entry["ts"])
    ts = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((ts - before).total_seconds()) < 5


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_every_level_is_named(json_log: tuple[logging.Logger, io.StringIO], level: str) -> None:
    logger, buffer = json_log
    logger.log(logging.getLevelName(level), "x")
    assert entries(buffer)[0]["level"] == level


def test_exception_is_a_formatted_traceback_in_exc(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    try:
        raise ValueError("bad frame")
    except ValueError:
        logger.exception("probe read failed")
    (entry,) = entries(buffer)
    assert entry["msg"] == "probe read failed"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].rstrip().endswith("ValueError: bad frame")
    assert buffer.getvalue().count("\n") == 1, "the traceback stays inside one line"


def test_extras_become_fields_and_unserialisable_ones_their_repr(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    logger.info(
        "connected",
        extra={
            "device": "village-23-cold",
            "station": "village-23",
            "attempt": 3,
            "ports": ["/dev/ttyUSB0"],
            "path": Path("/var/lib/postedge"),
            "ratio": float("nan"),
            "level": "shadowing",
        },
    )
    (entry,) = entries(buffer)
    assert entry["device"] == "village-23-cold"
    assert entry["station"] == "village-23"
    assert entry["attempt"] == 3
    assert entry["ports"] == ["/dev/ttyUSB0"]
    assert entry["path"] == repr(Path("/var/lib/postedge"))
    assert entry["ratio"] == "nan", "NaN is not JSON; its repr is"
    assert entry["level"] == "INFO", "an extra never replaces a core field"
    assert entry["x_level"] == "shadowing"


def test_non_ascii_text_stays_readable_utf8(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = json_log
    logger.info("村 %s", "服务站", extra={"station": "村-23"})
    line = buffer.getvalue()
    assert "村 服务站" in line
    assert "\\u" not in line
    assert entries(buffer)[0]["station"] == "村-23"


def test_formatter_is_a_pure_function_of_the_record() -> None:
    record = logging.LogRecord("edge.link", logging.ERROR, __file__, 1, "%s down", ("x",), None)
    record.created = 1_764_058_502.1239
    entry = json.loads(JsonFormatter().format(record))
    assert entry == {
        "ts": "2025-11-25T08:15:02.123Z",
        "level": "ERROR",
        "logger": "edge.link",
        "msg": "x down",
    }


@pytest.fixture
def configured_logging() -> Iterator[None]:
    """``configure_logging`` changes process-wide loggers: put them back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    quieted = [logging.getLogger(name) for name in ("pymodbus", "urllib3")]
    levels = [logger.level for logger in quieted]
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for logger, level in zip(quieted, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("configured_logging")
def test_configure_logging_json_goes_to_stdout_text_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("edge.agent").info("json line")
    pymodbus = logging.getLogger("pymodbus")
    assert pymodbus.level == logging.CRITICAL, "pymodbus stays quiet below DEBUG"
    configure_logging("INFO", "text")
    logging.getLogger("edge.agent").info("text line")
    captured = capsys.readouterr()
    assert json.loads(captured.out)["msg"] == "json line"
    assert captured.err.endswith("INFO edge.agent: text line\n")
    assert "json line" not in captured.err
    assert "text line" not in captured.out


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        log_handler("xml")  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_edge_run_with_json_logs_writes_json_lines_to_stdout(tmp_path: Path) -> None:
    """The command the systemd unit runs: JSON lines on stdout, clean exit on SIGTERM."""
    config = tmp_path / "station.toml"
    config.write_text(
        'station = "village-23"\n'
        f"[broker]\nport = {_closed_port()}\nreconnect_min_s = 0.1\n"
        '[[devices]]\nid = "village-23-cold"\npassword = "x"\ninterval_s = 0.2\n'
        f'[[devices.modbus]]\nport = "{tmp_path / "ttyUSB-missing"}"\n'
        '[[devices.modbus.probes]]\nid = "fridge"\nunit = 1\ntemperature = { register = 0 }\n',
        encoding="utf-8",
    )
    stderr_path = tmp_path / "stderr.txt"
    out: list[str] = []
    logging_started = threading.Event()
    with (
        stderr_path.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "postedge.cli", "--log-format", "json", "edge", "run", config],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            encoding="utf-8",
        ) as agent,
    ):
        assert agent.stdout is not None
        stdout = agent.stdout

        def read() -> None:
            for line in stdout:
                out.append(line)
                logging_started.set()
            logging_started.set()  # end of output: the agent is gone

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert logging_started.wait(60), "no output within 60 s"
        finally:
            agent.send_signal(signal.SIGTERM)
            status = agent.wait(timeout=60)
            reader.join(timeout=10)
    errors = stderr_path.read_text()
    assert status == 0, errors
    assert errors == "", "log records go to stdout only"
    logged = [json.loads(line) for line in out]
    for entry in logged:
        assert {"ts", "level", "logger", "msg"} <= set(entry)
        assert re.match(TS_PATTERN, entry["ts"])
    messages = [entry["msg"] for entry in logged if entry["logger"].startswith("edge.")]
    assert any("village-23-cold" in message for message in messages)


@pytest.mark.usefixtures("configured_logging")
def test_debug_logs_never_show_a_request_url(capsys: pytest.CaptureFixture[str]) -> None:
    """A robot webhook's URL holds its access token; urllib3 logs URLs at DEBUG."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configure_logging("DEBUG", "text")
        logging.getLogger("gateway.notify").debug("debug is on")
        url = f"http://127.0.0.1:{server.server_address[1]}/robot/send?access_token=SECRET42"
        with urllib3.PoolManager(retries=False) as http:
            assert http.request("POST", url, body=b"{}").status == 200
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "debug is on" in err
    assert "SECRET42" not in err
