"""Pieces every benchmark here shares: stopping a child process, and ending MQTT sessions
a finished contender left at the broker.

Benchmarks import this as ``benchlib`` (a script's own directory is on ``sys.path``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contracts.mqtt import new_client  # noqa: E402
from postedge.localservers import Mosquitto  # noqa: E402


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within a minute."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def forget_sessions(broker: Mosquitto, ids: list[str], *, username: str, password: str) -> None:
    """End the persistent sessions ``ids`` (connect with a clean start, leave): an offline
    member of a shared group would otherwise take its share of the next run's messages."""
    for client_id in ids:
        client = new_client(client_id, username=username, password=password)
        connected = threading.Event()
        client.on_connect = lambda *args, done=connected: done.set()
        client.connect(broker.host, broker.port, clean_start=True)
        client.loop_start()
        connected.wait(10)
        client.disconnect()
        client.loop_stop()
