"""`deploy`, `update`, `status`, `destroy` end to end against moto."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from aws.deploy import decode_user_data, deploy, update
from aws.destroy import destroy
from aws.errors import AwsError
from aws.iam import POLICY_NAME, ensure_role, ssm_policy_arn, trust_policy
from aws.plan import Plan
from aws.status import status
from aws.userdata import UserDataInputs, render_user_data
from tests.test_aws_helpers import (
    MY_CIDR,
    REGION,
    Ec2Idempotency,
    Recorder,
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
    # The index and run state outlive the instance: terminating it leaves the volume.
    [instance] = _live_instances()
    kept = {
        m["DeviceName"]: m["Ebs"]["DeleteOnTermination"] for m in instance["BlockDeviceMappings"]
    }
    assert kept["/dev/sdf"] is False and kept["/dev/xvda"] is True


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


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_role_allows_ecr_pull_the_images_prefix_and_session_manager_only() -> None:
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
    # S3: objects under images/ and listing of that prefix, nothing else in the bucket.
    s3_statements = [s for s in doc["Statement"] if _actions(s)[0].startswith("s3:")]
    assert {(a, s["Resource"]) for s in s3_statements for a in _actions(s)} == {
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/images/*"),
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/images/*"),
        ("s3:DeleteObject", f"arn:aws:s3:::{bucket}/images/*"),
    }
    assert by_sid["ListImages"]["Condition"] == {"StringLike": {"s3:prefix": ["images/*"]}}
    # Session Manager and Run Command, without AmazonSSMManagedInstanceCore's other rights.
    actions = {a for s in doc["Statement"] for a in _actions(s)}
    ssm = {a for a in actions if a.startswith(("ssm:", "ssmmessages:", "ec2messages:"))}
    assert ssm == {
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
        "ec2messages:AcknowledgeMessage",
        "ec2messages:DeleteMessage",
        "ec2messages:FailMessage",
        "ec2messages:GetEndpoint",
        "ec2messages:GetMessages",
        "ec2messages:SendReply",
    }
    assert not any(a.startswith("ssm:GetParameter") for a in actions)
    assert not any("*" in a for a in actions)
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []


def test_a_role_from_an_earlier_version_loses_the_broad_ssm_managed_policy() -> None:
    settings = aws_settings()
    ctx = context(settings)
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(
        RoleName=ctx.names.role,
        AssumeRolePolicyDocument=json.dumps(trust_policy()),
        Tags=ctx.names.tags(),
    )
    iam.attach_role_policy(RoleName=ctx.names.role, PolicyArn=ssm_policy_arn(ctx))
    plan = _plan()
    ensure_role(ctx, plan)
    assert iam.list_attached_role_policies(RoleName=ctx.names.role)["AttachedPolicies"] == []
    assert "detach AmazonSSMManagedInstanceCore" in plan.out.getvalue()  # type: ignore[attr-defined]


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
    [line] = commands[-1]["Parameters"]["commands"]
    assert shlex.split(line) == ["/usr/local/bin/imgsearch-run", image]
    assert commands[-1]["InstanceIds"] == [instance["InstanceId"]]


def test_update_refuses_a_tag_a_shell_would_read_before_sending_anything() -> None:
    _deploy()
    put_image("imgsearch", "v2;reboot")
    settings = aws_settings(image_tag="v2;reboot")
    with pytest.raises(AwsError, match=r"image tag 'v2;reboot' is not a Docker tag"):
        update(context(settings), settings, _plan(), instant())
    assert boto3.client("ssm", region_name=REGION).list_commands()["Commands"] == []


def test_update_quotes_what_it_puts_in_the_shell_command() -> None:
    _deploy()
    recorder = Recorder()
    settings = aws_settings()
    ctx = context(settings, recorder.attach(boto3.session.Session()))
    image = update(ctx, settings, _plan(), instant())
    [sent] = recorder.of("ssm", "SendCommand")
    assert sent["Parameters"]["commands"] == [shlex.join(["/usr/local/bin/imgsearch-run", image])]


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


def _volumes() -> list[dict[str, Any]]:
    return list(boto3.client("ec2", region_name=REGION).describe_volumes()["Volumes"])


def _data_volume(instance: dict[str, Any]) -> str:
    [volume] = [
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == "/dev/sdf"
    ]
    return str(volume)


def test_destroy_removes_the_deployment_but_keeps_data_volume_bucket_and_repository() -> None:
    _deploy()
    [instance] = _live_instances()
    data = _data_volume(instance)
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
    # The root volume went with the instance; the data volume (index, state) stays.
    assert [(v["VolumeId"], v["State"]) for v in _volumes()] == [(data, "available")]
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    s3 = boto3.client("s3", region_name=REGION)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [f"imgsearch-{ACCOUNT}-{REGION}"]
    out = io.StringIO()
    status(context(settings), settings, out, probe=None)
    assert f"{data}: 50 GB, detached" in out.getvalue()
    again = _plan()
    destroy(context(settings), again, delete_bucket=False, delete_repository=False)
    assert again.changes == []


def test_the_next_deploy_reattaches_the_kept_data_volume() -> None:
    _deploy()
    [first] = _live_instances()
    data = _data_volume(first)
    settings = aws_settings()
    destroy(context(settings), _plan(), delete_bucket=False, delete_repository=False)
    _, plan = _deploy()
    [second] = _live_instances()
    assert second["InstanceId"] != first["InstanceId"]
    volume = boto3.client("ec2", region_name=REGION).describe_volumes(VolumeIds=[data])
    [attachment] = volume["Volumes"][0]["Attachments"]
    assert (attachment["InstanceId"], attachment["Device"]) == (second["InstanceId"], "/dev/sdf")
    assert len(_volumes()) == 2  # the new root volume and the old data volume
    assert f"attach {data} as /dev/sdf" in plan.out.getvalue()  # type: ignore[attr-defined]


def test_destroy_with_delete_data_and_snapshot_keeps_a_tagged_copy_only() -> None:
    _deploy()
    data = _data_volume(_live_instances()[0])
    settings = aws_settings()
    destroy(
        context(settings),
        _plan(),
        delete_bucket=False,
        delete_repository=False,
        delete_data=True,
        snapshot=True,
    )
    assert _volumes() == []
    ec2 = boto3.client("ec2", region_name=REGION)
    [snapshot] = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:imgsearch:deployment", "Values": ["imgsearch"]}]
    )["Snapshots"]
    assert snapshot["VolumeId"] == data


def test_destroy_with_delete_data_leaves_no_volume() -> None:
    _deploy()
    settings = aws_settings()
    destroy(context(settings), _plan(), False, False, delete_data=True)
    assert _volumes() == []
    ec2 = boto3.client("ec2", region_name=REGION)
    ours = [{"Name": "tag:imgsearch:deployment", "Values": ["imgsearch"]}]
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=ours)["Snapshots"] == []


def test_two_deploys_that_race_start_one_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both deploys looked for the instance before either had launched it.
    monkeypatch.setattr("aws.deploy.find_instances", lambda _ctx, _ec2, _states=None: [])
    account = Ec2Idempotency()
    settings = aws_settings()
    urls = [
        deploy(
            context(settings, account.attach(boto3.session.Session())), settings, _plan(), instant()
        )
        for _ in range(2)
    ]
    assert len(_live_instances()) == 1
    assert urls[0] == urls[1]


def test_a_deploy_after_the_instance_was_terminated_by_hand_starts_a_new_one() -> None:
    account = Ec2Idempotency()
    settings = aws_settings()
    deploy(context(settings, account.attach(boto3.session.Session())), settings, _plan(), instant())
    [first] = _live_instances()
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    deploy(context(settings, account.attach(boto3.session.Session())), settings, _plan(), instant())
    [second] = _live_instances()
    assert second["InstanceId"] != first["InstanceId"]
    assert len(account.launched) == 2


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
