"""`deploy` makes the one-box instance; `update` rolls it to another image tag."""

from __future__ import annotations

import base64
import hashlib
import shlex
import time
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
from .instances import app_url, find_instances, find_kept_volumes, probe_health, tag_value
from .names import IMAGE_TAG_TAG
from .network import CLOSED_CIDR, check_cidr, default_vpc, ensure_security_group, pick_subnet
from .plan import Plan
from .userdata import DATA_DEVICE, RUN_SCRIPT, UserDataInputs, render_user_data

#: Amazon Linux 2023's latest AMI, published by AWS as a public SSM parameter.
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
#: Root volume: Docker keeps images there, and the torch image is a few GB.
ROOT_VOLUME_GB = 30
#: How many terminated instances a deploy steps past when their launch token comes back.
MAX_TOKEN_GENERATIONS = 5


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

    ensure_bucket(ctx, aws.bucket_versioning, plan, aws.noncurrent_days)
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
        kept = find_kept_volumes(ctx, ec2)
        volume = kept[0] if kept else None
        zone = volume["AvailabilityZone"] if volume else ""
        subnet = pick_subnet(ec2, vpc_id, aws.instance_type, zone)
        ami = latest_ami(ctx)
        data = (
            f"data volume {volume['VolumeId']} kept from before"
            if volume
            else f"{aws.volume_gb} GB data"
        )
        what = f"ec2 instance {aws.instance_type} ({ami}, IMDSv2 only, {data})"
        if not plan.change("create", what):
            plan.note("the app URL is known once the instance exists")
            return ""
        if len(kept) > 1:
            plan.note(f"warning: {len(kept)} detached data volumes; using the newest")
        assert profile_arn is not None and group_id is not None  # made above when not dry run
        inputs = UserDataInputs(
            region=ctx.region,
            registry=image.split("/")[0],
            image=image,
            bucket=ctx.names.bucket,
            app_port=aws.app_port,
        )
        launch = Launch(ami, subnet, group_id, profile_arn, volume["VolumeId"] if volume else "")
        instance = _run_instance(ctx, ec2, settings, launch, inputs, waiting, plan)
        if volume:
            # A volume can only be attached to a running instance; user data waits for it.
            ec2.get_waiter("instance_running").wait(InstanceIds=[instance["InstanceId"]])
            plan.change("update", f"attach {volume['VolumeId']} as {DATA_DEVICE}")
            _attach(ec2, volume["VolumeId"], instance["InstanceId"])

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


def _attach(ec2: Any, volume_id: str, instance_id: str) -> None:
    """Attach the kept data volume; a racing deploy that attached it first is as good."""
    try:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=DATA_DEVICE)
    except ClientError as error:
        if error.response["Error"]["Code"] != "VolumeInUse":
            raise
        [volume] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        if not any(a["InstanceId"] == instance_id for a in volume.get("Attachments", [])):
            raise


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


@dataclass(frozen=True)
class Launch:
    """Where and with what the instance starts; `kept_volume` is a data volume to reattach."""

    ami: str
    subnet: str
    group_id: str
    profile_arn: str
    kept_volume: str = ""


def client_token(ctx: AwsContext, group_id: str, superseded: str = "") -> str:
    """The launch's idempotency token, the same for every deploy of one deployment.

    Two deploys racing each other send the same token, so EC2 starts one instance and returns
    it to both. The security group is made anew after `destroy`, so a later deployment gets a
    fresh token; `superseded` steps past an instance terminated by hand (EC2 keeps a token for
    at least 24 hours after its instance terminates).
    """
    key = f"{ctx.account_id}/{ctx.region}/{ctx.names.deployment}/{group_id}/{superseded}"
    return f"{ctx.names.deployment}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _block_devices(ec2: Any, settings: Settings, launch: Launch) -> list[dict[str, Any]]:
    root_device = ec2.describe_images(ImageIds=[launch.ami])["Images"][0]["RootDeviceName"]
    devices: list[dict[str, Any]] = [
        {
            "DeviceName": root_device,
            "Ebs": {
                "VolumeSize": ROOT_VOLUME_GB,
                "VolumeType": "gp3",
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        }
    ]
    if not launch.kept_volume:
        devices.append(
            {
                "DeviceName": DATA_DEVICE,
                "Ebs": {
                    "VolumeSize": settings.aws.volume_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    # The index and state outlive the instance; destroy --delete-data removes it.
                    "DeleteOnTermination": False,
                },
            }
        )
    return devices


def _run_instance(
    ctx: AwsContext,
    ec2: Any,
    settings: Settings,
    launch: Launch,
    inputs: UserDataInputs,
    waiting: Waiting,
    plan: Plan,
) -> dict[str, Any]:
    """run_instances with this deployment's token, stepping past instances terminated since."""
    aws = settings.aws
    tags = ctx.names.tags(**{IMAGE_TAG_TAG: aws.image_tag})
    kwargs: dict[str, Any] = {
        "ImageId": launch.ami,
        "InstanceType": aws.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "IamInstanceProfile": {"Arn": launch.profile_arn},
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": launch.subnet,
                "Groups": [launch.group_id],
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
        "BlockDeviceMappings": _block_devices(ec2, settings, launch),
        "UserData": render_user_data(inputs),
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tags}
            for kind in ("instance", "volume", "network-interface")
        ],
    }
    if aws.key_name:
        kwargs["KeyName"] = aws.key_name
    superseded = ""
    for _ in range(MAX_TOKEN_GENERATIONS):
        token = client_token(ctx, launch.group_id, superseded)
        try:
            instance = _launch(ec2, {**kwargs, "ClientToken": token}, waiting)
        except ClientError as error:
            if error.response["Error"]["Code"] != "IdempotentParameterMismatch":
                raise
            # This token started an instance with other settings: a racing deploy's, or one
            # terminated since. Which one, only the instance itself can say.
            earlier = _instances_with_token(ec2, token)
            if not earlier:
                raise
            instance = earlier[0]
            if instance["State"]["Name"] not in ("shutting-down", "terminated"):
                plan.note(f"another deploy started {instance['InstanceId']} just now; using it")
        if instance["State"]["Name"] not in ("shutting-down", "terminated"):
            return instance
        superseded = str(instance["InstanceId"])
    raise AwsError(
        f"EC2 keeps answering with terminated instances (last {superseded}); "
        "run `imgsearch aws destroy` and deploy again."
    )


def _launch(ec2: Any, kwargs: dict[str, Any], waiting: Waiting) -> dict[str, Any]:
    """run_instances, retried while IAM has not yet propagated a new instance profile."""
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


def _instances_with_token(ec2: Any, token: str) -> list[dict[str, Any]]:
    reservations = ec2.describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


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
        # The command line is shell: every word that comes from settings is quoted.
        Parameters={"commands": [shlex.join([RUN_SCRIPT, image])]},
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
