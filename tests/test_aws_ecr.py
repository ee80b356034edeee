"""`imgsearch aws ecr`: repository settings, API-token login, and docker calls through the seam."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from aws.docker import DockerCli
from aws.ecr import build_and_push, ensure_repository, image_exists
from aws.errors import AwsError, DockerError
from aws.plan import Plan
from tests.test_aws_helpers import REGION, aws_settings, context, isolate_aws_env, put_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    isolate_aws_env(monkeypatch)
    with mock_aws():
        yield


class Recorder:
    """A docker runner that records argv and stdin; `fail` names subcommands that exit 1."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail = fail

    def __call__(
        self, argv: Sequence[str], stdin: str | None, capture: bool
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), stdin))
        code = 1 if argv[1] in self.fail else 0
        err = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" if code else ""
        return subprocess.CompletedProcess(list(argv), code, "", err)


def _plan(dry_run: bool = False) -> Plan:
    return Plan("test", dry_run=dry_run, out=io.StringIO())


def test_repository_scans_on_push_and_keeps_the_last_n_images() -> None:
    ctx = context(aws_settings(keep_images=7))
    uri = ensure_repository(ctx, 7, _plan())
    assert uri == f"123456789012.dkr.ecr.{REGION}.amazonaws.com/imgsearch"
    ecr = boto3.client("ecr", region_name=REGION)
    repo = ecr.describe_repositories(repositoryNames=["imgsearch"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    policy = json.loads(ecr.get_lifecycle_policy(repositoryName="imgsearch")["lifecyclePolicyText"])
    rule = policy["rules"][0]
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["countNumber"] == 7
    assert rule["action"] == {"type": "expire"}
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert {"Key": "imgsearch:deployment", "Value": "imgsearch"} in tags


def test_second_run_changes_nothing_but_a_new_keep_count_updates_the_policy() -> None:
    ctx = context(aws_settings())
    ensure_repository(ctx, 10, _plan())
    again = _plan()
    ensure_repository(ctx, 10, again)
    assert again.changes == []
    changed = _plan()
    ensure_repository(ctx, 3, changed)
    assert [s.action for s in changed.changes] == ["update"]


def test_build_logs_in_with_the_api_token_on_stdin_then_builds_tags_and_pushes() -> None:
    ctx = context(aws_settings())
    uri = ensure_repository(ctx, 10, _plan())
    runner = Recorder()
    image = build_and_push(ctx, DockerCli(runner=runner), uri, "v1", ROOT, "cpu", _plan())
    assert image == f"{uri}:v1"
    commands = [argv[1] for argv, _ in runner.calls]
    assert commands == ["info", "login", "build", "tag", "push"]
    login_argv, login_stdin = runner.calls[1]
    assert login_argv[-1] == f"123456789012.dkr.ecr.{REGION}.amazonaws.com"
    assert "--password-stdin" in login_argv and login_argv[login_argv.index("--username") + 1]
    assert login_stdin  # the password travels on stdin, never in argv
    assert login_stdin not in " ".join(login_argv)
    build = runner.calls[2][0]
    assert build[build.index("--platform") + 1] == "linux/amd64"
    assert build[build.index("-f") + 1] == str(ROOT / "docker" / "Dockerfile")
    assert "TORCH_VARIANT=cpu" in build and build[-1] == str(ROOT)
    assert runner.calls[3][0][2:] == ["imgsearch:v1", f"{uri}:v1"]
    assert runner.calls[4][0][2:] == [f"{uri}:v1"]


def test_dry_run_never_calls_docker_and_creates_no_repository() -> None:
    ctx = context(aws_settings())
    plan = _plan(dry_run=True)
    uri = ensure_repository(ctx, 10, plan)
    runner = Recorder()
    build_and_push(ctx, DockerCli(runner=runner), uri, "latest", ROOT, "cpu", plan)
    assert runner.calls == []
    assert "docker push" in plan.out.getvalue()  # type: ignore[attr-defined]
    assert boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"] == []


def test_no_engine_is_one_sentence_and_stops_before_login() -> None:
    ctx = context(aws_settings())
    uri = ensure_repository(ctx, 10, _plan())
    runner = Recorder(fail=("info",))
    with pytest.raises(DockerError) as caught:
        build_and_push(ctx, DockerCli(runner=runner), uri, "latest", ROOT, "cpu", _plan())
    assert str(caught.value) == (
        "no Docker engine answers (`docker info` failed): start Docker and try again."
    )
    assert [argv[1] for argv, _ in runner.calls] == ["info"]


def test_missing_docker_cli_is_one_sentence() -> None:
    def missing(
        argv: Sequence[str], stdin: str | None, capture: bool
    ) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    with pytest.raises(DockerError, match="not on PATH"):
        DockerCli(runner=missing).check_engine()


def test_failed_push_names_the_command() -> None:
    ctx = context(aws_settings())
    uri = ensure_repository(ctx, 10, _plan())
    with pytest.raises(DockerError, match="`docker push` failed with exit code 1"):
        build_and_push(
            ctx, DockerCli(runner=Recorder(fail=("push",))), uri, "x", ROOT, "cpu", _plan()
        )


def test_image_check_says_to_run_ecr_first_until_the_tag_is_pushed() -> None:
    ctx = context(aws_settings())
    with pytest.raises(AwsError, match=r"run `imgsearch aws ecr` first"):
        image_exists(ctx, "latest")
    ensure_repository(ctx, 10, _plan())
    with pytest.raises(AwsError, match=r"imgsearch:latest is not in ECR"):
        image_exists(ctx, "latest")
    put_image("imgsearch", "latest")
    assert image_exists(ctx, "latest").endswith("/imgsearch:latest")
