"""Where the instance lives: the default VPC, a subnet offering the type, one security group."""

from __future__ import annotations

import ipaddress
from typing import Any

from .clients import AwsContext
from .errors import AwsError
from .names import DEPLOYMENT_TAG
from .plan import Plan

#: The shipped default: the app port open to nobody until the user names their address.
CLOSED_CIDR = "0.0.0.0/32"


def check_cidr(cidr: str) -> str:
    """Validate IMGSEARCH_AWS__ALLOWED_CIDR and return it normalised."""
    try:
        return str(ipaddress.IPv4Network(cidr, strict=False))
    except ValueError as error:
        raise AwsError(
            f"IMGSEARCH_AWS__ALLOWED_CIDR={cidr!r} is not an IPv4 CIDR such as 203.0.113.7/32."
        ) from error


def default_vpc(ec2: Any, region: str) -> str:
    """The default VPC id; accounts that deleted it get told how to make one."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise AwsError(
            f"region {region} has no default VPC: create one with "
            f"`aws ec2 create-default-vpc --region {region}`."
        )
    return str(vpcs[0]["VpcId"])


def pick_subnet(ec2: Any, vpc_id: str, instance_type: str, zone: str = "") -> str:
    """A default subnet in an availability zone that offers the instance type (in `zone`)."""
    offered = {
        o["Location"]
        for o in ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [instance_type]}],
        )["InstanceTypeOfferings"]
    }
    subnets = ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )["Subnets"]
    for subnet in sorted(subnets, key=lambda s: s["AvailabilityZone"]):
        if subnet["AvailabilityZone"] in offered and subnet["AvailabilityZone"] == (
            zone or subnet["AvailabilityZone"]
        ):
            return str(subnet["SubnetId"])
    where = f"availability zone {zone}" if zone else "this region"
    raise AwsError(f"no default subnet in {where} offers instance type {instance_type}.")


def find_security_group(ctx: AwsContext, ec2: Any) -> dict[str, Any] | None:
    """This deployment's security group, found by tag."""
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [ctx.names.deployment]},
            {"Name": "group-name", "Values": [ctx.names.security_group]},
        ]
    )["SecurityGroups"]
    return dict(groups[0]) if groups else None


def wanted_ingress(port: int, cidr: str) -> list[dict[str, Any]]:
    """The single inbound rule: the app port from the allowed CIDR."""
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "IpRanges": [{"CidrIp": cidr, "Description": "imgsearch app"}],
        }
    ]


def ensure_security_group(
    ctx: AwsContext, ec2: Any, vpc_id: str, port: int, cidr: str, plan: Plan
) -> str | None:
    """Create the group or reconcile its inbound rules to exactly one; returns its id."""
    group = find_security_group(ctx, ec2)
    group_id: str | None = None
    if group is None:
        if plan.change("create", f"security group {ctx.names.security_group} in {vpc_id}"):
            group_id = ec2.create_security_group(
                GroupName=ctx.names.security_group,
                Description="imgsearch: the app port only; shell access is through SSM",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": ctx.names.tags()}],
            )["GroupId"]
        current: list[tuple[str, int, int, str]] = []
    else:
        plan.keep(f"security group {ctx.names.security_group} ({group['GroupId']})")
        group_id = str(group["GroupId"])
        current = [
            (p.get("IpProtocol", ""), p.get("FromPort", -1), p.get("ToPort", -1), r["CidrIp"])
            for p in group.get("IpPermissions", [])
            for r in p.get("IpRanges", [])
        ]
        # Rules by group, prefix list or IPv6 are not ours either: they go too.
        others = [
            p
            for p in group.get("IpPermissions", [])
            if p.get("UserIdGroupPairs") or p.get("PrefixListIds") or p.get("Ipv6Ranges")
        ]
        if others and plan.change("delete", "inbound rules other than the app port"):
            ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=others)
    wanted = ("tcp", port, port, cidr)
    for rule in current:
        if rule != wanted and plan.change("delete", f"inbound {rule[0]} {rule[1]} from {rule[3]}"):
            ec2.revoke_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": rule[0],
                        "FromPort": rule[1],
                        "ToPort": rule[2],
                        "IpRanges": [{"CidrIp": rule[3]}],
                    }
                ],
            )
    if wanted in current:
        plan.keep(f"inbound tcp {port} from {cidr} only")
    elif plan.change("create", f"inbound tcp {port} from {cidr} only"):
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=wanted_ingress(port, cidr)
        )
    return group_id
