"""`destroy`: remove exactly what deploy made, found by tag; bucket and repository on request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from .bucket import empty_and_delete_bucket
from .clients import AwsContext
from .ecr import find_repository
from .errors import AwsError
from .iam import delete_role
from .instances import find_instances
from .names import DEPLOYMENT_TAG
from .network import find_security_group
from .plan import Plan


def destroy(
    ctx: AwsContext,
    plan: Plan,
    delete_bucket: bool,
    delete_repository: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Terminate the instance, then its group, role and profile; each only if tagged as ours."""
    ec2 = ctx.client("ec2")
    instances = find_instances(ctx, ec2)
    ids = [i["InstanceId"] for i in instances]
    for instance_id in ids:
        plan.change("delete", f"instance {instance_id} (and its volumes)")
    if ids and not plan.dry_run:
        ec2.terminate_instances(InstanceIds=ids)
        # The security group stays in use until the instance is really gone.
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids)

    volumes = ec2.describe_volumes(
        Filters=[
            {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [ctx.names.deployment]},
            {"Name": "status", "Values": ["available"]},
        ]
    )["Volumes"]
    for volume in volumes:
        if plan.change("delete", f"volume {volume['VolumeId']} left detached"):
            ec2.delete_volume(VolumeId=volume["VolumeId"])

    group = find_security_group(ctx, ec2)
    if group is not None and plan.change("delete", f"security group {group['GroupId']}"):
        _delete_group(ec2, group["GroupId"], sleep)

    delete_role(ctx, plan)

    if delete_bucket:
        empty_and_delete_bucket(ctx, plan)
    else:
        plan.note(f"kept bucket {ctx.names.bucket} (--delete-bucket removes it and its images)")

    ecr = ctx.client("ecr")
    repo = find_repository(ecr, ctx.names.repository)
    if repo is None:
        return
    if not delete_repository:
        plan.note(f"kept ecr repository {ctx.names.repository} (--delete-repository removes it)")
        return
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags", [])
    if not ctx.names.owns(tags):
        raise AwsError(
            f"ecr repository {ctx.names.repository} is not imgsearch's; not deleting it."
        )
    if plan.change("delete", f"ecr repository {ctx.names.repository} and its images"):
        ecr.delete_repository(repositoryName=ctx.names.repository, force=True)


def _delete_group(ec2: Any, group_id: str, sleep: Callable[[float], None]) -> None:
    """Delete the group, waiting out the network interface that outlives a terminated instance."""
    for attempt in range(30):
        try:
            ec2.delete_security_group(GroupId=group_id)
            return
        except ClientError as error:
            if error.response["Error"]["Code"] != "DependencyViolation" or attempt == 29:
                raise
            sleep(10.0)
