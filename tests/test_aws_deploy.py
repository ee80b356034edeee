"""`deploy`, `update`, `status`, `destroy` end to end against moto."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from aws.deploy import decode_user_data, deploy, update
from aws.destroy import destroy
from aws.errors import AwsError
from aws.iam import POLICY_NAME
from aws.plan import Plan
from aws.status import status
from aws.userdata import UserDataInputs, render_user_data
from tests.test_aws_helpers import (
    MY_CIDR,
    REGION,
    aws_settings,
    context,
    instant,
    isolate_aws_env,
    put_image,
)

ACCOUNT = "123456789012"


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    isolate_aws_env(monkeypatch)
    with mock_aws():
        boto3.client("ecr", region_name=REGION).create_repository(repositoryName="imgsearch")
        put_image("imgsearch", "latest")
        yield


def _plan(dry_run: bool = False) -> Plan:
    return Plan("test", dry_run=dry_run, out=io.StringIO())


def _live_instances() -> list[dict]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]


def _deploy(**aws: object) -> tuple[str, Plan]:
    settings = aws_settings(**aws)
    plan = _plan()
    url = deploy(context(settings), settings, plan, instant())
    return url, plan


def test_deploy_starts_one_hardened_instance_and_prints_its_url() -> None:
    url, _ = _deploy()
    [instance] = _live_instances()
    assert url == f"http://{instance['PublicIpAddress']}:8501/"
    assert instance["InstanceType"] == "t3.large"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    ami = boto3.client("ssm", region_name=REGION).get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    )["Parameter"]["Value"]
    assert instance["ImageId"] == ami
    assert "KeyName" not in instance
    assert instance["IamInstanceProfile"]["Arn"].endswith(
        f"instance-profile/imgsearch-ec2-{REGION}"
    )
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {
        "Name": "imgsearch",
        "imgsearch:deployment": "imgsearch",
        "ManagedBy": "imgsearch",
        "imgsearch:image-tag": "latest",
    }


def test_data_volume_is_encrypted_gp3_of_the_configured_size_and_tagged() -> None:
    _deploy(volume_gb=80)
    volumes = boto3.client("ec2", region_name=REGION).describe_volumes()["Volumes"]
    data = [v for v in volumes if v["Attachments"][0]["Device"] == "/dev/sdf"]
    assert len(data) == 1
    assert data[0]["Encrypted"] is True
    assert data[0]["Size"] == 80 and data[0]["VolumeType"] == "gp3"
    assert {"Key": "imgsearch:deployment", "Value": "imgsearch"} in data[0]["Tags"]


def test_security_group_opens_only_the_app_port_to_the_allowed_cidr() -> None:
    _deploy()
    ec2 = boto3.client("ec2", region_name=REGION)
    [group] = ec2.describe_security_groups(GroupNames=["imgsearch-app"])["SecurityGroups"]
    assert [
        (p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
        for p in group["IpPermissions"]
    ] == [("tcp", 8501, 8501, [MY_CIDR])]
    [instance] = _live_instances()
    groups = [g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]]
    assert groups == [group["GroupId"]]


def test_changing_the_allowed_cidr_replaces_the_rule_instead_of_adding_one() -> None:
    _deploy()
    _deploy(allowed_cidr="198.51.100.0/24")
    ec2 = boto3.client("ec2", region_name=REGION)
    [group] = ec2.describe_security_groups(GroupNames=["imgsearch-app"])["SecurityGroups"]
    cidrs = [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]]
    assert cidrs == ["198.51.100.0/24"]


def test_role_allows_ecr_pull_and_this_bucket_only_plus_session_manager() -> None:
    _deploy()
    iam = boto3.client("iam", region_name=REGION)
    role_name = f"imgsearch-ec2-{REGION}"
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    doc = iam.get_role_policy(RoleName=role_name, PolicyName=POLICY_NAME)["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    bucket = f"imgsearch-{ACCOUNT}-{REGION}"
    assert by_sid["EcrToken"]["Resource"] == "*"
    assert by_sid["EcrToken"]["Action"] == "ecr:GetAuthorizationToken"
    assert by_sid["EcrPull"]["Resource"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/imgsearch"
    assert set(by_sid["EcrPull"]["Action"]) == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    }
    assert by_sid["BucketList"]["Resource"] == f"arn:aws:s3:::{bucket}"
    assert by_sid["BucketObjects"]["Resource"] == f"arn:aws:s3:::{bucket}/*"
    assert all(
        a.startswith(("ecr:", "s3:"))
        for s in doc["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    assert not any(
        "*" in a
        for s in doc["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    ]


def test_user_data_installs_docker_logs_in_with_v2_and_runs_with_restart_and_data_volume() -> None:
    _deploy()
    [instance] = _live_instances()
    script = decode_user_data(boto3.client("ec2", region_name=REGION), instance["InstanceId"])
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    assert script.startswith("#!/bin/bash\n")
    assert "dnf install -y docker" in script
    assert "systemctl enable --now docker" in script
    assert f"aws ecr get-login-password --region {REGION}" in script
    assert f"docker login --username AWS --password-stdin {registry}" in script
    # The AWS CLI v1 command `aws ecr get-login` no longer exists.
    assert not re.search(r"ecr get-login(\s|$)", script)
    assert "--restart unless-stopped" in script
    assert "-v /data:/data" in script and "-p 8501:8501" in script
    assert f"IMGSEARCH_STORAGE__URL=s3://imgsearch-{ACCOUNT}-{REGION}/images" in script
    assert f"IMGSEARCH_S3__REGION={REGION}" in script
    assert f"/usr/local/bin/imgsearch-run {registry}/imgsearch:latest" in script
    assert "mkfs -t xfs" in script and "nofail" in script
    assert "chown 10001:10001 /data" in script


def test_user_data_is_valid_bash() -> None:
    script = render_user_data(
        UserDataInputs(REGION, "1.dkr.ecr.x.amazonaws.com", "1.dkr.ecr.x/i:t", "b", 8501)
    )
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_second_deploy_creates_nothing_and_keeps_one_instance() -> None:
    first_url, first = _deploy()
    second_url, second = _deploy()
    assert first.changes and second.changes == []
    assert len(_live_instances()) == 1
    assert second_url == first_url


def test_deploy_refuses_without_the_image_in_ecr() -> None:
    settings = aws_settings(image_tag="v9")
    with pytest.raises(
        AwsError, match=r"imgsearch:v9 is not in ECR .*run `imgsearch aws ecr` first"
    ):
        deploy(context(settings), settings, _plan(), instant())
    assert _live_instances() == []


def test_dry_run_deploy_prints_the_plan_and_creates_nothing() -> None:
    settings = aws_settings()
    plan = _plan(dry_run=True)
    assert deploy(context(settings), settings, plan, instant()) == ""
    text = plan.out.getvalue()  # type: ignore[attr-defined]
    assert "ec2 instance t3.large" in text and "iam role" in text
    assert _live_instances() == []
    assert boto3.client("iam").list_roles()["Roles"] == []


def test_deploy_waits_for_the_health_url_and_fails_in_one_sentence_when_it_never_answers() -> None:
    settings = aws_settings()
    probed: list[str] = []
    ticks = iter(range(0, 10_000, 60))

    def never(url: str) -> bool:
        probed.append(url)
        return False

    waiting = instant(probe=never, health_timeout_s=600, clock=lambda: float(next(ticks)))
    with pytest.raises(AwsError, match=r"did not answer at http://.*:8501/ within 10 minutes"):
        deploy(context(settings), settings, _plan(), waiting)
    assert probed and probed[0].endswith(":8501/")


def test_closed_default_cidr_skips_the_health_wait_and_explains_port_forwarding() -> None:
    settings = aws_settings(allowed_cidr="0.0.0.0/32")
    plan = _plan()
    deploy(context(settings), settings, plan, instant(probe=lambda _u: pytest.fail("probed")))
    assert "AWS-StartPortForwardingSession" in plan.out.getvalue()  # type: ignore[attr-defined]


def test_key_pair_is_used_only_when_configured() -> None:
    boto3.client("ec2", region_name=REGION).create_key_pair(KeyName="mine")
    _deploy(key_name="mine")
    [instance] = _live_instances()
    assert instance["KeyName"] == "mine"


def test_update_runs_the_new_tag_through_ssm_and_retags_the_instance() -> None:
    _deploy()
    put_image("imgsearch", "v2")
    settings = aws_settings(image_tag="v2")
    image = update(context(settings), settings, _plan(), instant())
    assert image.endswith("/imgsearch:v2")
    [instance] = _live_instances()
    assert {"Key": "imgsearch:image-tag", "Value": "v2"} in instance["Tags"]
    commands = boto3.client("ssm", region_name=REGION).list_commands()["Commands"]
    assert commands[-1]["DocumentName"] == "AWS-RunShellScript"
    assert commands[-1]["Parameters"]["commands"] == [f"/usr/local/bin/imgsearch-run {image}"]
    assert commands[-1]["InstanceIds"] == [instance["InstanceId"]]


def test_update_without_a_deployment_says_to_deploy_first() -> None:
    settings = aws_settings()
    with pytest.raises(AwsError, match=r"run `imgsearch aws deploy` first"):
        update(context(settings), settings, _plan(), instant())


def test_status_lists_the_instance_url_and_health() -> None:
    url, _ = _deploy()
    out = io.StringIO()
    settings = aws_settings()
    assert status(context(settings), settings, out, probe=lambda _u: True) is True
    text = out.getvalue()
    assert "image tag latest" in text and url in text and "answers" in text
    assert f"tcp 8501 from {MY_CIDR}" in text


def test_destroy_leaves_nothing_of_the_deployment_and_keeps_bucket_and_repository() -> None:
    _deploy()
    settings = aws_settings()
    destroy(context(settings), _plan(), delete_bucket=False, delete_repository=False)
    ec2 = boto3.client("ec2", region_name=REGION)
    iam = boto3.client("iam")
    assert _live_instances() == []
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["imgsearch-app"]}])[
            "SecurityGroups"
        ]
        == []
    )
    assert ec2.describe_volumes()["Volumes"] == []
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    s3 = boto3.client("s3", region_name=REGION)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [f"imgsearch-{ACCOUNT}-{REGION}"]
    again = _plan()
    destroy(context(settings), again, delete_bucket=False, delete_repository=False)
    assert again.changes == []


def test_destroy_with_flags_removes_bucket_and_tagged_repository() -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.delete_repository(repositoryName="imgsearch", force=True)
    settings = aws_settings()
    from aws.ecr import ensure_repository

    ensure_repository(context(settings), 10, _plan())
    put_image("imgsearch", "latest")
    _deploy()
    destroy(context(settings), _plan(), delete_bucket=True, delete_repository=True)
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
    assert ecr.describe_repositories()["repositories"] == []


def test_destroy_leaves_an_untagged_repository_alone() -> None:
    settings = aws_settings()
    with pytest.raises(AwsError, match="not imgsearch's"):
        destroy(context(settings), _plan(), delete_bucket=False, delete_repository=True)
    assert boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"]


def test_destroy_dry_run_deletes_nothing() -> None:
    _deploy()
    settings = aws_settings()
    plan = _plan(dry_run=True)
    destroy(context(settings), plan, delete_bucket=True, delete_repository=False)
    assert {s.action for s in plan.changes} == {"delete"}
    assert len(_live_instances()) == 1
    assert boto3.client("iam").list_roles()["Roles"]
