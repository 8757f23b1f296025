"""The baseline: a bare paho consumer that batches writes to InfluxDB and acks after them.

No validation beyond ``json.loads``, line protocol by string formatting, one HTTP POST
per batch, then a PUBACK for every message of the batch. Run by bench/ingest.py.

    python bench/bare_consumer.py HOST PORT USER PASSWORD CLIENT_ID INFLUX_URL DATABASE \
        [--ack-on-receipt]
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import urllib.request
from collections import deque
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

BATCH = 5000


def main() -> None:
    host, port, user, password, client_id, influx, database = sys.argv[1:8]
    ack_on_receipt = "--ack-on-receipt" in sys.argv
    inbox: deque[paho.MQTTMessage] = deque()
    arrived = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=not ack_on_receipt,
    )
    client.username_pw_set(user, password)

    def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe("$share/gateway/postedge/v1/+/+/telemetry", options=SubscribeOptions(qos=1))

    def on_message(c: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        inbox.append(message)
        arrived.set()

    client.on_connect = on_connect
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = 20000
    client.connect(host, int(port), clean_start=False, properties=properties)
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *args: stop.set())
    url = f"{influx}/write?db={database}&precision=ms"
    while not stop.is_set():
        if not inbox and not arrived.wait(0.2):
            continue
        arrived.clear()
        batch = [inbox.popleft() for _ in range(min(BATCH, len(inbox)))]
        if not batch:
            continue
        lines = []
        for message in batch:
            envelope = json.loads(message.payload)
            body = envelope["body"]
            lines.append(
                f"temperature,device={envelope['device']},probe={body['probe']},"
                f"station={envelope['station']} celsius={float(body['celsius'])},"
                f'seq={envelope["seq"]}i,msg_id="{envelope["id"]}" {_ms(envelope["ts"])}'
            )
        request = urllib.request.Request(url, data="\n".join(lines).encode(), method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass
        if not ack_on_receipt:
            for message in batch:
                client.ack(message.mid, 1)
    client.disconnect()
    client.loop_stop()


def _ms(ts: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(ts).timestamp() * 1000)


if __name__ == "__main__":
    main()
