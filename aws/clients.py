"""One boto3 session per command, with region and account resolved the standard way."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import boto3

from config import Settings

from .errors import AwsError
from .names import Names, make_names


@dataclass(frozen=True)
class AwsContext:
    """A session bound to a region, with the account, partition and resource names."""

    session: boto3.session.Session
    region: str
    account_id: str
    partition: str
    names: Names

    def client(self, service: str) -> Any:
        """A plain boto3 client, so AWS_ENDPOINT_URL / AWS_PROFILE keep working."""
        return self.session.client(service, region_name=self.region)

    def arn(self, service: str, resource: str, region: str = "", account: str = "") -> str:
        """An ARN in this account's partition (aws, aws-cn, aws-us-gov)."""
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"


def resolve_region(settings: Settings, session: boto3.session.Session) -> str:
    """Settings first, then AWS_REGION, then the profile or AWS_DEFAULT_REGION."""
    region = settings.aws.region or os.environ.get("AWS_REGION", "") or session.region_name or ""
    if not region:
        raise AwsError(
            "no AWS region is set: set IMGSEARCH_AWS__REGION or AWS_REGION (e.g. us-east-1)."
        )
    return region


def make_context(settings: Settings, session: boto3.session.Session | None = None) -> AwsContext:
    """Build the context; the account id comes from STS when settings leave it empty."""
    session = session or boto3.session.Session()
    region = resolve_region(settings, session)
    if settings.aws.account_id:
        account = settings.aws.account_id
        partition = session.get_partition_for_region(region)
    else:
        identity = session.client("sts", region_name=region).get_caller_identity()
        account = identity["Account"]
        # The caller's ARN names the partition, which every other ARN must share.
        partition = identity["Arn"].split(":")[1]
    names = make_names(settings.aws, region, account)
    return AwsContext(session, region, account, partition, names)
