"""``nbo keys create|list|revoke``: the HTTP service's API keys, in the stores' database."""

from __future__ import annotations

import argparse
import logging
import sys

from ..store.keys import ROLES
from .arguments import add_database, positive_int

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def _database(args: argparse.Namespace):
    """The stores' database, its schema created if it is a new SQLite file."""
    from ..service import open_database

    database = open_database(args.state, args.database)
    database.ensure_schema()
    return database


def cmd_keys_create(args: argparse.Namespace) -> int:
    from ..store.keys import create_key

    database = _database(args)
    clear, key = create_key(database, args.role, args.name, args.expires_days)
    expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
    sys.stdout.write(f"API key: {clear}\nid: {key.id}  role: {key.role}  expires: {expires}\n")
    log.info("the key is shown only this once and stored hashed in %s; give it to the client "
             "now", database.name)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from ..store.keys import list_keys

    database = _database(args)
    keys = list_keys(database)
    if not keys:
        sys.stdout.write(f"no API keys in {database.name}\n")
        return 0
    sys.stdout.write(f"{'id':<12}{'role':<10}{'created':<27}{'expires':<27}name\n")
    for key in keys:
        expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
        sys.stdout.write(f"{key.id:<12}{key.role:<10}"
                         f"{key.created_at.isoformat(timespec='seconds'):<27}"
                         f"{expires:<27}{key.name}\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from ..store.keys import revoke_key

    key = revoke_key(_database(args), args.key_id)
    sys.stdout.write(f"revoked {key.id} (role {key.role})\n")
    return 0


def add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys of the HTTP service: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("create", help="a new key; printed once, stored hashed")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", default="", help="who or what uses it, e.g. 'branch 12 counter 3'")
    p.add_argument("--expires-days", type=positive_int, help="default: never expires")
    p.set_defaults(func=cmd_keys_create)
    p = keys_sub.add_parser("list", help="ids, roles, names and dates (never keys or hashes)")
    p.set_defaults(func=cmd_keys_list)
    p = keys_sub.add_parser("revoke", help="remove a key; a running service refuses it at once")
    p.add_argument("key_id", help="the key's id (k_...), as `nbo keys list` shows it")
    p.set_defaults(func=cmd_keys_revoke)
    for p in keys_sub.choices.values():
        add_database(p)
