"""``postedge gateway provision``: its files, enforced by a real Mosquitto over MQTT 5.

The broker runs on exactly the files the command wrote (passwords, ACL, and the TLS
listener snippet with the certificates), so what is tested is what an operator deploys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.mqtt import new_client
from gateway.certs import RENEW_BEFORE, CertificateAuthority
from gateway.mosquitto import password_line, password_matches
from postedge.cli import main
from postedge.localservers import Mosquitto, free_port
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

REGISTRY = """\
[[stations]]
id = "county-410523"
name = "汤阴县分拣中心"
division = "410523000000"
tier = "county"

[[stations]]
id = "town-410523100"
name = "城关镇服务站"
division = "410523100000"
tier = "township"

[[devices]]
id = "sorter-1"
station = "county-410523"
role = "sorter"
[devices.routing]
exception_chute = 99
routes = { "4105" = 1, "410523" = 2, "41" = 3 }

[[devices]]
id = "locker-1"
station = "town-410523100"
role = "locker"

[[devices]]
id = "probe-1"
station = "town-410523100"
role = "probe"
"""
DEVICES = ("sorter-1", "locker-1", "probe-1")
GATEWAY_PASSWORD = "gateway-from-file"
COUNTY, TOWN = "county-410523", "town-410523100"


def provision_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``postedge gateway provision`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "postedge.cli", "gateway", "provision", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_registry(directory: Path, text: str = REGISTRY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "registry.toml"
    path.write_text(text)
    return path


def secret(out: Path, user: str) -> str:
    return (out / "secrets" / f"{user}.secret").read_text().strip()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass(frozen=True)
class Provisioned:
    out: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Provisioned:
    base = tmp_path_factory.mktemp("provision")
    registry = write_registry(base)
    password_file = base / "gateway.password"
    password_file.write_text(GATEWAY_PASSWORD + "\n")
    out = base / "out"
    result = provision_cli(
        registry, "--out", out, "--gateway-password-file", password_file, "--certs"
    )
    assert result.returncode == 0, result.stderr
    return Provisioned(out, result)


class ProvisionedMosquitto(Mosquitto):
    """A private Mosquitto whose password and ACL files are the provisioned ones."""

    def __init__(self, workdir: Path, provisioned: Path, **kwargs: Any) -> None:
        super().__init__(workdir, users={}, **kwargs)
        self.provisioned = provisioned

    def _prepare(self) -> None:
        super()._prepare()
        shutil.copy(self.provisioned / "passwords", self.workdir / "passwords")
        shutil.copy(self.provisioned / "acl", self.workdir / "acl")


@dataclass(frozen=True)
class Broker:
    server: Mosquitto
    tls_port: int

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def broker(provisioned: Provisioned, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with broker_on(provisioned.out, tmp_path_factory.mktemp("broker")) as started:
        yield started


@contextlib.contextmanager
def broker_on(out: Path, workdir: Path) -> Iterator[Broker]:
    """Mosquitto on the files provisioned into ``out``, with the TLS snippet as a second
    listener."""
    tls_port = free_port()
    snippet = (out / "mosquitto-tls.conf").read_text().splitlines()
    assert "listener 8883" in snippet
    # Bind the test's listener to loopback on a free port; every other line as written.
    conf = [
        f"listener {tls_port} 127.0.0.1" if line == "listener 8883" else line for line in snippet
    ]
    server = ProvisionedMosquitto(workdir, out, extra_conf=conf)
    server.start()
    try:
        wait_until(lambda: _listening(server.host, tls_port), what="the TLS listener")
        yield Broker(server, tls_port)
    finally:
        server.stop(kill=True)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


class Session:
    """A connected MQTT 5 client that records its PUBACK reasons and messages."""

    def __init__(
        self, port: int, *, user: str | None = None, password: str | None = None,
        tls: Tls | None = None,
    ) -> None:  # fmt: skip
        self.client = new_client(f"t-{user}-{id(self)}", username=user, password=password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
        self.connack: list[int] = []
        self.subacks: list[None] = []
        self.reasons: list[int] = []
        self.messages: list[str] = []
        self.closed = threading.Event()
        self._event = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.closed.set()
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda *args: self._note(self.subacks)
        self.client.on_message = lambda c, u, message: self._note(self.messages, message.topic)
        self.connect_rc = self._connect(port)
        self.client.loop_start()

    def _connect(self, port: int) -> int:
        try:
            return int(self.client.connect("127.0.0.1", port))
        except OSError:  # an ssl.SSLError, when the handshake itself fails
            self.closed.set()
            return -1

    def _note(self, into: list[Any], item: Any = None) -> None:
        with self._event:
            into.append(item)
            self._event.notify_all()

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self._note(self.connack, reason.value)

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        self._note(self.reasons, reason.value)

    def wait(self, what: str, predicate: Any) -> None:
        with self._event:
            assert self._event.wait_for(predicate, timeout=10), f"no {what}"

    def connected(self) -> Session:
        self.wait("CONNACK", lambda: self.connack)
        assert self.connack[0] == 0, f"connection refused: {self.connack[0]}"
        return self

    def publish_reason(self, topic: str) -> int:
        """The PUBACK reason of one QoS 1 publish (Mosquitto 2.0.11 then closes on 135)."""
        self.client.publish(topic, b"{}", qos=1)
        self.wait("PUBACK", lambda: self.reasons)
        return self.reasons[0]

    def subscribe(self, *filters: str) -> None:
        before = len(self.subacks)
        self.client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        self.wait("SUBACK", lambda: len(self.subacks) > before)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.close()


def device_session(
    broker: Broker, provisioned: Provisioned, sessions: list[Session], device: str
) -> Session:
    session = Session(broker.port, user=device, password=secret(provisioned.out, device))
    sessions.append(session)
    return session.connected()


def test_provision_reports_each_file_and_never_a_secret(provisioned: Provisioned) -> None:
    out, result = provisioned.out, provisioned.result
    lines = result.stdout.splitlines()
    assert all(line.split()[0] == "created" for line in lines), lines
    reported = {Path(line.split(maxsplit=1)[1]) for line in lines}
    expected = {out / "passwords", out / "acl", out / "mosquitto-tls.conf", out / "ca" / "ca.crt"}
    expected.add(out / "ca" / "crl.pem")
    expected |= {out / "broker.crt", out / "broker.key"}
    for user in ("gateway", *DEVICES):
        expected |= {out / "certs" / f"{user}.crt", out / "certs" / f"{user}.key"}
    expected |= {out / "secrets" / f"{device}.secret" for device in DEVICES}
    assert reported == expected  # the gateway's password came from its file: no secret made
    for device in DEVICES:
        assert secret(out, device) not in result.stdout + result.stderr
        assert len(secret(out, device)) == 32  # token_urlsafe(24)
    assert GATEWAY_PASSWORD not in result.stdout + result.stderr
    assert GATEWAY_PASSWORD not in (out / "passwords").read_text()


def test_secrets_keys_and_passwords_are_private(provisioned: Provisioned) -> None:
    out = provisioned.out
    private = [out / "passwords", out / "broker.key", out / "ca" / "ca.key"]
    private += [out / "secrets" / f"{device}.secret" for device in DEVICES]
    private += [out / "certs" / f"{device}.key" for device in DEVICES]
    assert {path.name: mode(path) for path in private} == {path.name: 0o600 for path in private}
    assert mode(out / "secrets") == 0o700


def test_the_acl_names_each_device_under_its_registered_station(provisioned: Provisioned) -> None:
    acl = (provisioned.out / "acl").read_text()
    assert "user locker-1\ntopic write postedge/v1/town-410523100/locker-1/telemetry\n" in acl
    assert "topic read postedge/v1/county-410523/sorter-1/decision\n" in acl
    assert "user gateway\ntopic readwrite #\ntopic readwrite $share/#\n" in acl
    assert "+" not in acl
    assert "pattern" not in acl


@pytest.mark.parametrize("channel", ["telemetry", "event", "status", "cmd/result"])
def test_a_device_may_publish_on_its_own_topics(
    broker: Broker, provisioned: Provisioned, sessions: list[Session], channel: str
) -> None:
    session = device_session(broker, provisioned, sessions, "locker-1")
    assert session.publish_reason(f"postedge/v1/{TOWN}/locker-1/{channel}") < 128


@pytest.mark.parametrize(
    ("device", "topic"),
    [
        ("locker-1", f"postedge/v1/{TOWN}/probe-1/telemetry"),  # another device, same station
        ("sorter-1", f"postedge/v1/{TOWN}/locker-1/event"),  # another station's device
        ("locker-1", f"postedge/v1/{COUNTY}/locker-1/event"),  # itself, under another station
        ("probe-1", f"postedge/v1/{TOWN}/probe-1/cmd"),  # its own cmd is read-only
        ("sorter-1", f"postedge/v1/{COUNTY}/sorter-1/decision"),  # decisions are the gateway's
        ("probe-1", "postedge/v1/_deadletter/identity"),
    ],
)
def test_a_spoofed_publish_is_refused_with_reason_135(
    broker: Broker, provisioned: Provisioned, sessions: list[Session], device: str, topic: str
) -> None:
    session = device_session(broker, provisioned, sessions, device)
    assert session.publish_reason(topic) == 135


def test_a_device_reads_only_its_own_commands(
    broker: Broker, provisioned: Provisioned, sessions: list[Session]
) -> None:
    locker = device_session(broker, provisioned, sessions, "locker-1")
    own = f"postedge/v1/{TOWN}/locker-1/cmd"
    others = [f"postedge/v1/{TOWN}/probe-1/cmd", f"postedge/v1/{TOWN}/probe-1/decision"]
    locker.subscribe(own, *others, f"postedge/v1/{TOWN}/probe-1/receipt")
    gateway = Session(broker.port, user="gateway", password=GATEWAY_PASSWORD).connected()
    sessions.append(gateway)
    for topic in [*others, own]:  # one publisher, in order: the own command arrives last
        gateway.client.publish(topic, b"{}", qos=1).wait_for_publish(10)
    locker.wait("own command", lambda: own in locker.messages)
    assert locker.messages == [own]


def test_the_gateway_reads_everything(
    broker: Broker, provisioned: Provisioned, sessions: list[Session]
) -> None:
    gateway = Session(broker.port, user="gateway", password=GATEWAY_PASSWORD).connected()
    sessions.append(gateway)
    gateway.subscribe("postedge/#", "$share/gateway/postedge/v1/+/+/telemetry")
    probe = device_session(broker, provisioned, sessions, "probe-1")
    topic = f"postedge/v1/{TOWN}/probe-1/telemetry"
    assert probe.publish_reason(topic) < 128
    gateway.wait("both copies", lambda: len(gateway.messages) == 2)
    assert gateway.messages == [topic, topic]


def test_a_device_secret_does_not_open_another_device(
    broker: Broker, provisioned: Provisioned, sessions: list[Session]
) -> None:
    session = Session(broker.port, user="locker-1", password=secret(provisioned.out, "probe-1"))
    sessions.append(session)
    session.wait("CONNACK", lambda: session.connack)
    assert session.connack == [135]


def device_tls(out: Path, device: str) -> Tls:
    return Tls(
        out / "ca" / "ca.crt", out / "certs" / f"{device}.crt", out / "certs" / f"{device}.key"
    )


def test_a_device_certificate_is_its_identity_on_the_tls_listener(
    broker: Broker, provisioned: Provisioned, sessions: list[Session]
) -> None:
    """No password: the certificate's CN is the username, and the same ACL applies."""
    tls = device_tls(provisioned.out, "probe-1")
    own = Session(broker.tls_port, tls=tls).connected()
    sessions.append(own)
    assert own.publish_reason(f"postedge/v1/{TOWN}/probe-1/telemetry") < 128
    spoof = Session(broker.tls_port, tls=tls).connected()
    sessions.append(spoof)
    assert spoof.publish_reason(f"postedge/v1/{TOWN}/locker-1/telemetry") == 135


def assert_refused_at_handshake(broker: Broker, sessions: list[Session], tls: Tls) -> None:
    """The client certificate ``tls`` gets no CONNACK: the broker's TLS verify failed."""
    session = Session(broker.tls_port, tls=tls)
    sessions.append(session)
    assert session.connect_rc != 0 or session.closed.wait(10)
    assert session.connack == []
    wait_until(
        lambda: "certificate verify failed" in broker.server.log_path.read_text(),
        what="the broker's verify failure in its log",
    )


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(
    broker: Broker, provisioned: Provisioned, sessions: list[Session], tmp_path: Path
) -> None:
    other, _ = CertificateAuthority.load_or_create(tmp_path / "other-ca")
    cert, key = tmp_path / "probe-1.crt", tmp_path / "probe-1.key"
    other.issue(cert, key, "probe-1")
    assert_refused_at_handshake(broker, sessions, Tls(provisioned.out / "ca" / "ca.crt", cert, key))


def test_certificates_name_their_users_and_chain_to_the_ca(provisioned: Provisioned) -> None:
    out = provisioned.out
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    server.verify_directly_issued_by(ca)
    for device in DEVICES:
        cert = x509.load_pem_x509_certificate((out / "certs" / f"{device}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert [attribute.value for attribute in cn] == [device]
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert dt.timedelta(days=729) < lifetime < dt.timedelta(days=731)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > dt.timedelta(days=3649)


def test_rerunning_keeps_everything_and_rotate_replaces_one_device(tmp_path: Path) -> None:
    registry, out = write_registry(tmp_path), tmp_path / "out"
    assert provision_cli(registry, "--out", out, "--certs").returncode == 0
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    again = provision_cli(registry, "--out", out, "--certs")
    assert again.returncode == 0, again.stderr
    assert {line.split()[0] for line in again.stdout.splitlines()} == {"kept"}
    assert {path: path.read_bytes() for path in before} == before

    rotated = provision_cli(registry, "--out", out, "--certs", "--rotate", "probe-1")
    assert rotated.returncode == 0, rotated.stderr
    changed = {path for path, data in before.items() if path.read_bytes() != data}
    probe = {out / "secrets" / "probe-1.secret", out / "certs" / "probe-1.crt"}
    assert changed == probe | {
        out / "certs" / "probe-1.key",
        out / "passwords",
        out / "ca" / "crl.pem",
    }
    old_cert = x509.load_pem_x509_certificate(before[out / "certs" / "probe-1.crt"])
    assert [entry.serial_number for entry in crl(out)] == [old_cert.serial_number]
    assert f"rotated  {out / 'secrets' / 'probe-1.secret'}" in rotated.stdout.splitlines()
    old_lines = before[out / "passwords"].decode().splitlines()
    new_lines = (out / "passwords").read_text().splitlines()
    assert [line for line in new_lines if line not in old_lines] == [new_lines[-1]]
    assert password_matches(new_lines[-1], secret(out, "probe-1"))
    assert secret(out, "probe-1") not in rotated.stdout + rotated.stderr


def crl(out: Path) -> x509.CertificateRevocationList:
    """The CA's revocation list, checked to be signed by the CA."""
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    listed = x509.load_pem_x509_crl((out / "ca" / "crl.pem").read_bytes())
    assert listed.is_signature_valid(ca.public_key())
    return listed


def test_a_rotated_certificate_is_refused_by_the_restarted_broker(
    tmp_path: Path, sessions: list[Session]
) -> None:
    """A lost box's certificate: ``--rotate`` revokes it, and the listener's CRL refuses
    it at the handshake, while the new certificate connects as the device."""
    registry, out = write_registry(tmp_path), tmp_path / "out"
    assert provision_cli(registry, "--out", out, "--certs").returncode == 0
    assert len(list(crl(out))) == 0
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for name in ("probe-1.crt", "probe-1.key"):
        shutil.copy(out / "certs" / name, stolen / name)
    tls = Tls(out / "ca" / "ca.crt", stolen / "probe-1.crt", stolen / "probe-1.key")
    with broker_on(out, tmp_path / "before") as broker:  # the certificate works until then
        sessions.append(Session(broker.tls_port, tls=tls).connected())
    rotated = provision_cli(registry, "--out", out, "--certs", "--rotate", "probe-1")
    assert rotated.returncode == 0, rotated.stderr
    assert f"updated  {out / 'ca' / 'crl.pem'}" in rotated.stdout.splitlines()
    with broker_on(out, tmp_path / "after") as broker:
        assert_refused_at_handshake(broker, sessions, tls)
        new = Session(broker.tls_port, tls=device_tls(out, "probe-1")).connected()
        sessions.append(new)
        assert new.publish_reason(f"postedge/v1/{TOWN}/probe-1/telemetry") < 128


def test_a_damaged_revocation_list_is_an_error_not_a_new_list(tmp_path: Path) -> None:
    registry, out = write_registry(tmp_path), tmp_path / "out"
    assert provision_cli(registry, "--out", out, "--certs", "--rotate", "probe-1").returncode == 0
    (out / "ca" / "crl.pem").write_text("not a list\n")
    result = provision_cli(registry, "--out", out, "--certs", "--rotate", "locker-1")
    assert result.returncode == 1
    assert f"the revocation list {out / 'ca' / 'crl.pem'} is unreadable" in result.stderr
    assert (out / "ca" / "crl.pem").read_text() == "not a list\n"


def test_a_removed_device_loses_its_password_and_acl(tmp_path: Path) -> None:
    registry, out = write_registry(tmp_path), tmp_path / "out"
    assert provision_cli(registry, "--out", out).returncode == 0
    registry.write_text(REGISTRY.split('[[devices]]\nid = "probe-1"')[0])
    result = provision_cli(registry, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"updated  {out / 'passwords'}" in result.stdout.splitlines()
    assert "probe-1" not in (out / "passwords").read_text()
    assert "probe-1" not in (out / "acl").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rotate", "ghost"], "--rotate names ghost: not a device of the registry"),
        (["--gateway-user", "probe-1"], "--gateway-user 'probe-1' is also a device id"),
        (["--gateway-user", "gate way"], "--gateway-user must match"),
        (["--gateway-password-file", "/nonexistent/pw"], "--gateway-password-file /nonexistent"),
        (["--certs", "--server-name", "bad name"], "--server-name: 'bad name' is neither"),
    ],
)
def test_bad_options_are_configuration_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = provision_cli(write_registry(tmp_path), "--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_an_invalid_registry_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    registry = write_registry(tmp_path, REGISTRY.replace('role = "probe"', 'role = "kettle"'))
    result = provision_cli(registry, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert f"{registry}: devices.2.role: Input should be" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_ca_without_its_key_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    CertificateAuthority.load_or_create(ca_dir)
    (ca_dir / "ca.key").unlink()
    result = provision_cli(write_registry(tmp_path), "--out", tmp_path / "out", "--certs",
                           "--ca-dir", ca_dir)  # fmt: skip
    assert result.returncode == 1
    assert f"the CA in {ca_dir} is incomplete" in result.stderr
    assert not (ca_dir / "ca.key").exists()


def test_a_certificate_is_renewed_when_it_nears_expiry(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca, action = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert action == "created"
    cert, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    assert ca.issue(cert, key, "dev", now=now) == "created"
    assert ca.issue(cert, key, "dev", now=now) == "kept"
    assert ca.issue(cert, key, "other-name", now=now) == "renewed"
    later = now + dt.timedelta(days=730) - RENEW_BEFORE + dt.timedelta(days=1)
    assert ca.issue(cert, key, "other-name", now=later) == "renewed"
    assert ca.issue(cert, key, "other-name", now=later) == "kept"
    assert ca.issue(cert, key, "other-name", now=later, force=True) == "rotated"


def test_server_names_change_the_broker_certificate(tmp_path: Path) -> None:
    registry, out = write_registry(tmp_path), tmp_path / "out"
    assert provision_cli(registry, "--out", out, "--certs").returncode == 0
    result = provision_cli(
        registry, "--out", out, "--certs", "--server-name", "mqtt.example.org", "10.0.0.5"
    )
    assert f"renewed  {out / 'broker.crt'}" in result.stdout.splitlines()
    server = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


def test_password_matches_only_its_own_password() -> None:
    line = password_line("dev1", "right")
    assert password_matches(line, "right")
    assert not password_matches(line, "wrong")
    assert not password_matches("dev1:$6$garbage", "right")
    assert not password_matches("dev1:$7$101$!!$!!", "right")


def test_help_describes_provision(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["gateway", "provision", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for word in ["REGISTRY.toml", "--out", "--rotate", "--certs", "--ca-dir", "--server-name"]:
        assert word in text
