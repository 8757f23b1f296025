"""``postedge gateway provision``: broker credentials from the device registry.

Writes into the output directory:

- ``secrets/{user}.secret``: one generated password per device (and for the gateway user
  unless ``--gateway-password-file`` names its password), mode 0600. An existing secret is
  kept, so re-running changes nothing unless a device is named with ``--rotate``.
- ``passwords``: Mosquitto ``$7$`` lines for every device and the gateway, mode 0600. A
  line that still matches its secret is kept as it was (salt and all), so an unchanged
  registry leaves the file byte for byte as it was.
- ``acl``: a ``user`` block per device that lets it publish only under its own
  ``postedge/v1/{station}/{device}/...`` (its registered station, not ``+``) and read only
  its own ``cmd``, ``decision`` and ``receipt``; the gateway reads and writes everything.
- with ``certs``: a CA (``ca/ca.crt``, ``ca/ca.key``), the broker's ``broker.crt`` and
  ``broker.key``, a client certificate per device and for the gateway user
  (``certs/{user}.crt`` and ``.key``, CN = the user), the CA's revocation list
  (``ca/crl.pem``: the certificates ``--rotate`` replaced), and ``mosquitto-tls.conf``,
  the listener lines for Mosquitto with ``use_identity_as_username`` and ``crlfile``.

It reports one line per file and never prints, logs or raises a secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from contracts.configfile import ConfigFileError
from contracts.errors import InvalidId
from contracts.ids import ID_PATTERN, validate_id
from gateway.certs import (
    Action,
    CertificateAuthority,
    ProvisionError,
    check_server_name,
    sync_file,
    write_file,
)
from gateway.mosquitto import GATEWAY_RULES, acl_text, device_rules, password_line, password_matches
from gateway.registry import Registry

DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
TLS_PORT = 8883


@dataclass(frozen=True)
class ProvisionOptions:
    """What ``provision`` writes and where; paths as the operator gave them."""

    out: Path
    gateway_user: str = "gateway"
    gateway_password_file: Path | None = None
    certs: bool = False
    ca_dir: Path | None = None
    server_names: tuple[str, ...] = DEFAULT_SERVER_NAMES
    rotate: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class FileReport:
    """One file ``provision`` wrote or kept; its text is the line the command prints."""

    path: Path
    action: Action

    def __str__(self) -> str:
        return f"{self.action:<8} {self.path}"


def provision(registry: Registry, options: ProvisionOptions) -> list[FileReport]:
    """Write the broker's credentials for ``registry``; the files, in the order written.

    Raises ``ConfigFileError`` for options that contradict the registry and
    :class:`ProvisionError` for files that cannot be written or a CA that cannot be used.
    """
    users = _users(registry, options)
    given = options.gateway_password_file
    passwords = {options.gateway_user: _read_password_file(given)} if given else {}
    try:
        return _provision(registry, options, users, passwords)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise ProvisionError(f"cannot write{where}: {exc.strerror}") from None


def _users(registry: Registry, options: ProvisionOptions) -> list[str]:
    """Every MQTT user, gateway first; checks the options against the registry."""
    try:
        validate_id(options.gateway_user, "gateway user")
    except InvalidId:
        raise ConfigFileError(f"--gateway-user must match {ID_PATTERN}") from None
    devices = [device.id for device in registry.devices]
    if options.gateway_user in devices:
        raise ConfigFileError(
            f"--gateway-user {options.gateway_user!r} is also a device id in the registry"
        )
    users = [options.gateway_user, *devices]
    rotatable = set(devices) | (set() if options.gateway_password_file else {users[0]})
    unknown = sorted(options.rotate - rotatable)
    if unknown:
        raise ConfigFileError(
            f"--rotate names {', '.join(unknown)}: not a device of the registry"
            + ("" if options.gateway_password_file else " nor the gateway user")
        )
    for name in options.server_names:
        try:
            check_server_name(name)
        except ValueError as exc:
            raise ConfigFileError(f"--server-name: {exc}") from None
    return users


def _provision(
    registry: Registry, options: ProvisionOptions, users: list[str], given: dict[str, str]
) -> list[FileReport]:
    """Write every file; ``given`` holds the passwords the operator supplied."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    secrets_dir = out / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    secrets_dir.chmod(0o700)
    reports: list[FileReport] = []
    passwords: dict[str, str] = {}
    for user in users:
        if user in given:
            passwords[user] = given[user]
            continue
        path = secrets_dir / f"{user}.secret"
        passwords[user], action = _secret(path, rotate=user in options.rotate)
        reports.append(FileReport(path, action))
    passwords_path = out / "passwords"
    reports.append(FileReport(passwords_path, _write_passwords(passwords_path, passwords)))
    acl = acl_text(
        {
            options.gateway_user: GATEWAY_RULES,
            **{d.id: device_rules(d.station, d.id) for d in registry.devices},
        }
    )
    reports.append(FileReport(out / "acl", sync_file(out / "acl", acl.encode(), 0o644)))
    if options.certs:
        reports += _certificates(options, users)
    return reports


def _read_password_file(path: Path) -> str:
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise ConfigFileError(f"--gateway-password-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"--gateway-password-file {path}: not UTF-8 text") from None
    if not password or "\n" in password:
        raise ConfigFileError(f"--gateway-password-file {path}: must hold one non-empty line")
    return password


def _secret(path: Path, *, rotate: bool) -> tuple[str, Action]:
    """The password kept in ``path``, made if missing or replaced when rotating."""
    if not rotate:
        try:
            existing = path.read_text().strip()
        except FileNotFoundError:
            existing = ""
        except UnicodeDecodeError:
            raise ProvisionError(f"{path} is not a password file; remove it or --rotate") from None
        if existing:
            path.chmod(0o600)
            return existing, "kept"
    existed = path.exists()
    password = secrets.token_urlsafe(24)
    write_file(path, f"{password}\n".encode(), 0o600)
    if not existed:
        return password, "created"
    return password, "rotated" if rotate else "updated"


def _write_passwords(path: Path, passwords: dict[str, str]) -> Action:
    """The Mosquitto password file; a user's old line is kept while it still matches."""
    old: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            user, sep, _ = line.partition(":")
            if sep:
                old[user] = line
    lines = []
    for user, password in passwords.items():
        kept = old.get(user)
        if kept is None or not password_matches(kept, password):
            kept = password_line(user, password)
        lines.append(kept)
    return sync_file(path, ("\n".join(lines) + "\n").encode(), 0o600)


def _certificates(options: ProvisionOptions, users: Iterable[str]) -> list[FileReport]:
    out = options.out
    ca_dir = options.ca_dir if options.ca_dir is not None else out / "ca"
    ca, action = CertificateAuthority.load_or_create(ca_dir)
    reports = [FileReport(ca.cert_path, action)]
    server_cert, server_key = out / "broker.crt", out / "broker.key"
    action = ca.issue(
        server_cert, server_key, options.server_names[0], server_names=options.server_names
    )
    reports += [FileReport(server_cert, action), FileReport(server_key, action)]
    certs = out / "certs"
    certs.mkdir(mode=0o700, exist_ok=True)
    replaced: list[x509.Certificate] = []
    for user in users:
        cert, key = certs / f"{user}.crt", certs / f"{user}.key"
        rotating = user in options.rotate
        old = ca.issued(cert) if rotating else None
        action = ca.issue(cert, key, user, force=rotating)
        reports += [FileReport(cert, action), FileReport(key, action)]
        if old is not None:
            replaced.append(old)  # a rotation: the old certificate must stop working
    reports.append(FileReport(ca.crl_path, ca.sync_crl(replaced)))
    conf = tls_listener_conf(ca.cert_path, server_cert, server_key, ca.crl_path)
    conf_path = out / "mosquitto-tls.conf"
    reports.append(FileReport(conf_path, sync_file(conf_path, conf.encode(), 0o644)))
    return reports


def tls_listener_conf(
    cafile: Path, certfile: Path, keyfile: Path, crlfile: Path, port: int = TLS_PORT
) -> str:
    """Mosquitto listener lines for devices with client certificates from the CA."""
    return "\n".join(
        [
            "# postedge: a TLS listener for devices with client certificates from the",
            "# postedge CA. The certificate's CN (the device id) is the MQTT username, so",
            "# the ACL written beside this file applies. Include this in mosquitto.conf with",
            "# per_listener_settings false, password_file and acl_file set. Restart the",
            "# broker after a --rotate: it reads the revocation list (crlfile) at start.",
            f"listener {port}",
            f"cafile {cafile.resolve()}",
            f"certfile {certfile.resolve()}",
            f"keyfile {keyfile.resolve()}",
            f"crlfile {crlfile.resolve()}",
            "require_certificate true",
            "use_identity_as_username true",
            "",
        ]
    )
