"""The API's composition root: a FastAPI app over the ledger and the telemetry store,
with the dashboard's files.

Routes (all under ``/api/v1`` need a token; see :mod:`cloud_api.auth` for roles):

- :mod:`.routes_access` — login, logout, me, users and tokens, the audit trail
- :mod:`.routes_stations` — stations and devices, probe temperature series
- :mod:`.routes_alerts` — alerts: filter, acknowledge, resolve
- :mod:`.routes_parcels` — parcel search and trace, the audited real-name reveal
- :mod:`.routes_commands` — commands to devices, audited
- :mod:`.routes_reports` — compliance reports (JSON, CSV, XLSX)
- :mod:`.routes_live` — alerts and station status as Server-Sent Events
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from cloud_api import problems
from cloud_api.auth import Accounts
from cloud_api.commands import CommandSender
from cloud_api.config import ApiConfig
from cloud_api.context import Services
from contracts.mqtt import software_version
from gateway.ledger import Ledger, LedgerError, LedgerUnavailable
from gateway.personal import Keyring, PersonalDataError
from gateway.telemetry import (
    InvalidQuery,
    StoreError,
    StoreUnavailable,
    TelemetryStore,
    open_store,
)

STATIC = Path(__file__).resolve().parent / "static"


def load_keyring(config: ApiConfig) -> Keyring | None:
    """The personal-data keys for the reveal, if the API has any (else reveal is 503)."""
    try:
        if config.ledger.keys_file is not None:
            return Keyring.from_file(config.ledger.keys_file)
        return Keyring.from_env()
    except PersonalDataError:
        if config.ledger.keys_file is not None:
            raise
        return None


def create_app(
    config: ApiConfig,
    store: TelemetryStore | None = None,
    *,
    ledger: Ledger | None = None,
    keyring: Keyring | None = None,
    poll_s: float = 1.0,
) -> FastAPI:
    """The API app. The ledger and store it makes from ``config`` are opened on start-up
    and closed on shutdown; a ledger or store passed in is the caller's to open and close.
    The command connection (if ``[broker]`` is set) starts and stops with the app."""
    owned_store, owned_ledger = store is None, ledger is None
    store = store if store is not None else open_store(config.store)
    ledger = ledger if ledger is not None else Ledger(config.ledger.url)
    keyring = keyring if keyring is not None else load_keyring(config)
    session_ttl = timedelta(hours=config.api.session_hours)
    services = Services(
        ledger=ledger,
        store=store,
        accounts=Accounts(ledger, session_ttl=session_ttl),
        tz=ZoneInfo(config.api.timezone),
        keyring=keyring,
        commands=CommandSender(config.broker) if config.broker is not None else None,
        session_ttl_s=session_ttl.total_seconds(),
        coldchain=config.coldchain,
        poll_s=poll_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned_ledger:
            ledger.open()
        if owned_store:
            store.open()
        if services.commands is not None:
            services.commands.start()
        try:
            yield
        finally:
            if services.commands is not None:
                services.commands.stop()
            if owned_store:
                store.close()
            if owned_ledger:
                ledger.close()

    app = FastAPI(
        title="postedge supervisor API",
        version=software_version(),
        description="Stations, devices, alerts, parcel traces, cold-chain temperature "
        "series, commands and compliance reports of postedge. Every /api/v1 route but "
        "/login needs a token (Authorization: Bearer, or the dashboard's session cookie).",
        lifespan=lifespan,
    )
    app.state.services = services
    problems.install(app)
    app.add_middleware(problems.BodyLimit, max_bytes=config.api.max_body_bytes)

    @app.exception_handler(StoreError)
    async def store_problem(request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, InvalidQuery):
            return problems.problem(422, "Invalid request", str(exc))
        status = 503 if isinstance(exc, StoreUnavailable) else 500
        return problems.problem(status, "Telemetry store unavailable", str(exc))

    @app.exception_handler(LedgerError)
    async def ledger_problem(request: Request, exc: LedgerError) -> JSONResponse:
        status = 503 if isinstance(exc, LedgerUnavailable) else 500
        return problems.problem(status, "Ledger unavailable", str(exc))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    from cloud_api import (
        routes_access,
        routes_alerts,
        routes_commands,
        routes_live,
        routes_parcels,
        routes_reports,
        routes_stations,
    )

    for module in (
        routes_access,
        routes_stations,
        routes_alerts,
        routes_parcels,
        routes_commands,
        routes_reports,
        routes_live,
    ):
        app.include_router(module.router)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
