"""The instance's IAM role and profile: pull this image, use the images prefix, reach SSM."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from .clients import AwsContext
from .errors import AwsError
from .names import IMAGES_PREFIX
from .plan import Plan

#: Inline policy name on the role.
POLICY_NAME = "imgsearch-least-privilege"
#: The managed policy earlier versions attached; its `ssm:GetParameter*` on `*` would let the
#: instance read every SecureString parameter in the account, so it is detached when found.
SSM_MANAGED_POLICY = "AmazonSSMManagedInstanceCore"
#: What Session Manager needs on the instance: AWS's own minimal set, as in the AWS-managed
#: policy AWSCloud9SSMInstanceProfile and the Session Manager guide's custom instance profile.
SESSION_MANAGER_ACTIONS = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]
#: What the agent needs to receive and answer Run Command (`imgsearch aws update`).
RUN_COMMAND_ACTIONS = [
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
]


def trust_policy() -> dict[str, Any]:
    """Only EC2 may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def app_policy(ctx: AwsContext) -> dict[str, Any]:
    """ECR pull of this repository, objects under this bucket's images prefix, Session Manager."""
    repo_arn = ctx.arn("ecr", f"repository/{ctx.names.repository}", ctx.region, ctx.account_id)
    bucket_arn = f"arn:{ctx.partition}:s3:::{ctx.names.bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The token call has no resource-level permissions; "*" is the only option.
                "Sid": "EcrToken",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
            {
                "Sid": "EcrPull",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                "Resource": repo_arn,
            },
            {
                "Sid": "ListImages",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{IMAGES_PREFIX}/*"]}},
            },
            {
                "Sid": "ImageObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"{bucket_arn}/{IMAGES_PREFIX}/*",
            },
            {
                # These calls have no resource-level permissions either.
                "Sid": "SessionManager",
                "Effect": "Allow",
                "Action": SESSION_MANAGER_ACTIONS,
                "Resource": "*",
            },
            {
                "Sid": "RunCommand",
                "Effect": "Allow",
                "Action": RUN_COMMAND_ACTIONS,
                "Resource": "*",
            },
        ],
    }


def ssm_policy_arn(ctx: AwsContext) -> str:
    """The AWS-managed policy earlier versions attached, in this partition."""
    return f"arn:{ctx.partition}:iam::aws:policy/{SSM_MANAGED_POLICY}"


def _missing(error: ClientError) -> bool:
    return str(error.response["Error"]["Code"]) == "NoSuchEntity"


def get_role(iam: Any, name: str) -> dict[str, Any] | None:
    """The role, or None."""
    try:
        return dict(iam.get_role(RoleName=name)["Role"])
    except ClientError as error:
        if _missing(error):
            return None
        raise


def get_instance_profile(iam: Any, name: str) -> dict[str, Any] | None:
    """The instance profile, or None."""
    try:
        return dict(iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"])
    except ClientError as error:
        if _missing(error):
            return None
        raise


def ensure_role(ctx: AwsContext, plan: Plan) -> str | None:
    """Create or fix the role and its instance profile; returns the profile ARN (None: dry run)."""
    iam = ctx.client("iam")
    names = ctx.names
    role = get_role(iam, names.role)
    if role is None:
        if plan.change("create", f"iam role {names.role} (trusted by ec2.amazonaws.com)"):
            iam.create_role(
                RoleName=names.role,
                AssumeRolePolicyDocument=json.dumps(trust_policy()),
                Description=f"imgsearch instance role ({names.deployment}, {ctx.region})",
                Tags=names.tags(),
            )
    elif not names.owns(role.get("Tags")):
        raise AwsError(
            f"iam role {names.role} exists but is not imgsearch's; rename the deployment."
        )
    else:
        plan.keep(f"iam role {names.role}")

    wanted = app_policy(ctx)
    current = _inline_policy(iam, names.role) if role else None
    what = f"inline policy {POLICY_NAME} (ecr pull, s3 on {names.bucket}/{IMAGES_PREFIX}/, ssm)"
    if current == wanted:
        plan.keep(what)
    elif plan.change("update" if current else "create", what):
        iam.put_role_policy(
            RoleName=names.role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(wanted)
        )

    ssm_arn = ssm_policy_arn(ctx)
    attached = (
        {
            p["PolicyArn"]
            for p in iam.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"]
        }
        if role
        else set()
    )
    if ssm_arn in attached and plan.change(
        "delete", f"detach {SSM_MANAGED_POLICY} (it may read every SSM parameter)"
    ):
        iam.detach_role_policy(RoleName=names.role, PolicyArn=ssm_arn)

    profile = get_instance_profile(iam, names.instance_profile)
    if profile is None:
        if plan.change("create", f"instance profile {names.instance_profile}"):
            profile = iam.create_instance_profile(
                InstanceProfileName=names.instance_profile, Tags=names.tags()
            )["InstanceProfile"]
    else:
        plan.keep(f"instance profile {names.instance_profile}")
    roles = [r["RoleName"] for r in (profile or {}).get("Roles", [])]
    if names.role in roles:
        plan.keep("role in instance profile")
    elif plan.change("create", f"add role {names.role} to the instance profile"):
        iam.add_role_to_instance_profile(
            InstanceProfileName=names.instance_profile, RoleName=names.role
        )
    return str(profile["Arn"]) if profile else None


def _inline_policy(iam: Any, role: str) -> dict[str, Any] | None:
    try:
        document = iam.get_role_policy(RoleName=role, PolicyName=POLICY_NAME)["PolicyDocument"]
    except ClientError as error:
        if _missing(error):
            return None
        raise
    # boto3 decodes the URL-encoded JSON into a dict; some emulators hand back the string.
    return dict(json.loads(document) if isinstance(document, str) else document)


def delete_role(ctx: AwsContext, plan: Plan) -> None:
    """Remove the profile and the role, only when they carry this deployment's tag."""
    iam = ctx.client("iam")
    names = ctx.names
    profile = get_instance_profile(iam, names.instance_profile)
    if profile is not None:
        if not names.owns(profile.get("Tags")):
            raise AwsError(
                f"instance profile {names.instance_profile} is not imgsearch's; not deleting it."
            )
        if plan.change("delete", f"instance profile {names.instance_profile}"):
            for role in profile.get("Roles", []):
                iam.remove_role_from_instance_profile(
                    InstanceProfileName=names.instance_profile, RoleName=role["RoleName"]
                )
            iam.delete_instance_profile(InstanceProfileName=names.instance_profile)
    role = get_role(iam, names.role)
    if role is None:
        return
    if not names.owns(role.get("Tags")):
        raise AwsError(f"iam role {names.role} is not imgsearch's; not deleting it.")
    if plan.change("delete", f"iam role {names.role} and its policies"):
        for policy in iam.list_role_policies(RoleName=names.role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=names.role, PolicyName=policy)
        for attached in iam.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=names.role, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=names.role)
