"""``nbo db upgrade`` and ``nbo db current``: create or upgrade the stores' database schema
(and bring in the stores an older state folder kept in files of their own)."""

from __future__ import annotations

import argparse
import logging
import sys

from .arguments import add_database

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from ..service import open_database
    from ..store.legacy import import_legacy

    database = open_database(args.state, args.database, legacy_ok=True)
    try:
        before, after = database.upgrade()
        imported = import_legacy(database, args.state)
    finally:
        database.dispose()
    if before == after:
        sys.stdout.write(f"{database.name} is at schema {after}: nothing to do\n")
    else:
        sys.stdout.write(f"{database.name} upgraded from {before or 'no schema'} to {after}\n")
    if imported:
        done = ", ".join(f"{n:,} {what}" for what, n in imported.items())
        sys.stdout.write(f"imported the older stores of {args.state} ({done}); their files "
                         "are kept as *.imported\n")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from ..service import open_database
    from ..store.database import head_revision

    database = open_database(args.state, args.database)
    try:
        found = database.revision()
    finally:
        database.dispose()
    head = head_revision()
    state = "current" if found == head else "needs `nbo db upgrade`"
    sys.stdout.write(f"{database.name}: schema {found or 'none'}, this code's {head} ({state})\n")
    return 0 if found == head else 1


def add_db(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="the stores' database: create or upgrade its schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser("upgrade", help="create the schema, or upgrade it to this code's; "
                          "safe to run on several machines at once")
    p.set_defaults(func=cmd_db_upgrade)
    p = db_sub.add_parser("current", help="the schema the database is at; exit 1 if older")
    p.set_defaults(func=cmd_db_current)
    for p in db_sub.choices.values():
        add_database(p)
