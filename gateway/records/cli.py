"""``gateway calls``: read the call records the control process wrote.

``list`` prints a table (newest first), ``show ID`` one record's JSON document, ``export``
every record (or those the filters keep) as JSON lines or CSV. The database is the one the
configuration names (``records.database``), opened read-only: a reader never migrates it nor
marks calls ``unknown``, so it is safe beside a running gateway. Exit status 1 with a message
when there is no database yet, it cannot be read, or the id is unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
from collections.abc import Coroutine, Mapping
from typing import IO, Any, Final

from gateway.config import load_settings
from gateway.records.model import KINDS, STATES
from gateway.records.schema import COLUMNS
from gateway.records.store import Documents, RecordStore, RecordStoreError, open_store

__all__ = ["add_parser", "run"]

#: Rows per query when exporting.
EXPORT_PAGE: Final = 500
_TABLE: Final = (("offered (UTC)", 20), ("call_id", 14), ("kind", 7), ("state", 7),
                 ("outcome", 10), ("secs", 6), ("route", 12), ("agent", 12), ("from", 14),
                 ("to", 14), ("end_reason", 40))


def add_parser(sub: Any) -> None:
    """Add ``calls`` and its actions to the ``gateway`` sub-command parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="YAML configuration file naming the database "
                        "(records.database; default: as for `gateway run`)")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--kind", choices=KINDS, help="only calls of this kind")
    filters.add_argument("--state", choices=STATES, help="only calls in this state")
    filters.add_argument("--route", help="only calls of this dialplan route")
    calls = sub.add_parser(
        "calls", help="call records: list, show, export",
        description="Read the call records the control process writes to records.database "
        "(an SQLite file or PostgreSQL). Opened read-only: safe beside a running gateway.")
    actions = calls.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
    lst = actions.add_parser("list", parents=[common, filters], help="a table of calls, "
                             "newest first", description="Print a table of calls, newest "
                             "first (times in UTC).")
    lst.add_argument("--limit", type=_positive, default=50, metavar="N",
                     help="at most N calls (default 50)")
    show = actions.add_parser("show", parents=[common], help="one call's whole record (JSON)",
                              description="Print one call's record as indented JSON: its "
                              "columns, the agent's activity, the worker's side (sip) and the "
                              "webhook's side (sideband). With several records under one id "
                              "(ids repeat after a restart), the newest.")
    show.add_argument("call_id", metavar="ID", help="a call id, as `gateway calls list` shows")
    export = actions.add_parser("export", parents=[common, filters], help="every record as "
                                "JSON lines or CSV", description="Write records newest "
                                "first: jsonl (one whole record per line) or csv (the columns).")
    export.add_argument("--format", choices=("jsonl", "csv"), required=True,
                        help="jsonl: whole records; csv: the indexed columns")
    export.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE (created readable by its owner only; default: "
                        "standard output)")


def run(args: argparse.Namespace) -> int:
    """Run ``gateway calls ACTION``; returns the exit status."""
    settings = load_settings(args.config, _reading_env(os.environ))
    store = open_store(settings, readonly=True)
    try:
        if args.calls_command == "list":
            return _sync(_list(store, args, sys.stdout))
        if args.calls_command == "show":
            return _sync(_show(store, args.call_id, sys.stdout))
        if args.output is None:
            return _sync(_export(store, args, sys.stdout))
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            return _sync(_export(store, args, out))
    except RecordStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1


def _sync(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


async def _list(store: RecordStore, args: argparse.Namespace, out: IO[str]) -> int:
    try:
        await store.open()
        rows = await store.list(limit=args.limit, kind=args.kind, state=args.state,
                                route=args.route)
    finally:
        await store.close()
    out.write(_line([name for name, _ in _TABLE]))
    for row in rows:
        out.write(_line(_cells(row)))
    if not rows:
        print("(no calls)", file=sys.stderr)
    return 0


async def _show(store: RecordStore, call_id: str, out: IO[str]) -> int:
    try:
        await store.open()
        document = await store.get(call_id)
    finally:
        await store.close()
    if document is None:
        print(f"error: no call record with id {call_id!r}", file=sys.stderr)
        return 1
    out.write(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return 0


async def _export(store: RecordStore, args: argparse.Namespace, out: IO[str]) -> int:
    writer = None
    try:
        await store.open()
        if args.format == "csv":
            writer = csv.writer(out)
            writer.writerow(["id", "instance", *COLUMNS])
        before = None
        while True:
            page: Documents = await store.list(limit=EXPORT_PAGE, before=before,
                                               kind=args.kind, state=args.state,
                                               route=args.route, documents=args.format == "jsonl")
            for item in page:
                if writer is None:
                    out.write(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n")
                else:
                    writer.writerow(["" if item.get(c) is None else item[c]
                                     for c in ("id", "instance", *COLUMNS)])
            if len(page) < EXPORT_PAGE:
                break
            before = (float(page[-1]["offered_at"]), int(page[-1]["id"]))
    finally:
        await store.close()
    return 0


def _cells(row: dict[str, Any]) -> list[str]:
    offered = row.get("offered_at")
    ended = row.get("ended_at")
    answered = row.get("answered_at")
    secs = "" if ended is None or answered is None else f"{max(0.0, ended - answered):.0f}"
    return [
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(offered)) if offered else "",
        *(str(row.get(k) or "") for k in ("call_id", "kind", "state", "outcome")), secs,
        *(str(row.get(k) or "") for k in ("route", "agent", "from_user", "to_user",
                                          "end_reason")),
    ]


def _line(cells: list[str]) -> str:
    parts = []
    for (_, width), cell in zip(_TABLE, cells, strict=True):
        text = " ".join(cell.split())
        parts.append(text if len(text) <= width else text[:width - 1] + "…")
    last = len(parts) - 1
    return "  ".join(p if i == last else p.ljust(w) for i, (p, (_, w))
                     in enumerate(zip(parts, _TABLE, strict=True))).rstrip() + "\n"


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _reading_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for reading records.

    Secrets the calls need but reading does not (the Realtime API key, the webhook secret)
    may be missing here, so they are stood in for; nothing is sent anywhere with them.
    """
    return {"OPENAI_API_KEY": "unused-by-gateway-calls",
            "OPENAI_WEBHOOK_SECRET": "whsec_dW51c2VkLWJ5LWdhdGV3YXktY2FsbHM=", **env}
