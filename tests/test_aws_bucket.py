"""`imgsearch aws bucket`: private, TLS only, encrypted, versioned, idempotent, owner-checked."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from aws.bucket import empty_and_delete_bucket, ensure_bucket
from aws.errors import AwsError
from aws.plan import Plan
from tests.test_aws_helpers import REGION, Recorder, aws_settings, context, isolate_aws_env

ACCOUNT = "123456789012"


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    isolate_aws_env(monkeypatch)
    with mock_aws():
        yield


def _plan(dry_run: bool = False) -> Plan:
    return Plan("test", dry_run=dry_run, out=io.StringIO())


def _put_objects(name: str, *bodies: bytes) -> None:
    """Write objects, lifting the TLS-only policy for good: moto ignores policy conditions (its
    put_bucket_policy docs say so), so there the Deny refuses every object request."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.delete_bucket_policy(Bucket=name)
    for body in bodies:
        s3.put_object(Bucket=name, Key="images/a.jpg", Body=body)


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
    assert [s.action for s in plan.changes] == ["create"] * 6
    text = plan.out.getvalue()  # type: ignore[attr-defined]
    assert "TLS" in text and "lifecycle" in text
    assert "dry run" in plan.out.getvalue()  # type: ignore[attr-defined]
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []


def test_versioning_is_on_by_default_and_old_versions_expire() -> None:
    settings = aws_settings()
    ctx = context(settings)
    aws = settings.aws
    name = ensure_bucket(ctx, aws.bucket_versioning, _plan(), aws.noncurrent_days)
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    [rule] = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7


def test_bucket_policy_refuses_every_request_without_tls() -> None:
    ctx = context(aws_settings())
    name = ensure_bucket(ctx, versioning=True, plan=_plan())
    s3 = boto3.client("s3", region_name=REGION)
    policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert sorted(statement["Resource"]) == [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_statements_the_user_added_to_our_bucket_policy_are_kept() -> None:
    ctx = context(aws_settings())
    name = ensure_bucket(ctx, versioning=True, plan=_plan())
    s3 = boto3.client("s3", region_name=REGION)
    mine = {
        "Sid": "ReadForAnalytics",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{name}/*",
    }
    s3.put_bucket_policy(
        Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [mine]})
    )
    plan = _plan()
    ensure_bucket(ctx, versioning=True, plan=plan)
    statements = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == ["ReadForAnalytics", "imgsearchDenyInsecureTransport"]
    assert [s.what for s in plan.changes] == ["bucket policy: deny requests without TLS"]


def test_every_bucket_call_names_the_account_that_must_own_it() -> None:
    recorder = Recorder()
    ctx = context(aws_settings(), recorder.attach(boto3.session.Session()))
    ensure_bucket(ctx, versioning=True, plan=_plan())
    ensure_bucket(ctx, versioning=True, plan=_plan())
    _put_objects(ctx.names.bucket, b"1")
    empty_and_delete_bucket(ctx, _plan())
    calls = [(op, params) for service, op, params in recorder.calls if service == "s3"]
    checked = [op for op, params in calls if params.get("ExpectedBucketOwner") == ACCOUNT]
    unchecked = {op for op, params in calls if "ExpectedBucketOwner" not in params}
    # CreateBucket has no such parameter: the bucket is new, and ours, when it succeeds.
    assert unchecked == {"CreateBucket"}
    assert {"HeadBucket", "PutBucketPolicy", "ListObjectVersions", "DeleteBucket"} <= set(checked)


def test_a_users_own_bucket_is_used_as_it_is_and_never_reconfigured() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="my-photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    ctx = context(aws_settings(bucket="my-photos"))
    plan = _plan()
    assert ensure_bucket(ctx, versioning=True, plan=plan) == "my-photos"
    assert plan.changes == []
    text = plan.out.getvalue()  # type: ignore[attr-defined]
    assert "not made by imgsearch" in text and "accepts requests without TLS" in text
    for read, missing in (
        (s3.get_bucket_policy, "NoSuchBucketPolicy"),
        (s3.get_bucket_tagging, "NoSuchTagSet"),
        (s3.get_public_access_block, "NoSuchPublicAccessBlockConfiguration"),
        (s3.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration"),
    ):
        with pytest.raises(s3.exceptions.ClientError, match=missing):
            read(Bucket="my-photos")
    assert "Status" not in s3.get_bucket_versioning(Bucket="my-photos")


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
    _put_objects(name, b"one", b"two")
    assert len(s3.list_object_versions(Bucket=name)["Versions"]) == 2
    empty_and_delete_bucket(ctx, _plan())
    assert s3.list_buckets()["Buckets"] == []


def test_bucket_in_us_east_1_is_created_without_a_location_constraint() -> None:
    ctx = context(aws_settings(region="us-east-1"))
    name = ensure_bucket(ctx, versioning=False, plan=_plan())
    assert name.endswith("-us-east-1")
    assert boto3.client("s3", region_name="us-east-1").head_bucket(Bucket=name)
