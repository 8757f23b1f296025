"""The station configuration: a TOML file validated by pydantic at start-up.

Unknown keys are errors, and every error names the file and the key. Relative paths in
the file are relative to the file's own directory, so a station directory can be moved.

Example::

    station = "village-23"
    data_dir = "data"

    [broker]
    host = "gateway.county.example"
    port = 1883

    [[devices]]
    id = "village-23-cold"
    password = "..."          # MQTT username is the device id
    interval_s = 5

    [[devices.modbus]]
    port = "/dev/ttyUSB0"
    baudrate = 9600

    [[devices.modbus.probes]]
    id = "fridge"
    unit = 1
    temperature = { register = 0, table = "holding", scale = 0.1, signed = true }
    humidity = { register = 1, table = "holding", scale = 0.1, signed = false }
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from contracts.configfile import ConfigFileError, load_toml_model, resolve
from contracts.ids import Identifier

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(BaseModel):
    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)
    max_queued: int = Field(
        default=50_000,
        ge=1,
        le=60_000,  # paho's message ids wrap at 65535; more outstanding publishes collide
        description="publishes kept in memory while the link is down",
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


class DeviceConfig(BaseModel):
    """A device with its own MQTT identity (username and client id = device id)."""

    model_config = _STRICT

    id: Identifier
    password: SecretStr | None = None
    password_file: Path | None = None
    interval_s: float = Field(default=5.0, ge=0.1, le=3600)
    modbus: list[ModbusBusConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _probe_ids_unique(self) -> Self:
        ids = [probe.id for bus in self.modbus for probe in bus.probes]
        if len(ids) != len(set(ids)):
            raise ValueError(f"device {self.id} has two probes with the same id")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self

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
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _device_ids_unique(self) -> Self:
        ids = [device.id for device in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError("two devices share an id")
        return self


def load_station_config(path: Path) -> StationConfig:
    """Read and validate a station file; raise :class:`ConfigFileError` naming file and key."""
    config = load_toml_model(path, StationConfig)
    base = path.parent
    devices = [
        device.model_copy(update={"password_file": resolve(base, device.password_file)})
        if device.password_file is not None
        else device
        for device in config.devices
    ]
    return config.model_copy(
        update={"data_dir": resolve(base, config.data_dir), "devices": devices}
    )
