"""`imgsearch aws bucket`: private, encrypted, optionally versioned, idempotent."""

from __future__ import annotations

import io
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from aws.bucket import empty_and_delete_bucket, ensure_bucket
from aws.errors import AwsError
from aws.plan import Plan
from tests.test_aws_helpers import REGION, aws_settings, context, isolate_aws_env


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    isolate_aws_env(monkeypatch)
    with mock_aws():
        yield


def _plan(dry_run: bool = False) -> Plan:
    return Plan("test", dry_run=dry_run, out=io.StringIO())


def test_bucket_is_named_from_account_and_region_and_blocks_all_public_access() -> None:
    ctx = context(aws_settings())
    name = ensure_bucket(ctx, versioning=False, plan=_plan())
    assert name == f"imgsearch-123456789012-{REGION}"
    s3 = boto3.client("s3", region_name=REGION)
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == REGION
    assert s3.get_bucket_versioning(Bucket=name).get("Status") is None
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=name)["TagSet"]}
    assert tags["imgsearch:deployment"] == "imgsearch"


def test_second_run_changes_nothing() -> None:
    ctx = context(aws_settings(bucket_versioning=True))
    ensure_bucket(ctx, versioning=True, plan=_plan())
    again = _plan()
    ensure_bucket(ctx, versioning=True, plan=again)
    assert again.changes == []
    status = boto3.client("s3", region_name=REGION).get_bucket_versioning(Bucket=ctx.names.bucket)
    assert status["Status"] == "Enabled"


def test_dry_run_prints_the_plan_and_creates_nothing() -> None:
    ctx = context(aws_settings())
    plan = _plan(dry_run=True)
    ensure_bucket(ctx, versioning=False, plan=plan)
    assert [s.action for s in plan.changes] == ["create"] * 4
    assert "dry run" in plan.out.getvalue()  # type: ignore[attr-defined]
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []


def test_a_users_own_bucket_is_used_but_never_deleted() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="my-photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    ctx = context(aws_settings(bucket="my-photos"))
    ensure_bucket(ctx, versioning=False, plan=_plan())
    with pytest.raises(AwsError, match="not tagged"):
        empty_and_delete_bucket(ctx, _plan())
    assert s3.head_bucket(Bucket="my-photos")


def test_delete_removes_every_object_version_and_the_bucket() -> None:
    ctx = context(aws_settings(bucket_versioning=True))
    name = ensure_bucket(ctx, versioning=True, plan=_plan())
    s3 = boto3.client("s3", region_name=REGION)
    for body in (b"one", b"two"):
        s3.put_object(Bucket=name, Key="images/a.jpg", Body=body)
    empty_and_delete_bucket(ctx, _plan())
    assert s3.list_buckets()["Buckets"] == []


def test_bucket_in_us_east_1_is_created_without_a_location_constraint() -> None:
    ctx = context(aws_settings(region="us-east-1"))
    name = ensure_bucket(ctx, versioning=False, plan=_plan())
    assert name.endswith("-us-east-1")
    assert boto3.client("s3", region_name="us-east-1").head_bucket(Bucket=name)
