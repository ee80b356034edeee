"""Names and tags of everything the aws commands make, derived from settings in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from config import AwsSettings

from .errors import AwsError

#: Tag key that marks what a deployment owns; destroy only touches resources carrying it.
DEPLOYMENT_TAG = "imgsearch:deployment"
#: Tag key on the instance recording which image tag it runs.
IMAGE_TAG_TAG = "imgsearch:image-tag"
#: The one prefix of the bucket the app uses; the instance role reaches nothing else.
IMAGES_PREFIX = "images"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Docker's tag grammar and ECR's repository grammar: nothing a shell would read specially.
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")


@dataclass(frozen=True)
class Names:
    """Resource names of one deployment in one account and region."""

    deployment: str
    region: str
    account_id: str
    bucket: str
    repository: str
    role: str
    instance_profile: str
    security_group: str

    def tags(self, **extra: str) -> list[dict[str, str]]:
        """Tags in the EC2/IAM/ECR list form: Name, owner marker, and any extras."""
        tags = {"Name": self.deployment, DEPLOYMENT_TAG: self.deployment, "ManagedBy": "imgsearch"}
        tags.update(extra)
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def owns(self, tags: list[dict[str, str]] | None) -> bool:
        """True when a resource's tags mark it as this deployment's."""
        return any(
            t.get("Key") == DEPLOYMENT_TAG and t.get("Value") == self.deployment for t in tags or []
        )


def make_names(aws: AwsSettings, region: str, account_id: str) -> Names:
    """Derive every resource name; IAM is global, so its names carry the region."""
    if not _NAME.match(aws.name):
        raise AwsError(
            f"IMGSEARCH_AWS__NAME={aws.name!r} must be 2-32 lowercase letters, digits or dashes."
        )
    if not _IMAGE_TAG.match(aws.image_tag):
        raise AwsError(
            f"image tag {aws.image_tag!r} is not a Docker tag: use letters, digits, '_', '.', '-'."
        )
    if len(aws.repository) > 256 or not _REPOSITORY.match(aws.repository):
        raise AwsError(
            f"IMGSEARCH_AWS__REPOSITORY={aws.repository!r} is not an ECR repository name "
            "(lowercase letters, digits, and . _ - / between them)."
        )
    bucket = aws.bucket or f"{aws.name}-{account_id}-{region}"
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise AwsError(f"bucket name {bucket!r} is not a valid S3 bucket name.")
    role = f"{aws.name}-ec2-{region}"
    return Names(
        deployment=aws.name,
        region=region,
        account_id=account_id,
        bucket=bucket,
        repository=aws.repository,
        role=role,
        instance_profile=role,
        security_group=f"{aws.name}-app",
    )
