"""The station configuration: a TOML file validated by pydantic at start-up.

Unknown keys are errors, and every error names the file and the key. Relative paths in
the file are relative to the file's own directory, so a station directory can be moved.

Example::

    station = "village-23"
    data_dir = "data"

    [broker]
    host = "gateway.county.example"
    port = 8883
    tls = { ca_file = "ca.pem" }        # optional; client certificates per device below

    [limits]
    outbox_max_mb = 256                 # then temperature readings are thinned

    [health]
    interval_s = 60                     # published by the first device unless 'device' is set

    [[devices]]
    id = "village-23-cold"
    password = "..."          # MQTT username is the device id
    interval_s = 5
    # tls_cert_file = "village-23-cold.crt"; tls_key_file = "village-23-cold.key"

    [[devices.modbus]]
    port = "/dev/ttyUSB0"
    baudrate = 9600

    [[devices.modbus.probes]]
    id = "fridge"
    unit = 1
    temperature = { register = 0, table = "holding", scale = 0.1, signed = true }
    humidity = { register = 1, table = "holding", scale = 0.1, signed = false }

    [[devices]]
    id = "village-23-locker"
    password_file = "locker.secret"
    scanner = { port = "/dev/ttyACM0", reader = "locker-scanner" }
    lockboard = { port = "/dev/ttyUSB1", boards = [1, 2] }

    [[devices]]
    id = "village-23-box"
    password_file = "box.secret"
    ds18b20 = [{ sensor = "28-0123456789ab", probe = "box" }]
    alarm = { gpio = 529 }              # a buzzer while a probe is out of its profile

Station workflows (one per device; see edge/workflows/)::

    [devices.locker]                    # with scanner (or camera) and lockboard sections
    slots = [{ board = 1, locks = "1-8", size = "S" }, { board = 2, locks = "1-4", size = "L" }]

    [devices.counter]                   # with a scanner or a camera section
    idcard = { port = "/dev/ttyUSB2" }

    [devices.sorter]
    host = "192.168.1.20"
    exception_chute = 24
    deadline_ms = 300

    # camera = { source = "rtsp://cam.local/stream", reader = "cam-1" } instead of a scanner
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from contracts.configfile import ConfigFileError, load_toml_model, resolve
from contracts.ids import Identifier
from edge.alarm import AlarmConfig
from edge.camera import CameraConfig
from edge.workflows.counter import CounterConfig
from edge.workflows.locker import LockerConfig
from edge.workflows.sorter import SorterWorkflowConfig

_STRICT = ConfigDict(extra="forbid", frozen=True)
_M = TypeVar("_M", bound=BaseModel)


class TlsConfig(BaseModel):
    """TLS to the broker: the CA that signed the broker's certificate and, for brokers that
    take the certificate as the identity, a default client certificate and key (each device
    may name its own)."""

    model_config = _STRICT

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together")
        return self


class BrokerConfig(BaseModel):
    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_queued: int = Field(
        default=50_000,
        ge=1,
        le=60_000,  # paho's message ids wrap at 65535; more outstanding publishes collide
        description="publishes kept in memory while the link is down",
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Self:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s is below reconnect_min_s")
        return self


class LimitsConfig(BaseModel):
    """How much the outbox may hold and how the link paces what it sends."""

    model_config = _STRICT

    outbox_max_mb: float = Field(
        default=256, gt=0, description="above this, temperature readings are thinned"
    )
    thin_window_s: float = Field(
        default=300, gt=0, description="first thinning window: keep min, max and last in each"
    )
    inflight: int = Field(
        default=10_000,
        ge=1,
        le=60_000,  # paho's message ids wrap at 65535
        description="messages sent and not yet confirmed by a receipt, per device",
    )
    receipt_timeout_s: float = Field(
        default=30, gt=0, description="resend what no receipt confirmed after this long"
    )


class HealthConfig(BaseModel):
    model_config = _STRICT

    interval_s: float = Field(default=60, ge=1, le=3600)
    device: Identifier | None = Field(
        default=None, description="the device whose telemetry carries the agent's health"
    )


class RegisterConfig(BaseModel):
    """Where a value sits: ``{ register = 0, table = "holding", scale = 0.1, signed = true }``."""

    # The key is "register", which would shadow BaseModel.register as a field name.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True)

    address: int = Field(alias="register", ge=0, le=65535)
    table: Literal["holding", "input"] = "holding"
    scale: float = 0.1
    signed: bool = True


class ProbeConfig(BaseModel):
    model_config = _STRICT

    id: Identifier
    unit: int = Field(ge=1, le=247, description="Modbus device id on the bus")
    temperature: RegisterConfig
    humidity: RegisterConfig | None = None


class ModbusBusConfig(BaseModel):
    """One Modbus RTU line (an RS-485 bus) with the probes on it."""

    model_config = _STRICT

    port: str
    baudrate: int = 9600
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    probes: list[ProbeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _units_unique(self) -> Self:
        units = [probe.unit for probe in self.probes]
        if len(units) != len(set(units)):
            raise ValueError(f"two probes on bus {self.port} share a Modbus unit id")
        return self


class Ds18b20Config(BaseModel):
    """A 1-wire DS18B20 probe read through the kernel's w1 sysfs files."""

    model_config = _STRICT

    sensor: str = Field(pattern=r"^28-[0-9a-f]{12}$", description="sysfs id, 28-0123456789ab")
    probe: Identifier
    base: Path = Path("/sys/bus/w1/devices")
    timeout_s: float = Field(default=3.0, gt=0, le=30)


class ScannerConfig(BaseModel):
    """A serial barcode scanner; every read becomes a ``scan`` event."""

    model_config = _STRICT

    port: str
    reader: Identifier
    baudrate: int = 9600
    suffix: Literal["CR", "LF", "CRLF", "TAB"] = "CR"
    aim: bool = True


class LockBoardConfig(BaseModel):
    """Locker lock boards on one RS-485 line; door changes become ``door`` events."""

    model_config = _STRICT

    port: str
    boards: list[int] = Field(min_length=1)
    baudrate: int = 9600
    locks_per_board: int = Field(default=24, ge=1, le=24)
    item_sensors: bool = True
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _boards_valid(self) -> Self:
        if any(not 0 <= board <= 255 for board in self.boards):
            raise ValueError("board addresses are 0..255")
        if len(set(self.boards)) != len(self.boards):
            raise ValueError("a board address is listed twice")
        return self


class DeviceConfig(BaseModel):
    """A device with its own MQTT identity (username and client id = device id)."""

    model_config = _STRICT

    id: Identifier
    password: SecretStr | None = None
    password_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    interval_s: float = Field(default=5.0, ge=0.1, le=3600)
    modbus: list[ModbusBusConfig] = Field(default_factory=list)
    ds18b20: list[Ds18b20Config] = Field(default_factory=list)
    scanner: ScannerConfig | None = None
    camera: CameraConfig | None = None
    lockboard: LockBoardConfig | None = None
    counter: CounterConfig | None = None
    locker: LockerConfig | None = None
    sorter: SorterWorkflowConfig | None = None
    alarm: AlarmConfig | None = None

    @model_validator(mode="after")
    def _probe_ids_unique(self) -> Self:
        ids = self.probe_ids()
        if len(ids) != len(set(ids)):
            raise ValueError(f"device {self.id} has two probes with the same id")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give tls_cert_file and tls_key_file together")
        self._workflows_have_devices()
        return self

    def _workflows_have_devices(self) -> None:
        workflows = [name for name in ("counter", "locker", "sorter") if getattr(self, name)]
        if len(workflows) > 1:
            raise ValueError(f"one workflow per device, not {' and '.join(workflows)}")
        if self.scanner is not None and self.camera is not None:
            raise ValueError("give a scanner or a camera, not both: one source of waybills")
        if self.counter is not None and self.scanner is None and self.camera is None:
            raise ValueError("a counter needs a scanner or a camera for waybills")
        if self.locker is not None:
            if self.lockboard is None:
                raise ValueError("a locker needs a lockboard section")
            missing = {board for board, _ in self.locker.sizes()} - set(self.lockboard.boards)
            if missing:
                raise ValueError(
                    f"locker slots on boards {sorted(missing)} are not in lockboard.boards"
                )
        if self.alarm is not None and not self.probe_ids():
            raise ValueError("an alarm needs probes to watch")

    @property
    def workflow(self) -> str | None:
        """The station workflow this device runs, if any."""
        return next((n for n in ("counter", "locker", "sorter") if getattr(self, n)), None)

    def probe_ids(self) -> list[str]:
        return [probe.id for bus in self.modbus for probe in bus.probes] + [
            probe.probe for probe in self.ds18b20
        ]

    def secret(self) -> str | None:
        """The MQTT password, read from ``password_file`` if that is given."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigFileError(
                    f"cannot read password_file {self.password_file}: {exc.strerror}"
                ) from None
        return self.password.get_secret_value() if self.password else None


class StationConfig(BaseModel):
    model_config = _STRICT

    station: Identifier
    data_dir: Path = Path("data")
    broker: BrokerConfig = BrokerConfig()
    limits: LimitsConfig = LimitsConfig()
    health: HealthConfig = HealthConfig()
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _device_ids_unique(self) -> Self:
        ids = [device.id for device in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError("two devices share an id")
        if self.health.device is not None and self.health.device not in ids:
            raise ValueError(f"health.device {self.health.device!r} is not one of the devices")
        return self

    @property
    def health_device(self) -> str:
        """The device whose telemetry topic carries the agent's health."""
        return self.health.device or self.devices[0].id


def load_station_config(path: Path) -> StationConfig:
    """Read and validate a station file; raise :class:`ConfigFileError` naming file and key."""
    config = load_toml_model(path, StationConfig)
    base = path.parent

    def paths(model: _M, *names: str) -> _M:
        update = {
            name: resolve(base, getattr(model, name))
            for name in names
            if getattr(model, name) is not None
        }
        return model.model_copy(update=update) if update else model

    devices = [
        paths(device, "password_file", "tls_cert_file", "tls_key_file").model_copy(
            update={"ds18b20": [paths(probe, "base") for probe in device.ds18b20]}
        )
        for device in config.devices
    ]
    broker = config.broker
    if broker.tls is not None:
        broker = broker.model_copy(
            update={"tls": paths(broker.tls, "ca_file", "cert_file", "key_file")}
        )
    return config.model_copy(
        update={"data_dir": resolve(base, config.data_dir), "devices": devices, "broker": broker}
    )
