"""The ECR repository (scan on push, lifecycle) and the build, login and push of the image."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from .clients import AwsContext
from .docker import DockerCli
from .errors import AwsError
from .plan import Plan

#: Image platform of the default (x86_64) instance types.
PLATFORM = "linux/amd64"


def lifecycle_policy(keep_images: int) -> dict[str, Any]:
    """Expire all but the newest `keep_images` images, so storage cost stays bounded."""
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep the last {keep_images} images",
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_images,
                },
                "action": {"type": "expire"},
            }
        ]
    }


def find_repository(ecr: Any, name: str) -> dict[str, Any] | None:
    """The repository's description, or None when it does not exist."""
    try:
        return dict(ecr.describe_repositories(repositoryNames=[name])["repositories"][0])
    except ClientError as error:
        if error.response["Error"]["Code"] == "RepositoryNotFoundException":
            return None
        raise


def ensure_repository(ctx: AwsContext, keep_images: int, plan: Plan) -> str:
    """Create or fix the repository; returns its URI (a placeholder in a dry run)."""
    ecr = ctx.client("ecr")
    name = ctx.names.repository
    repo = find_repository(ecr, name)
    if repo is not None:
        plan.keep(f"ecr repository {name}")
    elif plan.change("create", f"ecr repository {name} (scan on push, AES256)"):
        repo = ecr.create_repository(
            repositoryName=name,
            imageTagMutability="MUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=[{"Key": t["Key"], "Value": t["Value"]} for t in ctx.names.tags()],
        )["repository"]

    scanning = (repo or {}).get("imageScanningConfiguration", {}).get("scanOnPush")
    if repo is not None and not scanning and plan.change("update", "scan on push"):
        ecr.put_image_scanning_configuration(
            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
        )

    wanted = lifecycle_policy(keep_images)
    current = _lifecycle(ecr, name) if repo is not None else None
    if current == wanted:
        plan.keep(f"lifecycle policy: keep the last {keep_images} images")
    elif plan.change("update" if current else "create", f"lifecycle: keep last {keep_images}"):
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps(wanted))

    if repo is None:
        return f"{ctx.account_id}.dkr.ecr.{ctx.region}.amazonaws.com/{name}"
    return str(repo["repositoryUri"])


def _lifecycle(ecr: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(
            json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "LifecyclePolicyNotFoundException":
            return None
        raise


def image_exists(ctx: AwsContext, tag: str) -> str:
    """The image URI when `repository:tag` is in ECR; otherwise says to run `imgsearch aws ecr`."""
    ecr = ctx.client("ecr")
    repo = find_repository(ecr, ctx.names.repository)
    missing = AwsError(
        f"image {ctx.names.repository}:{tag} is not in ECR in {ctx.region}: "
        "run `imgsearch aws ecr` first."
    )
    if repo is None:
        raise missing
    try:
        ecr.describe_images(repositoryName=ctx.names.repository, imageIds=[{"imageTag": tag}])
    except ClientError as error:
        if error.response["Error"]["Code"] == "ImageNotFoundException":
            raise missing from error
        raise
    return f"{repo['repositoryUri']}:{tag}"


def registry_login(ctx: AwsContext, docker: DockerCli) -> str:
    """Log docker into ECR with a token from the API (the CLI's get-login is gone)."""
    data = ctx.client("ecr").get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = str(data["proxyEndpoint"]).removeprefix("https://")
    docker.login(registry, username, password)
    return registry


def find_context(explicit: Path | None) -> Path:
    """The build context: the given folder, else the working directory or this checkout."""
    candidates = [explicit] if explicit else [Path.cwd(), Path(__file__).resolve().parents[1]]
    for folder in candidates:
        if folder is not None and (folder / "docker" / "Dockerfile").is_file():
            return folder
    raise AwsError("no docker/Dockerfile found: run from the imgsearch checkout or pass --context.")


def build_and_push(
    ctx: AwsContext,
    docker: DockerCli,
    repository_uri: str,
    tag: str,
    context: Path,
    torch_variant: str,
    plan: Plan,
) -> str:
    """Build, tag and push `repository_uri:tag`; in a dry run docker is never called."""
    local = f"{ctx.names.repository}:{tag}"
    remote = f"{repository_uri}:{tag}"
    steps = [
        "docker info (is an engine answering?)",
        f"docker login {repository_uri.split('/')[0]} (token from the ECR API)",
        f"docker build --platform {PLATFORM} -t {local} (torch: {torch_variant})",
        f"docker tag {local} {remote}",
        f"docker push {remote}",
    ]
    if plan.dry_run:
        for what in steps:
            plan.change("run", what)
        return remote
    plan.change("run", steps[0])
    docker.check_engine()
    plan.change("run", steps[1])
    registry_login(ctx, docker)
    plan.change("run", steps[2])
    dockerfile = context / "docker" / "Dockerfile"
    docker.build(context, dockerfile, local, {"TORCH_VARIANT": torch_variant}, PLATFORM)
    plan.change("run", steps[3])
    docker.tag(local, remote)
    plan.change("run", steps[4])
    docker.push(remote)
    return remote
