"""`status`: what exists of the deployment, which image it runs, and whether the app answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from config import Settings

from .bucket import bucket_exists
from .clients import AwsContext
from .ecr import find_repository
from .iam import get_role
from .instances import app_url, find_instances, find_kept_volumes, tag_value
from .names import IMAGE_TAG_TAG
from .network import CLOSED_CIDR, check_cidr, find_security_group


def status(
    ctx: AwsContext, settings: Settings, out: TextIO, probe: Callable[[str], bool] | None
) -> bool:
    """Print one line per resource; True when an instance is running."""
    names = ctx.names
    aws = settings.aws

    def line(label: str, text: str) -> None:
        print(f"  {label:<12}{text}", file=out)

    print(
        f"imgsearch aws status ({names.deployment} in {ctx.region}, account {ctx.account_id})",
        file=out,
    )
    bucket_state = (
        "exists" if bucket_exists(ctx.client("s3"), names.bucket, ctx.account_id) else "missing"
    )
    line("bucket", f"{names.bucket}: {bucket_state}")
    ecr = ctx.client("ecr")
    repo = find_repository(ecr, names.repository)
    if repo is None:
        line("repository", f"{names.repository}: missing")
    else:
        images = ecr.describe_images(repositoryName=names.repository)["imageDetails"]
        tags = sorted({t for i in images for t in i.get("imageTags", [])})
        line("repository", f"{repo['repositoryUri']}: tags {', '.join(tags) or '(none)'}")
    role = get_role(ctx.client("iam"), names.role)
    line("iam role", f"{names.role}: {'exists' if role else 'missing'}")
    ec2 = ctx.client("ec2")
    group = find_security_group(ctx, ec2)
    if group is None:
        line("sec. group", f"{names.security_group}: missing")
    else:
        rules = [
            f"tcp {p.get('FromPort')} from {r['CidrIp']}"
            for p in group.get("IpPermissions", [])
            for r in p.get("IpRanges", [])
        ]
        line("sec. group", f"{group['GroupId']}: {', '.join(rules) or 'no inbound rules'}")
    for volume in find_kept_volumes(ctx, ec2):
        line("data", f"{volume['VolumeId']}: {volume['Size']} GB, detached (deploy reattaches it)")
    instances = find_instances(ctx, ec2)
    if not instances:
        line("instance", "none (run `imgsearch aws deploy`)")
        return False
    running = False
    for instance in instances:
        state = instance["State"]["Name"]
        running = running or state == "running"
        url = app_url(instance, aws.app_port)
        line(
            "instance",
            f"{instance['InstanceId']}: {state}, {instance['InstanceType']}, "
            f"image tag {tag_value(instance, IMAGE_TAG_TAG) or '?'}, url {url or '(none yet)'}",
        )
        if state != "running" or not url:
            continue
        if check_cidr(aws.allowed_cidr) == CLOSED_CIDR:
            line("health", "not checked: the app port is closed to everyone (allowed_cidr)")
        elif probe is not None:
            line("health", f"{'answers' if probe(url) else 'not answering'} at {url}")
    return running
