"""Finding the deployment's instance by tag and answering its health URL."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from .clients import AwsContext
from .names import DEPLOYMENT_TAG

LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def find_instances(
    ctx: AwsContext, ec2: Any, states: list[str] | None = None
) -> list[dict[str, Any]]:
    """Instances carrying this deployment's tag, oldest first."""
    filters = [
        {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [ctx.names.deployment]},
        {"Name": "instance-state-name", "Values": states or LIVE_STATES},
    ]
    found = [
        instance
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]
    return sorted(found, key=lambda i: i["LaunchTime"])


def tag_value(instance: dict[str, Any], key: str) -> str:
    """One tag of an instance, or an empty string."""
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), "")


def app_url(instance: dict[str, Any], port: int) -> str:
    """The app's public URL, or empty when the instance has no public address yet."""
    ip = instance.get("PublicIpAddress") or ""
    return f"http://{ip}:{port}/" if ip else ""


def health_url(url: str) -> str:
    """The app's health check under its URL: 200 only when the model and the index answer."""
    return f"{url}api/health"


def probe_health(url: str, timeout_s: float = 5.0) -> bool:
    """True when the health endpoint answers 200 within the timeout."""
    try:
        with urllib.request.urlopen(health_url(url), timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def data_volume_id(instance: dict[str, Any], device: str) -> str:
    """The id of the volume attached at `device`, or empty."""
    return next(
        (
            str(m["Ebs"]["VolumeId"])
            for m in instance.get("BlockDeviceMappings", [])
            if m.get("DeviceName") == device and m.get("Ebs", {}).get("VolumeId")
        ),
        "",
    )


def find_kept_volumes(ctx: AwsContext, ec2: Any) -> list[dict[str, Any]]:
    """Detached volumes carrying this deployment's tag (data kept by destroy), newest first.

    Root volumes go with their instance, so a detached volume of the deployment is a data volume.
    """
    volumes = ec2.describe_volumes(
        Filters=[
            {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [ctx.names.deployment]},
            {"Name": "status", "Values": ["available"]},
        ]
    )["Volumes"]
    return sorted(volumes, key=lambda v: v["CreateTime"], reverse=True)
