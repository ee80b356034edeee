"""The private S3 bucket that holds the images: no public access, TLS only, encrypted, versioned.

Every call names the account that must own the bucket (`ExpectedBucketOwner`), so a bucket of the
same name in another account is never read, written or emptied. Only a bucket carrying this
deployment's tag is configured or deleted; a bucket the user made is used as it is.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from .clients import AwsContext
from .errors import AwsError
from .plan import Action, Plan

_BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_SSE_S3 = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
#: Sid of the statement that refuses plain-HTTP requests; other statements are left alone.
TLS_SID = "imgsearchDenyInsecureTransport"
#: ID of the lifecycle rule that expires old versions and abandoned multipart uploads.
LIFECYCLE_ID = "imgsearch-noncurrent-versions"
#: Days after which an unfinished multipart upload is aborted (its parts bill until then).
ABORT_MULTIPART_DAYS = 7


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def bucket_exists(s3: Any, bucket: str, owner: str) -> bool:
    """True when the bucket exists in account `owner`; a bucket owned elsewhere is an error."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=owner)
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


def tls_only_statement(partition: str, bucket: str) -> dict[str, Any]:
    """Deny every request to the bucket and its objects that does not come over TLS."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Sid": TLS_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def lifecycle_rule(noncurrent_days: int) -> dict[str, Any]:
    """Old versions expire after `noncurrent_days`, so a deleted image is gone for good then."""
    return {
        "ID": LIFECYCLE_ID,
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


def ensure_bucket(ctx: AwsContext, versioning: bool, plan: Plan, noncurrent_days: int = 30) -> str:
    """Create the bucket, or bring one imgsearch made to the wanted settings; returns its name."""
    s3 = ctx.client("s3")
    name = ctx.names.bucket
    owner = ctx.account_id
    exists = bucket_exists(s3, name, owner)
    if exists and not ctx.names.owns(_bucket_tags(s3, name, owner)):
        _report_foreign(s3, name, owner, plan)
        return name
    if exists:
        plan.keep(f"s3 bucket {name}")
    elif plan.change("create", f"s3 bucket {name} in {ctx.region}"):
        kwargs: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        # us-east-1 is the one region that rejects an explicit location constraint.
        if ctx.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        s3.create_bucket(**kwargs)
    mode: Action = "update" if exists else "create"

    # Tagged first: the tag is what marks the bucket as imgsearch's on every later run.
    if exists:
        plan.keep("tags")
    elif plan.change("create", "tags"):
        s3.put_bucket_tagging(
            Bucket=name, ExpectedBucketOwner=owner, Tagging={"TagSet": ctx.names.tags()}
        )

    block = _get(s3.get_public_access_block, "PublicAccessBlockConfiguration", exists, name, owner)
    if block == _BLOCK_ALL:
        plan.keep("block all public access")
    elif plan.change(mode, "block all public access"):
        s3.put_public_access_block(
            Bucket=name, ExpectedBucketOwner=owner, PublicAccessBlockConfiguration=_BLOCK_ALL
        )

    sse = _get(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", exists, name, owner)
    if _algorithm(sse) in ("AES256", "aws:kms", "aws:kms:dsse"):
        plan.keep(f"default encryption {_algorithm(sse)}")
    elif plan.change(mode, "default encryption SSE-S3 (AES256)"):
        s3.put_bucket_encryption(
            Bucket=name, ExpectedBucketOwner=owner, ServerSideEncryptionConfiguration=_SSE_S3
        )

    statements = _policy_statements(s3, name, owner) if exists else []
    wanted_tls = tls_only_statement(ctx.partition, name)
    if wanted_tls in statements:
        plan.keep("bucket policy: TLS only")
    elif plan.change(mode, "bucket policy: deny requests without TLS"):
        others = [s for s in statements if s.get("Sid") != TLS_SID]
        policy = {"Version": "2012-10-17", "Statement": [*others, wanted_tls]}
        s3.put_bucket_policy(Bucket=name, ExpectedBucketOwner=owner, Policy=json.dumps(policy))

    status = (
        s3.get_bucket_versioning(Bucket=name, ExpectedBucketOwner=owner).get("Status", "")
        if exists
        else ""
    )
    if versioning and status != "Enabled":
        if plan.change(mode, "versioning on"):
            s3.put_bucket_versioning(
                Bucket=name,
                ExpectedBucketOwner=owner,
                VersioningConfiguration={"Status": "Enabled"},
            )
    elif status == "Enabled":
        # Versioning cannot be switched off, only suspended; leave the user's choice alone.
        plan.keep("versioning on")
    else:
        plan.keep("versioning off (IMGSEARCH_AWS__BUCKET_VERSIONING=false)")

    rules = _lifecycle_rules(s3, name, owner) if exists else []
    wanted_rule = lifecycle_rule(noncurrent_days)
    ours = [r for r in rules if r.get("ID") == LIFECYCLE_ID]
    what = (
        f"lifecycle: old versions expire after {noncurrent_days} days, "
        f"unfinished uploads after {ABORT_MULTIPART_DAYS}"
    )
    if len(ours) == 1 and _same_rule(ours[0], wanted_rule):
        plan.keep(what)
    elif plan.change(mode, what):
        others = [r for r in rules if r.get("ID") != LIFECYCLE_ID]
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            ExpectedBucketOwner=owner,
            LifecycleConfiguration={"Rules": [*others, wanted_rule]},
        )
    return name


def _report_foreign(s3: Any, name: str, owner: str, plan: Plan) -> None:
    """Use a bucket imgsearch did not make as it is; say what differs from imgsearch's defaults."""
    plan.keep(f"s3 bucket {name} (not made by imgsearch: used as it is, never changed or deleted)")
    try:
        block = _get(
            s3.get_public_access_block, "PublicAccessBlockConfiguration", True, name, owner
        )
        sse = _get(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", True, name, owner)
        versioned = s3.get_bucket_versioning(Bucket=name, ExpectedBucketOwner=owner).get("Status")
        statements = _policy_statements(s3, name, owner)
    except ClientError as error:
        plan.note(f"warning: cannot read the settings of bucket {name} ({_code(error)})")
        return
    if block != _BLOCK_ALL:
        plan.note(f"warning: bucket {name} does not block all public access")
    if not _algorithm(sse):
        plan.note(f"warning: bucket {name} has no default encryption")
    if versioned != "Enabled":
        plan.note(f"warning: bucket {name} keeps no old versions (versioning is off)")
    if not any(_denies_plain_http(s) for s in statements):
        plan.note(f"warning: bucket {name} accepts requests without TLS")


def _denies_plain_http(statement: dict[str, Any]) -> bool:
    condition = statement.get("Condition", {}).get("Bool", {})
    return statement.get("Effect") == "Deny" and str(
        condition.get("aws:SecureTransport", "")
    ).lower() in ("false", "['false']")


def _get(call: Any, key: str, exists: bool, bucket: str, owner: str) -> Any:
    """Read one bucket setting; a missing setting reads as None."""
    if not exists:
        return None
    try:
        return call(Bucket=bucket, ExpectedBucketOwner=owner).get(key)
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


def _policy_statements(s3: Any, bucket: str, owner: str) -> list[dict[str, Any]]:
    try:
        policy = s3.get_bucket_policy(Bucket=bucket, ExpectedBucketOwner=owner)["Policy"]
    except ClientError as error:
        if _code(error) == "NoSuchBucketPolicy":
            return []
        raise
    statements = json.loads(policy).get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _lifecycle_rules(s3: Any, bucket: str, owner: str) -> list[dict[str, Any]]:
    try:
        return list(
            s3.get_bucket_lifecycle_configuration(Bucket=bucket, ExpectedBucketOwner=owner)["Rules"]
        )
    except ClientError as error:
        if _code(error) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _same_rule(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Compare the parts that matter; S3 hands back the filter in more than one spelling."""
    keys = ("Status", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload")
    return all(current.get(k) == wanted[k] for k in keys)


def _bucket_tags(s3: Any, bucket: str, owner: str) -> list[dict[str, str]]:
    try:
        return list(
            s3.get_bucket_tagging(Bucket=bucket, ExpectedBucketOwner=owner).get("TagSet", [])
        )
    except ClientError as error:
        if _code(error) == "NoSuchTagSet":
            return []
        raise


def empty_and_delete_bucket(ctx: AwsContext, plan: Plan) -> None:
    """Delete every object version and the bucket, only when it carries this deployment's tag."""
    s3 = ctx.client("s3")
    name = ctx.names.bucket
    owner = ctx.account_id
    if not bucket_exists(s3, name, owner):
        plan.keep(f"s3 bucket {name} already gone")
        return
    if not ctx.names.owns(_bucket_tags(s3, name, owner)):
        raise AwsError(f"bucket {name} is not tagged as this deployment's; not deleting it.")
    if not plan.change("delete", f"s3 bucket {name} and every object in it"):
        return
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=name, ExpectedBucketOwner=owner):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if keys:
            failed = s3.delete_objects(
                Bucket=name, ExpectedBucketOwner=owner, Delete={"Objects": keys, "Quiet": True}
            ).get("Errors", [])
            if failed:
                first = failed[0]
                raise AwsError(
                    f"S3 refused to delete {len(failed)} objects of bucket {name} "
                    f"({first.get('Code', '?')} on {first.get('Key', '?')}); "
                    "the bucket is kept."
                )
    s3.delete_bucket(Bucket=name, ExpectedBucketOwner=owner)
