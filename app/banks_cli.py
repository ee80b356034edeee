"""`imgsearch bank add|list|remove` and `imgsearch alerts`: banks of known pictures, and alerts."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from app.bank_bench import add_bench
from app.present import title_of
from app.runtime import Runtime
from config import Settings
from ingest.alerts import Alert
from search.banks import ENTRY_ID, Entry


def cmd_bank_add(args: argparse.Namespace, settings: Settings) -> int:
    """Bank each picture (a file, or a catalog id), then match it against the catalog."""
    with Runtime(settings) as runtime:
        for image in args.images:
            data, name = _picture(runtime, image)
            if data is None:
                print(f"Cannot read {image}: {name}.", file=sys.stderr)
                return 2
            added, alerts = runtime.alerts.bank(
                args.bank,
                data,
                note=args.note,
                link=args.link,
                added_by=args.by,
                file=name,
            )
            what = "added to" if added.new else "already banked; now also in"
            print(f"{added.entry.id}  {what} bank {args.bank}  {name}")
            for alert in alerts:
                print(f"    alert: {alert_line(alert)}")
        if settings.alerts.webhooks:
            print(f"webhooks: {runtime.alerts.deliver().summary()}")
    return 0


def _picture(runtime: Runtime, image: str) -> tuple[bytes | None, str]:
    """(bytes, file name) of a file, or of a catalog image's stored original; (None, why)."""
    path = Path(image)
    if path.is_file():
        try:
            return path.read_bytes(), path.name
        except OSError as exc:
            return None, str(exc.strerror or exc)
    if ENTRY_ID.match(image.strip().lower()):  # a catalog id (UnknownImage if it is not one)
        data, _ = runtime.catalog.image_bytes(image.strip().lower(), "original")
        record = runtime.catalog.record(image.strip().lower())
        return data, title_of(record.payload)
    return None, "no such file, and not a catalog id"


def cmd_bank_list(args: argparse.Namespace, settings: Settings) -> int:
    """The banks with their sizes, or one bank's entries."""
    with Runtime(settings) as runtime:
        if args.bank is None:
            names = runtime.banks.names()
            if args.json:
                for name, count in names:
                    print(json.dumps({"bank": name, "entries": count}))
            elif not names:
                print("No banks yet: `imgsearch bank add BANK IMAGE` makes one.")
            for name, count in [] if args.json else names:
                print(f"{name}  {count} entr{'y' if count == 1 else 'ies'}")
            return 0
        entries = runtime.banks.entries(args.bank)
    if not entries and not args.json:
        print(f"The bank {args.bank} holds nothing.")
    for entry in entries:
        print(json.dumps(entry.as_dict()) if args.json else entry_line(entry, args.bank))
    return 0


def entry_line(entry: Entry, bank: str) -> str:
    """ "ID  FILE  NOTE  LINK  (added by WHO at WHEN)"."""
    m = entry.membership(bank)
    if m is None:
        return entry.id
    said = "  ".join(x for x in (entry.payload.get("file") or "", m.note, m.link) if x)
    return f"{entry.id}  {said}  (added by {m.added_by or '?'} at {m.added_at})"


def cmd_bank_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Take an entry out of a bank."""
    with Runtime(settings) as runtime:
        entry = runtime.banks.remove(args.bank, args.entry, catalog=runtime.index)
    left = ", ".join(m.bank for m in entry.banks)
    print(f"removed {entry.id} from bank {args.bank}" + (f" (still in {left})" if left else ""))
    return 0


def alert_line(alert: Alert) -> str:
    """An alert in one line, with when it was found."""
    return f"#{alert.id} {alert.created_at} ({alert.found}) {alert.text()}"


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    """Alerts, most recent first (one JSON object per line with --json); --deliver sends the
    outbox's due deliveries first."""
    with Runtime(settings) as runtime:
        if args.deliver:
            print(f"webhooks: {runtime.alerts.deliver().summary()}", file=sys.stderr)
        alerts = runtime.alert_store.recent(args.limit, bank=args.bank)
    if not alerts and not args.json:
        print("No alerts yet.")
    for alert in alerts:
        print(json.dumps(alert.as_dict()) if args.json else alert_line(alert))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bank` and `alerts`."""
    bank = sub.add_parser("bank", help="banks of known pictures (debunked, verified...)")
    actions = bank.add_subparsers(dest="bank_command", required=True)
    p = actions.add_parser(
        "add",
        help="add pictures (files or catalog ids) to BANK, creating it if needed",
        description="Add pictures to a bank; each is matched against the catalog at once "
        "(an alert for every catalog image that is it).",
    )
    p.add_argument("bank", metavar="BANK")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or catalog ids")
    p.add_argument("--note", default="", help='what the desk found ("staged in 2019")')
    p.add_argument("--link", default="", help="the fact check's URL")
    p.add_argument("--by", default=_user(), help="who adds it (default: this user)")
    p.set_defaults(handler=cmd_bank_add)

    p = actions.add_parser("list", help="the banks, or one bank's entries")
    p.add_argument("bank", nargs="?", default=None, metavar="BANK")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_bank_list)

    p = actions.add_parser("remove", help="take an entry out of a bank")
    p.add_argument("bank", metavar="BANK")
    p.add_argument("entry", metavar="ENTRY", help="the entry's id (`bank list BANK`)")
    p.set_defaults(handler=cmd_bank_remove)
    add_bench(actions)

    p = sub.add_parser("alerts", help="banked pictures found in the catalog, most recent first")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--bank", default=None, help="only this bank's alerts")
    p.add_argument("--deliver", action="store_true", help="send due webhook deliveries first")
    p.set_defaults(handler=cmd_alerts)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return ""
