"""``python -m service.keys``: create, list and revoke API keys.

::

    python -m service.keys create ci-bot --scope read --scope train   # prints the key
    python -m service.keys list
    python -m service.keys revoke KEY_ID

``create`` prints the secret alone on stdout (``KEY=$(python -m service.keys create …)``); it is
shown once and only its SHA-256 is stored. Everything else goes to stderr. The database must be
at head (``python -m service.migrate``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import select

from jobs.records import ApiKey, RecordNotFound, Scope, make_engine, make_sessionmaker
from jobs.records import repository as records
from jobs.records.db import session_scope
from jobs.settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.keys", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        required=True,
        help="a scope to grant; repeat for several (admin grants all)",
    )
    commands.add_parser("list", help="list keys (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)

    engine = make_engine(get_settings().db_url)
    sessions = make_sessionmaker(engine)
    try:
        if args.command == "create":
            with session_scope(sessions) as session:
                key, secret = records.create_api_key(session, args.name, args.scope)
            print(
                f"created key {key.id} ({key.name}) with scopes {', '.join(key.scopes)}",
                file=sys.stderr,
            )
            print(secret)
        elif args.command == "list":
            with sessions() as session:
                for key in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
                    state = "revoked" if key.revoked_at else "active"
                    print(
                        f"{key.id}  {key.prefix}…  {state:7}  {','.join(key.scopes):20}  {key.name}"
                    )
        else:
            try:
                with session_scope(sessions) as session:
                    records.revoke_api_key(session, args.key_id)
            except RecordNotFound:
                print(f"no key with id {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked key {args.key_id}", file=sys.stderr)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
