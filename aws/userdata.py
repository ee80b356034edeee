"""The instance's first-boot script: Docker, the data volume, and the image run from ECR."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .names import IMAGES_PREFIX

#: uid/gid of the non-root user in the image; the data volume is handed to it.
CONTAINER_UID = 10001
#: Device name the data volume is attached as; AL2023's udev rules link NVMe disks to it.
DATA_DEVICE = "/dev/sdf"
#: Script on the instance that pulls an image and (re)starts the container; `update` calls it.
RUN_SCRIPT = "/usr/local/bin/imgsearch-run"
#: Extra settings the user may add on the instance (IMGSEARCH_SOURCES etc.).
ENV_FILE = "/etc/imgsearch/imgsearch.env"


@dataclass(frozen=True)
class UserDataInputs:
    """Everything the script needs; all of it is rendered shell-quoted."""

    region: str
    registry: str
    image: str
    bucket: str
    app_port: int
    container_name: str = "imgsearch"


def container_env(inputs: UserDataInputs) -> dict[str, str]:
    """Settings the container gets on EC2: images in S3, region for boto3 inside it."""
    return {
        "IMGSEARCH_STORAGE__URL": f"s3://{inputs.bucket}/{IMAGES_PREFIX}",
        "IMGSEARCH_S3__REGION": inputs.region,
        "AWS_REGION": inputs.region,
        "AWS_DEFAULT_REGION": inputs.region,
    }


def run_script(inputs: UserDataInputs) -> str:
    """`imgsearch-run IMAGE`: log into ECR, pull, replace the container with a restart policy."""
    q = shlex.quote
    env_flags = " ".join(f"-e {q(f'{k}={v}')}" for k, v in container_env(inputs).items())
    name = q(inputs.container_name)
    return f"""#!/bin/bash
# Pull an imgsearch image from ECR and (re)start the container with it.
set -euo pipefail
IMAGE="${{1:?usage: imgsearch-run IMAGE}}"
# AWS CLI v2's get-login-password (v1's get-login no longer exists); creds from the instance role.
aws ecr get-login-password --region {q(inputs.region)} \\
  | docker login --username AWS --password-stdin {q(inputs.registry)}
docker pull "$IMAGE"
docker rm -f {name} >/dev/null 2>&1 || true
docker run -d --name {name} --restart unless-stopped \\
  -p {inputs.app_port}:8501 \\
  -v /data:/data \\
  --env-file {ENV_FILE} \\
  {env_flags} \\
  --log-opt max-size=20m --log-opt max-file=5 \\
  "$IMAGE"
echo "$IMAGE" > /etc/imgsearch/image
# Old images would fill the root volume after a few updates.
docker image prune -f >/dev/null
"""


def render_user_data(inputs: UserDataInputs) -> str:
    """The cloud-init shell script (runs once, as root, on first boot)."""
    q = shlex.quote
    return f"""#!/bin/bash
# imgsearch one-box deployment: Docker, the encrypted data volume at /data, the app container.
set -euo pipefail
exec > >(tee -a /var/log/imgsearch-user-data.log) 2>&1

dnf install -y docker
command -v aws >/dev/null || dnf install -y awscli-2
systemctl enable --now docker

# The data volume may show up after boot, as {DATA_DEVICE} or its xvd alias: a volume kept from an
# earlier deployment is attached once the instance runs.
for _ in $(seq 1 300); do
  for candidate in {DATA_DEVICE} /dev/xvd{DATA_DEVICE[-1]}; do
    if [ -e "$candidate" ]; then DEVICE=$(readlink -f "$candidate"); break 2; fi
  done
  sleep 2
done
: "${{DEVICE:?the data volume {DATA_DEVICE} never appeared}}"
# Format only a blank volume, so a re-run never wipes data.
if ! blkid "$DEVICE" >/dev/null 2>&1; then mkfs -t xfs "$DEVICE"; fi
mkdir -p /data
UUID=$(blkid -s UUID -o value "$DEVICE")
grep -q "$UUID" /etc/fstab || echo "UUID=$UUID /data xfs defaults,nofail 0 2" >> /etc/fstab
mountpoint -q /data || mount /data
chown {CONTAINER_UID}:{CONTAINER_UID} /data

mkdir -p /etc/imgsearch
touch {ENV_FILE}
chmod 600 {ENV_FILE}

cat > {RUN_SCRIPT} <<'IMGSEARCH_RUN'
{run_script(inputs)}IMGSEARCH_RUN
chmod 755 {RUN_SCRIPT}

{RUN_SCRIPT} {q(inputs.image)}
"""
