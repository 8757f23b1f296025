"""``postedge``: one command for every part of the system."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from contracts.configfile import ConfigFileError
from contracts.mqtt import software_version
from edge.errors import EdgeError
from firmware_bridge.errors import BridgeError
from gateway.errors import GatewayError
from postedge.alerts import add_alerts
from postedge.figures import add_figures
from postedge.keys import add_keys
from postedge.localservers import ServerError
from postedge.logs import LOG_FORMATS, TEXT_FORMAT, LogFormat, log_handler

LOG_FORMAT = TEXT_FORMAT

Handler = Callable[[argparse.Namespace], int]


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Text on stderr for people, or JSON lines on stdout for journald (``fmt="json"``)."""
    logging.basicConfig(level=level, handlers=[log_handler(fmt)], force=True)
    if level != "DEBUG":
        # pymodbus logs every timeout and bad frame; our drivers count those and log each
        # kind of fault once, in words that name the device.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # Even at DEBUG: urllib3's debug lines hold each request's URL, and a group robot's
    # webhook URL holds its access token (gateway.notify never logs URLs itself).
    logging.getLogger("urllib3").setLevel(logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postedge",
        description=(
            "postedge: IoT edge gateway for rural parcel delivery. Edge agents read station "
            "devices and publish over MQTT; the gateway validates and stores; the API serves "
            "supervisors. Start with 'postedge demo'."
        ),
    )
    parser.add_argument("--version", action="version", version=f"postedge {software_version()}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help=(
            "text: lines for people on stderr (default); json: one JSON object per line on "
            "stdout (ts, level, logger, msg, exc), for journald and jq"
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_edge(commands)
    _add_gateway(commands)
    _add_api(commands)
    _add_sim(commands)
    _add_demo(commands)
    _add_scan(commands)
    return parser


def _add_edge(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    edge = commands.add_parser(
        "edge",
        help="the edge agent on a station box",
        description="The edge agent on a station box.",
    )
    sub = edge.add_subparsers(dest="edge_command", metavar="SUBCOMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="read the station's devices and publish their readings",
        description=(
            "Run the devices named in STATION.toml (probes, scanner, lock boards): every "
            "reading and event is committed to the outbox in data_dir, published at QoS 1 "
            "over MQTT 5 and deleted when the gateway's receipt confirms it is stored. "
            "Obeys commands on each device's cmd topic, publishes its health every "
            "health.interval_s, keeps a retained online/offline status. "
            "Stops cleanly on SIGINT or SIGTERM."
        ),
    )
    run.add_argument("config", type=Path, metavar="STATION.toml", help="station configuration file")
    run.add_argument(
        "--clerk",
        metavar="DEVICE",
        help="run the clerk's acceptance terminal for this counter device on stdin/stdout",
    )
    run.add_argument(
        "--panel",
        metavar="DEVICE",
        help="run the locker's panel (deliver, send, pick up) for this locker device on "
        "stdin/stdout",
    )
    run.set_defaults(func=_edge_run)
    check = sub.add_parser(
        "check",
        help="validate a station config and the devices it names, without starting",
        description=(
            "Validate STATION.toml, then check each item once and print one OK or FAIL line "
            "per item: password files, TLS files, the data directory, and (unless "
            "--no-devices) every Modbus port and probe, DS18B20 probe, scanner port and lock "
            "board. Publishes nothing. Exit status 0 when all are OK, 1 when any FAILed, "
            "2 when the config file itself is invalid."
        ),
    )
    check.add_argument(
        "config", type=Path, metavar="STATION.toml", help="station configuration file"
    )
    check.add_argument("--no-devices", action="store_true", help="check the files only")
    check.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long each device may take to answer (default 2)",
    )
    check.set_defaults(func=_edge_check)


def _edge_run(args: argparse.Namespace) -> int:
    from edge.agent import EdgeAgent, run_until_signalled
    from edge.config import load_station_config

    config = load_station_config(args.config)
    counters = [device.id for device in config.devices if device.counter is not None]
    if args.clerk is not None and args.clerk not in counters:
        raise ConfigFileError(
            f"--clerk {args.clerk}: not a counter device of {args.config} "
            f"(counters: {', '.join(counters) or 'none'})"
        )
    lockers = [device.id for device in config.devices if device.locker is not None]
    if args.panel is not None and args.panel not in lockers:
        raise ConfigFileError(
            f"--panel {args.panel}: not a locker device of {args.config} "
            f"(lockers: {', '.join(lockers) or 'none'})"
        )
    if args.clerk is not None and args.panel is not None:
        raise ConfigFileError("--clerk and --panel both read stdin: give one of them")
    agent = EdgeAgent(
        config, config_path=args.config, clerk_device=args.clerk, panel_device=args.panel
    )
    asyncio.run(run_until_signalled(agent))
    return 0


def _edge_check(args: argparse.Namespace) -> int:
    from edge.check import check_station

    if not args.timeout > 0:
        raise ConfigFileError("--timeout must be positive")
    report = check_station(args.config, devices=not args.no_devices, timeout_s=args.timeout)
    for line in report.lines():
        print(line)
    print(report.summary())
    return 0 if report.ok else 1


def _add_gateway(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = commands.add_parser(
        "gateway",
        help="the gateway that validates and stores device streams",
        description="The gateway that validates and stores device streams.",
    )
    sub = gateway.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="consume device streams from the broker into the telemetry store",
        description=(
            "Hold a persistent MQTT 5 session on "
            "postedge/v1/+/+/{telemetry,event,status,cmd/result} (with several workers, all "
            "but the events on the shared group $share/gateway/...), validate "
            "every envelope, write it to the configured store, then send the device a "
            "receipt naming what was stored and acknowledge it only after the write. "
            "Invalid input goes to postedge/v1/_deadletter/{reason}. "
            "Stops cleanly on SIGINT or SIGTERM."
        ),
    )
    run.add_argument("config", type=Path, metavar="GATEWAY.toml", help="gateway configuration file")
    run.add_argument("--workers", type=int, help="worker processes (overrides [ingest] workers)")
    run.set_defaults(func=_gateway_run)
    _add_gateway_provision(sub)
    add_keys(sub)
    add_alerts(sub)
    add_figures(sub)


def _add_gateway_provision(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    provision = sub.add_parser(
        "provision",
        help="write Mosquitto passwords, ACL and client certificates from the device registry",
        description=(
            "Write Mosquitto password and ACL files from REGISTRY.toml into --out: a device "
            "may publish only under its own postedge/v1/{station}/{device}/... and read only "
            "its own cmd, decision and receipt topics; the gateway user reads and writes "
            "everything. Device passwords are generated into DIR/secrets/{device}.secret "
            "(mode 0600) and kept on later runs unless --rotate names the device. With "
            "--certs, also a CA, a broker certificate and a client certificate per device "
            "(CN = device id) for TLS with use_identity_as_username, the CA's revocation list "
            "(a rotated certificate is revoked) and the listener lines in "
            "DIR/mosquitto-tls.conf. Prints one line per file written or kept, never a "
            "secret. Exit status 0; 2 for an invalid registry or option; 1 for files that "
            "cannot be written or a CA or revocation list that cannot be used."
        ),
    )
    provision.add_argument(
        "registry", type=Path, metavar="REGISTRY.toml", help="device registry file"
    )
    provision.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where the files go"
    )
    provision.add_argument(
        "--gateway-user", default="gateway", metavar="NAME", help="gateway MQTT user (gateway)"
    )
    provision.add_argument(
        "--gateway-password-file",
        type=Path,
        metavar="FILE",
        help="the gateway user's password (default: generated into DIR/secrets/)",
    )
    provision.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="DEVICE",
        help="replace this device's password (and certificate, revoking the old one); repeatable",
    )
    provision.add_argument(
        "--certs", action="store_true", help="issue TLS certificates from a CA as well"
    )
    provision.add_argument(
        "--ca-dir", type=Path, metavar="DIR", help="the CA's directory (default: OUT/ca)"
    )
    provision.add_argument(
        "--server-name",
        action="extend",
        nargs="+",
        metavar="HOST",
        help="broker names for its certificate (default: localhost 127.0.0.1)",
    )
    provision.set_defaults(func=_gateway_provision)


def _gateway_run(args: argparse.Namespace) -> int:
    from gateway.config import load_gateway_config
    from gateway.service import run_gateway

    config = load_gateway_config(args.config)
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigFileError("--workers must be at least 1")
        ingest = config.ingest.model_copy(update={"workers": args.workers})
        config = config.model_copy(update={"ingest": ingest})
    level = logging.getLevelName(logging.getLogger().level)
    return run_gateway(config, setup_logging=_LoggingSetup(level, args.log_format))


def _gateway_provision(args: argparse.Namespace) -> int:
    from gateway.provision import DEFAULT_SERVER_NAMES, ProvisionOptions, provision
    from gateway.registry import load_registry

    registry = load_registry(args.registry)
    options = ProvisionOptions(
        out=args.out,
        gateway_user=args.gateway_user,
        gateway_password_file=args.gateway_password_file,
        certs=args.certs,
        ca_dir=args.ca_dir,
        server_names=tuple(args.server_name or DEFAULT_SERVER_NAMES),
        rotate=frozenset(args.rotate),
    )
    for report in provision(registry, options):
        print(report)
    return 0


class _LoggingSetup:
    """A picklable logging set-up for spawned gateway workers."""

    def __init__(self, level: str, fmt: LogFormat = "text") -> None:
        self.level = level
        self.fmt = fmt

    def __call__(self) -> None:
        configure_logging(self.level, self.fmt)


def _add_api(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = commands.add_parser(
        "api",
        help="the supervisor API (FastAPI over uvicorn)",
        description=(
            "Serve the supervisor API and dashboard: / (the dashboard), /docs and "
            "/openapi.json, /api/v1/... (login, stations, alerts, parcels, probes, commands, "
            "reports, events). Reads the ledger and telemetry store named in API.toml "
            "(default: ledger.sqlite and telemetry.sqlite in the current directory). "
            "'postedge api users' and 'postedge api tokens' manage who may log in."
        ),
    )
    api.add_argument("--config", type=Path, metavar="API.toml", help="API configuration file")
    api.add_argument("--host", help="listen address (overrides the config; default 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (overrides the config; default 8000)")
    from postedge.apiusers import add_accounts

    add_accounts(api.add_subparsers(dest="api_command", metavar="ACTION"))
    api.set_defaults(func=_api_run)


def _api_run(args: argparse.Namespace) -> int:
    import uvicorn

    from cloud_api.app import create_app
    from cloud_api.config import ApiConfig, load_api_config

    config = load_api_config(args.config) if args.config else ApiConfig()
    host = args.host or config.api.host
    port = args.port or config.api.port
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
    return 0


def _add_sim(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from firmware_bridge.sim import cli as sim_cli

    sim = commands.add_parser(
        "sim",
        help="device simulators over real ptys and TCP",
        description="Device simulators over real ptys and TCP, with fault injection.",
    )
    sub = sim.add_subparsers(dest="sim_command", metavar="DEVICE", required=True)
    sim_cli.register(sub)


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the whole system on this machine with simulated stations",
        description=(
            "Start a private Mosquitto on a free port, the gateway with the SQLite store, "
            "the API, and three simulated stations with two probes each (one drifting into "
            "an excursion) over real ptys; print the URL to open. Stops on Ctrl-C or after "
            "--duration."
        ),
    )
    demo.add_argument("--api-port", type=int, default=8000, help="API port (default 8000)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument(
        "--workdir", type=Path, help="where configs, data and logs go (default: a new temp dir)"
    )
    demo.add_argument("--interval", type=float, default=2.0, help="probe interval (default 2 s)")
    demo.add_argument(
        "--mosquitto", metavar="PATH", help="the mosquitto binary (default: from PATH or /usr/sbin)"
    )
    demo.set_defaults(func=_demo_run)


def _demo_run(args: argparse.Namespace) -> int:
    from postedge.demo import run_demo

    return run_demo(
        api_port=args.api_port,
        duration=args.duration,
        workdir=args.workdir,
        interval=args.interval,
        mosquitto=args.mosquitto,
    )


def _add_scan(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = commands.add_parser(
        "scan",
        help="read the barcodes in image files, as the camera reader does",
        description=(
            "Decode each IMAGE with the camera reader's chain (zxing-cpp, then pyzbar, over "
            "contrast, upscaled and turned variants) and print one line per image; with "
            '--json exactly {"file": ..., "results": [{"text": ..., "symbology": ...}], '
            '"ms": ...}. A read is reported only when it is trusted: no result is better '
            "than a wrong one. Exit status 0 (also when nothing is read), 2 when an IMAGE "
            "is missing or not an image."
        ),
    )
    scan.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    scan.add_argument("--json", action="store_true", help="one JSON object per line")
    scan.add_argument(
        "--waybill-only", action="store_true", help="report only codes shaped like waybills"
    )
    scan.set_defaults(func=_scan)


def _scan(args: argparse.Namespace) -> int:
    import json

    from edge.camera.decode import BarcodeDecoder, DecodeError

    decoder = BarcodeDecoder(waybill_only=args.waybill_only)
    status = 0
    for path in args.images:
        try:
            result = decoder.decode_file(path)
        except DecodeError as exc:
            print(f"postedge scan: {exc}", file=sys.stderr)
            status = 2
            continue
        results = [{"text": r.text, "symbology": r.symbology} for r in result.reads]
        if args.json:
            line = {"file": str(path), "results": results, "ms": round(result.ms, 1)}
            print(json.dumps(line, ensure_ascii=False), flush=True)
            continue
        found = "; ".join(
            f"{r.symbology} {json.dumps(r.text, ensure_ascii=False)}" for r in result.reads
        )
        print(f"{path}: {found or 'nothing read'} ({result.ms:.1f} ms)", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    handler: Handler = args.func
    try:
        return handler(args)
    except ConfigFileError as exc:
        print(f"postedge: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except (EdgeError, GatewayError, BridgeError, ServerError) as exc:
        print(f"postedge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
