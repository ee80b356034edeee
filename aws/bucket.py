"""The private S3 bucket that holds the images: no public access, encrypted, optional versions."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .clients import AwsContext
from .errors import AwsError
from .plan import Plan

_BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_SSE_S3 = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def bucket_exists(s3: Any, bucket: str) -> bool:
    """True when the bucket exists and is ours; a bucket owned elsewhere is an error."""
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as error:
        if _code(error) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if _code(error) in ("403", "AccessDenied", "Forbidden"):
            raise AwsError(
                f"bucket {bucket} belongs to another account or denies you; "
                "set IMGSEARCH_AWS__BUCKET to another name."
            ) from error
        raise


def ensure_bucket(ctx: AwsContext, versioning: bool, plan: Plan) -> str:
    """Create or bring the bucket to the wanted settings; returns its name."""
    s3 = ctx.client("s3")
    name = ctx.names.bucket
    exists = bucket_exists(s3, name)
    if exists:
        plan.keep(f"s3 bucket {name}")
    elif plan.change("create", f"s3 bucket {name} in {ctx.region}"):
        kwargs: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        # us-east-1 is the one region that rejects an explicit location constraint.
        if ctx.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        s3.create_bucket(**kwargs)

    current_block = _get(s3.get_public_access_block, "PublicAccessBlockConfiguration", exists, name)
    if current_block == _BLOCK_ALL:
        plan.keep("block all public access")
    elif plan.change("update" if exists else "create", "block all public access"):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=_BLOCK_ALL)

    current_sse = _get(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", exists, name)
    if _algorithm(current_sse) in ("AES256", "aws:kms", "aws:kms:dsse"):
        plan.keep(f"default encryption {_algorithm(current_sse)}")
    elif plan.change("update" if exists else "create", "default encryption SSE-S3 (AES256)"):
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=_SSE_S3)

    status = s3.get_bucket_versioning(Bucket=name).get("Status", "") if exists else ""
    if versioning and status != "Enabled":
        if plan.change("update" if exists else "create", "versioning on"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    elif status == "Enabled":
        # Versioning cannot be switched off, only suspended; leave the user's choice alone.
        plan.keep("versioning on")
    else:
        plan.keep("versioning off (IMGSEARCH_AWS__BUCKET_VERSIONING=true turns it on)")

    if not exists:
        if plan.change("create", "tags"):
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": ctx.names.tags()})
    elif ctx.names.owns(_bucket_tags(s3, name)):
        plan.keep("tags")
    else:
        # A bucket the user made themselves stays theirs: untagged, destroy never deletes it.
        plan.note(f"bucket {name} was not made by imgsearch; destroy will never delete it")
    return name


def _get(call: Any, key: str, exists: bool, bucket: str) -> Any:
    """Read one bucket setting; a missing setting reads as None."""
    if not exists:
        return None
    try:
        return call(Bucket=bucket).get(key)
    except ClientError as error:
        if _code(error) in (
            "NoSuchPublicAccessBlockConfiguration",
            "ServerSideEncryptionConfigurationNotFoundError",
        ):
            return None
        raise


def _algorithm(sse: Any) -> str:
    rules = (sse or {}).get("Rules") or [{}]
    return str(rules[0].get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", ""))


def _bucket_tags(s3: Any, bucket: str) -> list[dict[str, str]]:
    try:
        return list(s3.get_bucket_tagging(Bucket=bucket).get("TagSet", []))
    except ClientError as error:
        if _code(error) == "NoSuchTagSet":
            return []
        raise


def empty_and_delete_bucket(ctx: AwsContext, plan: Plan) -> None:
    """Delete every object version and the bucket, only when it carries this deployment's tag."""
    s3 = ctx.client("s3")
    name = ctx.names.bucket
    if not bucket_exists(s3, name):
        plan.keep(f"s3 bucket {name} already gone")
        return
    if not ctx.names.owns(_bucket_tags(s3, name)):
        raise AwsError(f"bucket {name} is not tagged as this deployment's; not deleting it.")
    if not plan.change("delete", f"s3 bucket {name} and every object in it"):
        return
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=name):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)
