"""`imgsearch aws ...`: argparse subcommands; errors reach the user as one sentence."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    WaiterError,
)

from config import Settings

from .bucket import ensure_bucket
from .clients import make_context
from .deploy import Waiting, deploy, update
from .destroy import destroy
from .docker import DockerCli
from .ecr import build_and_push, ensure_repository, find_context
from .errors import AwsError
from .instances import probe_health
from .names import IMAGES_PREFIX
from .plan import Plan
from .status import status

Handler = Callable[[argparse.Namespace, Settings], int]


def _with_tag(settings: Settings, args: argparse.Namespace) -> Settings:
    """Settings with `--tag` applied over IMGSEARCH_AWS__IMAGE_TAG."""
    tag = getattr(args, "tag", None)
    if not tag:
        return settings
    return settings.model_copy(update={"aws": settings.aws.model_copy(update={"image_tag": tag})})


def _bucket(args: argparse.Namespace, settings: Settings) -> int:
    ctx = make_context(settings)
    plan = Plan("imgsearch aws bucket", dry_run=args.dry_run)
    name = ensure_bucket(ctx, settings.aws.bucket_versioning, plan, settings.aws.noncurrent_days)
    plan.note(f"images go to s3://{name}/{IMAGES_PREFIX}")
    return 0


def _ecr(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_tag(settings, args)
    ctx = make_context(settings)
    context = find_context(args.context)
    plan = Plan("imgsearch aws ecr", dry_run=args.dry_run)
    uri = ensure_repository(ctx, settings.aws.keep_images, plan)
    image = build_and_push(
        ctx, DockerCli(), uri, settings.aws.image_tag, context, args.torch_variant, plan
    )
    if not args.dry_run:
        plan.note(f"pushed {image}")
    return 0


def _deploy(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_tag(settings, args)
    ctx = make_context(settings)
    plan = Plan("imgsearch aws deploy", dry_run=args.dry_run)
    url = deploy(ctx, settings, plan, Waiting(wait=not args.no_wait))
    if url:
        print(url)
    return 0


def _update(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_tag(settings, args)
    ctx = make_context(settings)
    plan = Plan("imgsearch aws update", dry_run=args.dry_run)
    update(ctx, settings, plan, Waiting(wait=not args.no_wait))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    ctx = make_context(settings)
    status(ctx, settings, sys.stdout, None if args.no_probe else probe_health)
    return 0


def _destroy(args: argparse.Namespace, settings: Settings) -> int:
    ctx = make_context(settings)
    snapshot = bool(args.snapshot)
    if not args.yes and not args.dry_run:
        extra = "".join(
            [
                ", the data volume (index and state)" if args.delete_data else "",
                " and the bucket with its images" if args.delete_bucket else "",
            ]
        )
        question = (
            f"Delete imgsearch deployment {ctx.names.deployment!r} in {ctx.region} "
            f"(instance, security group, IAM role{extra})? [y/N] "
        )
        if not sys.stdin.isatty():
            raise AwsError("destroy needs confirmation: run it in a terminal or pass --yes.")
        if input(question).strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
        if args.delete_data and not snapshot:
            offer = "Snapshot the data volume first, so it can be restored? [y/N] "
            snapshot = input(offer).strip().lower() in ("y", "yes")
    plan = Plan("imgsearch aws destroy", dry_run=args.dry_run)
    destroy(
        ctx,
        plan,
        args.delete_bucket,
        args.delete_repository,
        delete_data=args.delete_data,
        snapshot=snapshot,
    )
    return 0


def _one_sentence(error: Exception) -> str:
    """The sentence a user sees for an error the commands can raise."""
    if isinstance(error, AwsError):
        return str(error)
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or run `aws configure`."
        )
    if isinstance(error, NoRegionError):
        return "no AWS region is set: set IMGSEARCH_AWS__REGION or AWS_REGION (e.g. us-east-1)."
    if isinstance(error, EndpointConnectionError):
        return f"cannot reach AWS at {error.kwargs.get('endpoint_url', '?')}: check the network."
    if isinstance(error, WaiterError):
        return f"gave up waiting: {error.last_response.get('Error', {}).get('Message', error)}."
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return (
            f"AWS refused {error.operation_name}: {info.get('Message', '').rstrip('.')} "
            f"({info.get('Code', '?')})."
        )
    raise error


def _guard(handler: Handler) -> Handler:
    """Turn the errors users can act on into one line on stderr and exit code 1."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except (
            AwsError,
            NoCredentialsError,
            PartialCredentialsError,
            NoRegionError,
            EndpointConnectionError,
            WaiterError,
            ClientError,
        ) as error:
            print(f"error: {_one_sentence(error)}", file=sys.stderr)
            return 1

    run.__doc__ = handler.__doc__
    return run


def register(subparsers: Any) -> None:
    """Add `aws` with bucket / ecr / deploy / update / status / destroy to the imgsearch CLI."""
    aws = subparsers.add_parser(
        "aws", help="run imgsearch on your AWS account (S3, ECR, EC2)", description=__doc__
    )
    sub = aws.add_subparsers(dest="aws_command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="print the plan and change nothing"
        )
        parser.set_defaults(handler=_guard(handler))
        return parser

    command("bucket", "create the private, encrypted S3 bucket for images", _bucket)

    ecr = command("ecr", "create the ECR repository, build the image and push it", _ecr)
    ecr.add_argument("--tag", help="image tag (default: IMGSEARCH_AWS__IMAGE_TAG)")
    ecr.add_argument("--context", type=Path, help="build context (default: this checkout)")
    ecr.add_argument(
        "--torch-variant",
        default="cpu",
        help="PyTorch wheel index: cpu (default) or a CUDA one such as cu128",
    )

    dep = command("deploy", "start the instance running the image (idempotent)", _deploy)
    dep.add_argument("--tag", help="image tag (default: IMGSEARCH_AWS__IMAGE_TAG)")
    dep.add_argument("--no-wait", action="store_true", help="do not wait for the app to answer")

    upd = command("update", "roll the instance to another image tag", _update)
    upd.add_argument("--tag", help="image tag (default: IMGSEARCH_AWS__IMAGE_TAG)")
    upd.add_argument("--no-wait", action="store_true", help="do not wait for the restart")

    st = command("status", "show what is deployed and whether the app answers", _status)
    st.add_argument("--no-probe", action="store_true", help="do not call the app's health URL")

    de = command("destroy", "remove what deploy made (found by tag)", _destroy)
    de.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    de.add_argument(
        "--delete-data",
        action="store_true",
        help="also delete the data volume (Qdrant index, run state); kept by default",
    )
    de.add_argument(
        "--snapshot", action="store_true", help="snapshot the data volume before anything else"
    )
    de.add_argument(
        "--delete-bucket", action="store_true", help="also delete the bucket and its images"
    )
    de.add_argument(
        "--delete-repository", action="store_true", help="also delete the ECR repository"
    )
