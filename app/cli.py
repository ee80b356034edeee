"""The `imgsearch` command line: ingest, search, serve, demo-data, runs, quarantine, catalog."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.errors import KNOWN, describe, outcome
from app.present import matches_text, title_of, verdict_line, verdict_text
from app.runtime import Runtime, configure_logging
from config import Settings, get_settings
from embed.decode import DecodeError
from ingest.items import Failed
from search.query import Filters, build_query, classify
from store.index import Strategy

log = logging.getLogger("imgsearch")
Handler = Callable[[argparse.Namespace, Settings], int]


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Ingest paths/URLs given, or the declared sources; bad items are reported, not fatal."""
    with Runtime(settings) as runtime:
        sources = (
            runtime.adhoc_sources(args.locations) if args.locations else runtime.declared_sources()
        )
        if not sources:
            print(
                "Nothing to ingest: give a folder, file, s3:// prefix or URL, or declare "
                "IMGSEARCH_SOURCES.",
                file=sys.stderr,
            )
            return 2

        def report_failure(failed: Failed) -> None:
            from tqdm import tqdm

            tqdm.write(f"failed  {failed.item.meta.source_uri}: {failed.reason}", file=sys.stderr)

        report = runtime.pipeline.run(
            sources, progress=sys.stderr.isatty() and not args.quiet, on_failure=report_failure
        )
    total = report.total()
    print(
        f"seen {total.seen}, new {total.new}, unchanged {total.unchanged}, "
        f"duplicate {total.duplicate}, failed {total.failed} "
        f"({report.duration_s:.1f} s, {report.images_per_s:.1f} images/s)"
    )
    for failure in report.failures:
        if failure.stage == "discover":
            print(
                f"source {failure.source} could not be read: {failure.reason}",
                file=sys.stderr,
            )
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    """Search with images, URLs, catalog ids or text: the verdict (one image), then matches."""
    try:
        positive = classify([*args.images, *args.positive], read_file=_read)
        negative = classify(args.negative, read_file=_read)
    except OSError as exc:
        print(f"Cannot read {exc.filename}: {exc.strerror or exc}.", file=sys.stderr)
        return 2
    query = build_query(
        positive=positive,
        negative=negative,
        text=args.text,
        filters=Filters(
            tuple(args.source), tuple(args.category), args.since, args.until, args.words
        ),
        top_k=args.top_k or settings.search.top_k,
        offset=args.offset,
        strategy=args.strategy,
        threshold=args.threshold if args.threshold is not None else settings.search.threshold,
    )
    with Runtime(settings) as runtime:
        result = runtime.search.search(query)
    if args.json:
        print(json.dumps([m.as_dict() for m in result.matches], indent=2))
        if result.has_verdict:
            print(verdict_line(result.verdict, result.changes), file=sys.stderr)
        return 0
    if result.has_verdict:
        _print(verdict_text(" ".join([*args.images, *args.positive]), result))
        _print(matches_text(result, with_ids=False))
    else:
        _print(matches_text(result, with_ids=True))
    return 0


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _print(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete catalog images by id: each point and its stored original and thumbnail."""
    with Runtime(settings) as runtime:
        for pid in args.ids:
            record = runtime.catalog.delete(pid)
            print(f"deleted {record.id}  {title_of(record.payload)}")
    return 0


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    """Add one image with its caption through the ingestion pipeline; prints its id."""
    from ingest.manual import ManualImage, add_image

    path = Path(args.image)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"Cannot read {path}: {exc.strerror or exc}.", file=sys.stderr)
        return 2
    image = ManualImage(
        data=data,
        title=args.title,
        description=args.description,
        source_uri=args.source_uri,
        published_at=args.published_at,
        category=args.category,
    )
    with Runtime(settings) as runtime:
        added = add_image(runtime.pipeline, image)
    note = "added" if added.new else "already in the catalog; this place was added to its timeline"
    print(f"{added.id}  {note}")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """The verdict for each image: same file, edited copy or not in the catalog, and where."""
    failed = 0
    with Runtime(settings) as runtime:
        for name in args.images:
            try:
                data = Path(name).read_bytes()
                result = runtime.search.search_bytes(
                    data, top_k=args.top_k or settings.search.top_k
                )
            except OSError as exc:
                failed += 1
                _check_error(name, f"Cannot read the file: {exc.strerror or exc}.", args.json)
                continue
            except DecodeError as exc:
                failed += 1
                _check_error(name, describe(exc), args.json)
                continue
            if args.json:
                sys.stdout.write(json.dumps(result.as_check(name)) + "\n")
                sys.stdout.flush()
            else:
                _print(verdict_text(name, result))
    return 1 if failed else 0


def _check_error(name: str, reason: str, as_json: bool) -> None:
    log.debug("check %s failed: %s", name, reason)
    if as_json:
        sys.stdout.write(json.dumps({"file": name, "error": reason}) + "\n")
        sys.stdout.flush()
    else:
        print(f"{name}: {reason}", file=sys.stderr)


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    """Compute missing or outdated descriptors of every catalog image from its stored original."""
    from tqdm import tqdm

    from ingest.reindex import backfill_metadata, reindex

    try:
        with (
            Runtime(settings, accept_relabel=args.rebuild) as runtime,
            tqdm(disable=not sys.stderr.isatty(), unit="img") as bar,
        ):
            report = reindex(
                runtime.index,
                runtime.images,
                runtime.descriptors,
                args.descriptor or args.rebuild or None,
                batch_size=settings.embed.batch_size,
                progress=bar.update,
            )
            claims = backfill_metadata(
                runtime.index, runtime.images, runtime.metadata, progress=bar.update
            )
    except ValueError as exc:
        print(f"{exc}.", file=sys.stderr)
        return 2
    print(f"reindex: {report.summary()}")
    if claims.checked:
        print(f"metadata: {claims.summary()}")
        report.failed.extend(claims.failed)
    for failure in report.failed[:20]:
        print(f"failed  {failure['id']}: {failure['reason']}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the page and the HTTP API (/api) on one port, and the daily schedule if it is here."""
    from app.server import serve  # Streamlit loads only for this command

    serve(settings, serve_flags(args, settings))
    return 0


def serve_flags(args: argparse.Namespace, settings: Settings) -> dict[str, object]:
    """Streamlit's options for `imgsearch serve`."""
    return {
        "server_port": args.port or settings.app.port,
        "server_address": args.address or settings.app.address,
        "server_headless": True,
        "browser_gatherUsageStats": False,
        "server_fileWatcherType": "none",
        "server_maxUploadSize": settings.app.max_upload_mb,
        # Visitors see the app's one-sentence messages, never a traceback; no "Deploy" menu.
        "client_showErrorDetails": "none",
        "client_toolbarMode": "minimal",
    }


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    """Write the demo catalog (photographs, several sources, uploads to try) or a plain set."""
    from app.demo import DemoUnavailable, write_demo_catalog, write_drawings, write_sample_photos

    directory = Path(args.directory)
    if args.drawings:
        count = write_drawings(directory, per_group=args.per_group)
        print(f"wrote {count} drawings in labelled groups, with sidecar metadata, to {directory}")
        return 0
    try:
        if args.photos:
            count = write_sample_photos(directory)
            print(f"wrote {count} sample photographs to {directory}")
            return 0
        demo = write_demo_catalog(directory)
    except DemoUnavailable as exc:
        print(f"Cannot write the demo photographs: {exc}.", file=sys.stderr)
        return 2
    print(
        f"wrote {demo.files} demo files ({demo.images} distinct images) to {demo.catalog}; "
        f'ingest them with IMGSEARCH_SOURCES="$(cat {demo.sources})" imgsearch ingest'
    )
    print(
        "upload these on the Search page to see a verdict, what changed and a timeline: "
        f"{demo.try_these[0].parent}/ ({', '.join(path.name for path in demo.try_these)})"
    )
    return 0


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    """List recent ingestion runs."""
    with Runtime(settings) as runtime:
        runs = runtime.state.runs(args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        print("No ingestion runs yet.")
    for run in runs:
        t = run.report.total()
        print(
            f"#{run.id} {run.started_at} {run.status:<11} seen {t.seen} "
            f"new {t.new} unchanged {t.unchanged} "
            f"duplicate {t.duplicate} failed {t.failed} "
            f"{run.report.duration_s:.1f} s"
        )
    return 0


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    """List quarantined items; --retry makes them due and runs their sources now."""
    with Runtime(settings) as runtime:
        if args.retry:
            entries = runtime.state.quarantine_list(args.source)
            released = runtime.state.release(args.source)
            names = sorted({e.source for e in entries})
            declared = {s.name: s for s in settings.sources}
            from ingest.sources import adhoc_source, make_source

            sources = [
                make_source(declared.get(name) or adhoc_source(name), settings) for name in names
            ]
            print(f"released {released} item(s); retrying {len(sources)} source(s)")
            if sources:
                report = runtime.pipeline.run(sources)
                print(report.summary())
            return 0
        entries = runtime.state.quarantine_list(args.source)
    if args.json:
        print(json.dumps([e.__dict__ for e in entries], indent=2))
        return 0
    if not entries:
        print("The quarantine is empty.")
    for e in entries:
        print(
            f"{e.source}  {e.uri}\n    {e.stage}: {e.reason} (attempts {e.attempts}, "
            f"first {e.first_seen}, last {e.last_seen}, next {e.next_attempt})"
        )
    return 0


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """Stream the whole catalog as JSON lines (id, payload)."""
    with Runtime(settings) as runtime:
        for hit in runtime.index.scroll():
            sys.stdout.write(json.dumps({"id": hit.id, "payload": hit.payload}) + "\n")
    return 0


def cmd_count(args: argparse.Namespace, settings: Settings) -> int:
    """Print the number of images in the catalog."""
    with Runtime(settings) as runtime:
        print(runtime.index.count())
    return 0


def add_query_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`search` and `check`: the questions a person asks of the catalog."""
    p = sub.add_parser(
        "search",
        help="find catalog images like these images, URLs, ids or words",
        description="Search the catalog. One image gives the copy verdict too; several "
        "examples (and --negative ones) use Qdrant's recommend API.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or image URLs")
    p.add_argument(
        "--positive", action="append", default=[], help="more like this: a file, URL or id"
    )
    p.add_argument(
        "--negative", action="append", default=[], help="not like this: a file, URL or id"
    )
    p.add_argument("--text", default=None, help="words describing the picture (needs CLIP)")
    p.add_argument("--source", action="append", default=[], help="only this source (repeatable)")
    p.add_argument(
        "--category", action="append", default=[], help="only this category (repeatable)"
    )
    p.add_argument("--since", default=None, help="published on or after this date (ISO 8601)")
    p.add_argument("--until", default=None, help="published on or before this date (ISO 8601)")
    p.add_argument("--words", default=None, help="every one of these words in the title")
    p.add_argument(
        "--strategy", choices=[s.value for s in Strategy], default=Strategy.AVERAGE_VECTOR.value
    )
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser(
        "check", help="is IMAGE in the catalog (same file or edited copy), and where was it first"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=0, help="similar images listed with --json")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.set_defaults(handler=cmd_check)


def add_catalog_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """What changes the catalog or reads it whole: ingest, add, delete, reindex, catalog, count."""
    p = sub.add_parser("ingest", help="ingest folders, files, s3:// prefixes or feed URLs")
    p.add_argument("locations", nargs="*", help="paths or URLs (default: declared sources)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("delete", help="delete catalog images by id (point, original, thumbnail)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser("add", help="add one image with its caption (same pipeline as ingest)")
    p.add_argument("image")
    p.add_argument("--title", default=None)
    p.add_argument("--description", default=None)
    p.add_argument("--source-uri", default=None, help="where it was published")
    p.add_argument("--published-at", default=None, help="publication date (ISO 8601)")
    p.add_argument("--category", default=None)
    p.set_defaults(handler=cmd_add)

    p = sub.add_parser(
        "reindex",
        help="compute missing descriptors (and unread metadata) of catalog images from their "
        "originals",
    )
    p.add_argument(
        "--descriptor", action="append", default=[], help="only this descriptor (repeatable)"
    )
    p.add_argument(
        "--rebuild",
        action="append",
        default=[],
        help="recompute this descriptor with the configured model (after changing the model)",
    )
    p.set_defaults(handler=cmd_reindex)

    p = sub.add_parser("catalog", help="export the catalog as JSON lines")
    p.add_argument("--json", action="store_true", help="JSON lines (the only format)")
    p.set_defaults(handler=cmd_catalog)

    p = sub.add_parser("count", help="print the number of images in the catalog")
    p.set_defaults(handler=cmd_count)


def add_operation_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Running the product: serve, demo-data, runs, quarantine."""
    p = sub.add_parser("serve", help="run the web app")
    p.add_argument("--port", type=int, default=0, help="default IMGSEARCH_APP__PORT (8501)")
    p.add_argument("--address", default="", help="default IMGSEARCH_APP__ADDRESS (127.0.0.1)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("demo-data", help="write the demo catalog and uploads to DIRECTORY")
    p.add_argument("directory")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--photos", action="store_true", help="write scikit-image's bundled photographs instead"
    )
    kind.add_argument(
        "--drawings", action="store_true", help="write generated drawings in labelled groups"
    )
    p.add_argument("--per-group", type=int, default=40, help="drawings per group")
    p.set_defaults(handler=cmd_demo_data)

    p = sub.add_parser("runs", help="list recent ingestion runs")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("quarantine", help="list failed items; --retry tries them again now")
    p.add_argument("--source", default=None)
    p.add_argument("--retry", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_quarantine)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="imgsearch", description=__doc__)
    parser.add_argument("--log-level", help="override IMGSEARCH_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True)
    add_query_commands(sub)
    add_catalog_commands(sub)
    add_operation_commands(sub)
    # Subcommand groups that live with their feature.
    from app import banks_cli, bench, evaluate, fuzz, worker
    from aws import cli as aws_cli

    registers = (
        banks_cli.register,
        bench.register,
        evaluate.register,
        fuzz.register,
        worker.register,
        aws_cli.register,
    )
    for register in registers:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(args.log_level or settings.log_level)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KNOWN as exc:
        log.debug("command failed", exc_info=True)
        print(describe(exc), file=sys.stderr)
        row = outcome(exc)
        return row.exit_code if row else 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
