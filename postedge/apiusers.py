"""``postedge api users|tokens``: the supervisor API's accounts, from the command line.

The first admin has to come from somewhere: ``postedge api users add API.toml admin
--role admin --scope '*'`` (the password from ``--password-file``, the
``POSTEDGE_API_PASSWORD`` variable, or asked for). After that, admins can also manage
users through the API (``PUT /api/v1/users/{name}``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloud_api.auth import Accounts
    from gateway.ledger import Ledger

PASSWORD_VAR = "POSTEDGE_API_PASSWORD"  # noqa: S105 (a variable name)


ROLES = ("supervisor", "operator", "auditor", "admin")
"""As :data:`cloud_api.auth.ROLES` (a test checks), without importing the API to build
the command line."""


def add_accounts(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="add, change and list API users")
    sub_users = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub_users.add_parser("add", help="create or change a user")
    add.add_argument("config", type=Path, metavar="API.toml")
    add.add_argument("name", help="user name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--scope",
        action="append",
        required=True,
        help="'*', station:ID or division:PREFIX (repeatable)",
    )
    add.add_argument(
        "--password-file",
        type=Path,
        help=f"read the password from this file (else ${PASSWORD_VAR}, else asked)",
    )
    add.add_argument("--keep-password", action="store_true", help="change role/scopes only")
    add.add_argument("--disable", action="store_true", help="deactivate (revokes tokens)")
    add.set_defaults(func=_add_user)
    listing = sub_users.add_parser("list", help="every user with role and scopes")
    listing.add_argument("config", type=Path, metavar="API.toml")
    listing.set_defaults(func=_list_users)

    tokens = sub.add_parser("tokens", help="create and revoke API tokens")
    sub_tokens = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = sub_tokens.add_parser("create", help="a new API token (printed once)")
    create.add_argument("config", type=Path, metavar="API.toml")
    create.add_argument("name", help="the user the token acts as")
    create.add_argument("--label", required=True, help="what the token is for")
    create.add_argument("--days", type=int, help="expires after this many days (default never)")
    create.set_defaults(func=_create_token)
    revoke = sub_tokens.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("config", type=Path, metavar="API.toml")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=_revoke_token)


def _open(config_path: Path) -> tuple[Ledger, Accounts]:
    from cloud_api.auth import Accounts
    from cloud_api.config import load_api_config
    from gateway.ledger import Ledger

    config = load_api_config(config_path)
    ledger = Ledger(config.ledger.url)
    ledger.open()
    return ledger, Accounts(ledger, session_ttl=timedelta(hours=config.api.session_hours))


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        path: Path = args.password_file
        return path.read_text().strip()
    if os.environ.get(PASSWORD_VAR):
        return os.environ[PASSWORD_VAR]
    if not sys.stdin.isatty():
        raise SystemExit(f"postedge: give --password-file or ${PASSWORD_VAR} (no terminal)")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("postedge: the passwords differ")
    return first


def _add_user(args: argparse.Namespace) -> int:
    from cloud_api.auth import AuthError

    password = None if args.keep_password or args.disable else _password(args)
    ledger, accounts = _open(args.config)
    try:
        created = accounts.save_user(
            args.name,
            role=args.role,
            scopes=args.scope,
            password=password,
            active=not args.disable,
            now=datetime.now(UTC),
        )
    except (AuthError, ValueError) as exc:
        print(f"postedge: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    print(f"{'created' if created else 'changed'} user {args.name} ({args.role})")
    return 0


def _list_users(args: argparse.Namespace) -> int:
    ledger, _ = _open(args.config)
    try:
        with ledger.transaction(write=False) as tx:
            users = tx.users()
    finally:
        ledger.close()
    for user in users:
        state = "" if user.active else "  (disabled)"
        print(f"{user.name:<20} {user.role:<11} {' '.join(user.scopes)}{state}")
    return 0


def _create_token(args: argparse.Namespace) -> int:
    from cloud_api.auth import AuthError

    ledger, accounts = _open(args.config)
    try:
        ttl = timedelta(days=args.days) if args.days else None
        issued = accounts.issue(
            args.name, kind="api", label=args.label, now=datetime.now(UTC), ttl=ttl
        )
    except AuthError as exc:
        print(f"postedge: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    print(f"token {issued.row.id} for {args.name} (shown once, keep it safe):", file=sys.stderr)
    print(issued.token)
    return 0


def _revoke_token(args: argparse.Namespace) -> int:
    ledger, accounts = _open(args.config)
    try:
        done = accounts.revoke(args.id, datetime.now(UTC))
    finally:
        ledger.close()
    if not done:
        print(f"postedge: no live token {args.id}", file=sys.stderr)
        return 1
    print(f"revoked token {args.id}")
    return 0
