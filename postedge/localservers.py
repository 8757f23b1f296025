"""Private Mosquitto and InfluxDB servers on free loopback ports.

Used by ``postedge demo``, the test fixtures and the benchmarks. Each server lives in its
own directory, is started as a child process and is waited for by a readiness probe
(a TCP connect for Mosquitto, ``/ping`` for InfluxDB), never by a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway.mosquitto import AclRule, acl_text, device_acl, password_line

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")


class ServerError(RuntimeError):
    """A local server could not be found or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, debian_package: str, given: str | None = None) -> str:
    """The executable ``given``, or ``name`` on PATH or in the sbin directories (not on a
    normal user's PATH, where Debian installs daemons); else a :class:`ServerError`."""
    if given is not None:
        found = shutil.which(given)
        where = f" at {given}"
    else:
        found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
        where = ""
    if found is None:
        raise ServerError(
            f"{name} was not found{where}. Install it with: apt-get install -y {debian_package} "
            "(as root; 'make demo' and 'make test' do this for you when run as root)"
        )
    return found


class _Child:
    """A server process with a log file, stopped by SIGTERM or SIGKILL."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once its readiness probe answers."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        stdout = (self.workdir / f"{self.name}.stdout").open("ab")
        with stdout:
            self.process = subprocess.Popen(
                self._command(),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not self._ready():
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.process.returncode}: {self._tail()}"
                )
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise ServerError(
                    f"{self.name} was not ready after {timeout:.0f} s: {self._tail()}"
                )
            time.sleep(delay)  # polling interval of the readiness probe, not a synchronisation
            delay = min(delay * 2, 0.1)

    def _prepare(self) -> None:
        """Write configuration files before the process starts."""

    def _tail(self) -> str:
        texts = []
        for path in (self.log_path, self.workdir / f"{self.name}.stdout"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(texts).strip() or "(no output)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop with SIGTERM (or SIGKILL with ``kill=True``) and wait for the process to end."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()


class Mosquitto(_Child):
    """A private Mosquitto 2 broker with password and ACL files.

    ``users`` maps usernames to passwords; ``acl`` gives per-user rules, and every device
    user is also confined by :func:`gateway.mosquitto.device_acl`'s patterns.
    """

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str],
        acl: Mapping[str, Iterable[AclRule]] | None = None,
        port: int | None = None,
        extra_conf: Iterable[str] = (),
        binary: str | None = None,
    ) -> None:
        super().__init__(workdir)
        self.binary = find_binary("mosquitto", "mosquitto", binary)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.users = dict(users)
        self.acl = {user: list(rules) for user, rules in (acl or {}).items()}
        self.extra_conf = list(extra_conf)

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.workdir / "mosquitto.conf")]

    def _prepare(self) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        passwords = "\n".join(password_line(user, pw) for user, pw in self.users.items()) + "\n"
        (self.workdir / "passwords").write_text(passwords)
        (self.workdir / "passwords").chmod(0o600)
        (self.workdir / "acl").write_text(acl_text(self.acl, patterns=device_acl()))
        conf = [
            # Started as root, Mosquitto drops to the 'mosquitto' user and then cannot write
            # its log or database in our directory; stay as whoever starts it.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}" if os.geteuid() == 0 else "",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.workdir / 'passwords'}",
            f"acl_file {self.workdir / 'acl'}",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 1",
            # The default of 1000 silently drops QoS 1 messages for a slow or offline
            # subscriber while the publisher still gets its PUBACK.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"listener {self.port} {self.host}",
            *self.extra_conf,
        ]
        (self.workdir / "mosquitto.conf").write_text(
            "\n".join(line for line in conf if line) + "\n"
        )

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False


class Influxd(_Child):
    """A private InfluxDB 1.x server (Debian's ``influxdb`` package).

    With ``auth=True`` HTTP authentication is enabled and, on the first start, the admin
    user ``admin_user``/``admin_password`` is created (InfluxDB 1.x lets the first admin
    be created without credentials); :meth:`query` then authenticates as that admin.
    """

    name = "influxd"
    admin_user = "admin"

    def __init__(self, workdir: Path, *, port: int | None = None, auth: bool = False) -> None:
        super().__init__(workdir)
        self.binary = find_binary("influxd", "influxdb")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.auth = auth
        self.admin_password = secrets.token_hex(16)
        self._admin_created = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.workdir / "influxdb.conf")]

    def _prepare(self) -> None:
        root = self.workdir
        conf = f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  auth-enabled = {"true" if self.auth else "false"}
[logging]
  level = "warn"
"""
        (root / "influxdb.conf").write_text(conf)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as response:  # noqa: S310
                return bool(response.status == 204)
        except (urllib.error.URLError, OSError):
            return False

    def query(self, q: str, *, db: str | None = None) -> dict[str, object]:
        """Run an InfluxQL statement over ``POST /query`` and return the decoded JSON."""
        import json

        params = {"q": q, "epoch": "ms"}
        if db:
            params["db"] = db
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            f"{self.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        if self.auth and self._admin_created:
            import base64

            token = base64.b64encode(f"{self.admin_user}:{self.admin_password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            result: dict[str, object] = json.load(response)
        return result

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def start(self, timeout: float = 15.0) -> None:
        """Start the server; with ``auth`` create the admin user on the first start."""
        super().start(timeout)
        if self.auth and not self._admin_created:
            self.query(
                f"CREATE USER \"{self.admin_user}\" WITH PASSWORD '{self.admin_password}' "
                "WITH ALL PRIVILEGES"
            )
            self._admin_created = True
