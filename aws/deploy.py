"""`deploy` makes the one-box instance; `update` rolls it to another image tag."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from config import Settings

from .bucket import ensure_bucket
from .clients import AwsContext
from .ecr import image_exists
from .errors import AwsError
from .iam import ensure_role
from .instances import app_url, find_instances, probe_health, tag_value
from .names import IMAGE_TAG_TAG
from .network import CLOSED_CIDR, check_cidr, default_vpc, ensure_security_group, pick_subnet
from .plan import Plan
from .userdata import DATA_DEVICE, RUN_SCRIPT, UserDataInputs, render_user_data

#: Amazon Linux 2023's latest AMI, published by AWS as a public SSM parameter.
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
#: Root volume: Docker keeps images there, and the torch image is a few GB.
ROOT_VOLUME_GB = 30


@dataclass
class Waiting:
    """How long and how to wait; tests pass instant versions."""

    wait: bool = True
    health_timeout_s: float = 15 * 60
    poll_s: float = 10.0
    profile_retries: int = 12
    sleep: Callable[[float], None] = time.sleep
    probe: Callable[[str], bool] = field(default=probe_health)
    clock: Callable[[], float] = time.monotonic


def latest_ami(ctx: AwsContext) -> str:
    """The current AL2023 x86_64 AMI id in this region."""
    return str(ctx.client("ssm").get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"])


def _ssm_hint(instance_id: str, ctx: AwsContext, port: int) -> str:
    return (
        f"aws ssm start-session --region {ctx.region} --target {instance_id} "
        "--document-name AWS-StartPortForwardingSession "
        f'--parameters \'{{"portNumber":["{port}"],"localPortNumber":["{port}"]}}\''
    )


def deploy(ctx: AwsContext, settings: Settings, plan: Plan, waiting: Waiting) -> str:
    """Make (or find) everything the instance needs and the instance; returns its URL."""
    aws = settings.aws
    cidr = check_cidr(aws.allowed_cidr)
    image = image_exists(ctx, aws.image_tag)
    ec2 = ctx.client("ec2")

    ensure_bucket(ctx, aws.bucket_versioning, plan)
    profile_arn = ensure_role(ctx, plan)
    vpc_id = default_vpc(ec2, ctx.region)
    group_id = ensure_security_group(ctx, ec2, vpc_id, aws.app_port, cidr, plan)
    if cidr == "0.0.0.0/0":
        plan.note("warning: the app has no login and its port is open to the whole internet")

    existing = find_instances(ctx, ec2)
    if existing:
        instance = existing[0]
        plan.keep(f"instance {instance['InstanceId']} ({instance['State']['Name']})")
        if len(existing) > 1:
            plan.note(f"warning: {len(existing)} instances carry this deployment's tag")
        if instance["State"]["Name"] in ("stopped", "stopping") and plan.change(
            "run", f"start instance {instance['InstanceId']}"
        ):
            ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance["InstanceId"]])
            ec2.start_instances(InstanceIds=[instance["InstanceId"]])
        running_tag = tag_value(instance, IMAGE_TAG_TAG)
        if running_tag != aws.image_tag:
            plan.note(
                f"it runs image tag {running_tag!r}; `imgsearch aws update` rolls it to "
                f"{aws.image_tag!r}"
            )
    else:
        subnet = pick_subnet(ec2, vpc_id, aws.instance_type)
        ami = latest_ami(ctx)
        what = f"ec2 instance {aws.instance_type} ({ami}, IMDSv2 only, {aws.volume_gb} GB data)"
        if not plan.change("create", what):
            plan.note("the app URL is known once the instance exists")
            return ""
        assert profile_arn is not None and group_id is not None  # made above when not dry run
        inputs = UserDataInputs(
            region=ctx.region,
            registry=image.split("/")[0],
            image=image,
            bucket=ctx.names.bucket,
            app_port=aws.app_port,
        )
        instance = _run_instance(
            ctx, ec2, settings, ami, subnet, group_id, profile_arn, inputs, waiting
        )

    instance_id = instance["InstanceId"]
    if not waiting.wait:
        instance = _describe(ec2, instance_id)
        url = app_url(instance, aws.app_port)
        plan.note(f"not waiting (--no-wait); `imgsearch aws status` shows progress; url: {url}")
        return url
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id])
    instance = _describe(ec2, instance_id)
    url = app_url(instance, aws.app_port)
    if cidr == CLOSED_CIDR:
        plan.note(
            f"the app port is closed to everyone (IMGSEARCH_AWS__ALLOWED_CIDR={CLOSED_CIDR}); "
            "set it to your address, e.g. 203.0.113.7/32, and deploy again, or forward the "
            f"port through Session Manager: {_ssm_hint(instance_id, ctx, aws.app_port)}"
        )
        return url
    _wait_healthy(url, instance_id, waiting)
    plan.note(f"the app answers at {url}")
    return url


def _describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    return dict(
        ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    )


def _wait_healthy(url: str, instance_id: str, waiting: Waiting) -> None:
    deadline = waiting.clock() + waiting.health_timeout_s
    while not waiting.probe(url):
        if waiting.clock() >= deadline:
            raise AwsError(
                f"instance {instance_id} runs but the app did not answer at {url} within "
                f"{waiting.health_timeout_s / 60:.0f} minutes; read "
                "/var/log/imgsearch-user-data.log through "
                f"`aws ssm start-session --target {instance_id}`."
            )
        waiting.sleep(waiting.poll_s)


def _run_instance(
    ctx: AwsContext,
    ec2: Any,
    settings: Settings,
    ami: str,
    subnet: str,
    group_id: str,
    profile_arn: str,
    inputs: UserDataInputs,
    waiting: Waiting,
) -> dict[str, Any]:
    """run_instances, retried while IAM has not yet propagated a new instance profile."""
    aws = settings.aws
    root_device = ec2.describe_images(ImageIds=[ami])["Images"][0]["RootDeviceName"]
    tags = ctx.names.tags(**{IMAGE_TAG_TAG: aws.image_tag})
    kwargs: dict[str, Any] = {
        "ImageId": ami,
        "InstanceType": aws.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "IamInstanceProfile": {"Arn": profile_arn},
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": subnet,
                "Groups": [group_id],
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }
        ],
        # IMDSv2 only; hop limit 2 so the container (one hop behind docker0) gets role creds.
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 2,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device,
                "Ebs": {
                    "VolumeSize": ROOT_VOLUME_GB,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            },
            {
                "DeviceName": DATA_DEVICE,
                "Ebs": {
                    "VolumeSize": aws.volume_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            },
        ],
        "UserData": render_user_data(inputs),
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tags}
            for kind in ("instance", "volume", "network-interface")
        ],
        # Same token on every retry: a retried call can never start a second instance.
        "ClientToken": f"{ctx.names.deployment}-{uuid.uuid4()}",
    }
    if aws.key_name:
        kwargs["KeyName"] = aws.key_name
    for attempt in range(waiting.profile_retries + 1):
        try:
            return dict(ec2.run_instances(**kwargs)["Instances"][0])
        except ClientError as error:
            message = str(error.response["Error"].get("Message", "")).lower()
            propagating = error.response["Error"]["Code"] == "InvalidParameterValue" and (
                "instance profile" in message or "iaminstanceprofile" in message
            )
            if not propagating or attempt == waiting.profile_retries:
                raise
            waiting.sleep(5.0)
    raise AssertionError("unreachable")


def update(ctx: AwsContext, settings: Settings, plan: Plan, waiting: Waiting) -> str:
    """Pull the new tag on the instance and restart the container, through SSM Run Command."""
    tag = settings.aws.image_tag
    image = image_exists(ctx, tag)
    ec2 = ctx.client("ec2")
    instances = find_instances(ctx, ec2, ["running"])
    if not instances:
        raise AwsError("no running imgsearch instance: run `imgsearch aws deploy` first.")
    instance_id = instances[0]["InstanceId"]
    if not plan.change("run", f"{RUN_SCRIPT} {image} on {instance_id} (through SSM)"):
        plan.change("update", f"tag {IMAGE_TAG_TAG}={tag} on {instance_id}")
        return image
    ssm = ctx.client("ssm")
    command_id = ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="AWS-RunShellScript",
        Comment=f"imgsearch update to {tag}"[:100],
        Parameters={"commands": [f"{RUN_SCRIPT} {image}"]},
    )["Command"]["CommandId"]
    plan.change("update", f"tag {IMAGE_TAG_TAG}={tag} on {instance_id}")
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": IMAGE_TAG_TAG, "Value": tag}])
    if not waiting.wait:
        plan.note(f"sent command {command_id}; not waiting (--no-wait)")
        return image
    _wait_command(ssm, command_id, instance_id, waiting)
    plan.note(f"instance {instance_id} runs {image}")
    return image


def _wait_command(ssm: Any, command_id: str, instance_id: str, waiting: Waiting) -> None:
    deadline = waiting.clock() + waiting.health_timeout_s
    while True:
        try:
            status = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        except ClientError as error:
            # The invocation is not visible for a moment right after send_command.
            if error.response["Error"]["Code"] != "InvocationDoesNotExist":
                raise
            status = {"Status": "Pending"}
        state = status["Status"]
        if state == "Success":
            return
        if state in ("Failed", "Cancelled", "TimedOut"):
            detail = str(status.get("StandardErrorContent", "")).strip().splitlines()[-1:]
            raise AwsError(
                f"the update on {instance_id} ended {state.lower()}"
                + (f": {detail[0]}." if detail else ".")
            )
        if waiting.clock() >= deadline:
            raise AwsError(f"the update command {command_id} on {instance_id} did not finish.")
        waiting.sleep(waiting.poll_s)


def decode_user_data(ec2: Any, instance_id: str) -> str:
    """The instance's user data as text (for status and tests)."""
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")[
        "UserData"
    ].get("Value", "")
    return base64.b64decode(value).decode() if value else ""
