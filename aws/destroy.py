"""`destroy`: remove what deploy made, found by tag; data, bucket and repository on request."""

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
from .instances import data_volume_id, find_instances, find_kept_volumes
from .network import find_security_group
from .plan import Plan
from .userdata import DATA_DEVICE

#: Longest wait for a data-volume snapshot (it copies every written block the first time).
SNAPSHOT_WAIT_S = 4 * 3600


def destroy(
    ctx: AwsContext,
    plan: Plan,
    delete_bucket: bool,
    delete_repository: bool,
    delete_data: bool = False,
    snapshot: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Terminate the instance, then its group, role and profile; each only if tagged as ours.

    The data volume (index, state) is kept unless `delete_data`; `snapshot` copies it first.
    """
    ec2 = ctx.client("ec2")
    instances = find_instances(ctx, ec2)
    ids = [i["InstanceId"] for i in instances]
    attached = [v for v in (data_volume_id(i, DATA_DEVICE) for i in instances) if v]
    for instance_id in ids:
        plan.change("delete", f"instance {instance_id} (and its root volume)")
    if ids and not plan.dry_run:
        for instance in instances:
            if data_volume_id(instance, DATA_DEVICE):
                # Deployments before this version let the data volume go with the instance.
                ec2.modify_instance_attribute(
                    InstanceId=instance["InstanceId"],
                    BlockDeviceMappings=[
                        {"DeviceName": DATA_DEVICE, "Ebs": {"DeleteOnTermination": False}}
                    ],
                )
        ec2.terminate_instances(InstanceIds=ids)
        # The security group stays in use until the instance is really gone.
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids)
        if attached:
            ec2.get_waiter("volume_available").wait(VolumeIds=attached)

    volumes = sorted({v["VolumeId"] for v in find_kept_volumes(ctx, ec2)} | set(attached))
    if snapshot:
        _snapshot(ctx, ec2, volumes, wait=delete_data, plan=plan)
    for volume_id in volumes:
        if not delete_data:
            plan.keep(f"data volume {volume_id} (the next deploy reattaches it)")
        elif plan.change("delete", f"data volume {volume_id} (the index and state)"):
            ec2.delete_volume(VolumeId=volume_id)
    if volumes and not delete_data:
        plan.note("--delete-data removes the data volume; --snapshot copies it first")

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


def _snapshot(ctx: AwsContext, ec2: Any, volumes: list[str], wait: bool, plan: Plan) -> None:
    """Snapshot each data volume, tagged as the deployment's; wait when the volume goes next."""
    started = []
    for volume_id in volumes:
        if plan.change("create", f"snapshot of data volume {volume_id}"):
            started.append(
                ec2.create_snapshot(
                    VolumeId=volume_id,
                    Description=f"imgsearch {ctx.names.deployment} data before destroy",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": ctx.names.tags()}],
                )["SnapshotId"]
            )
    if started and wait:
        delay = 15
        ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=started,
            WaiterConfig={"Delay": delay, "MaxAttempts": SNAPSHOT_WAIT_S // delay},
        )
    for snapshot_id in started:
        plan.note(f"snapshot {snapshot_id}: restore with `aws ec2 create-volume --snapshot-id`")


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
