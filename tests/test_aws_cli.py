"""The `imgsearch aws` commands as a new user runs them: against moto's HTTP server on loopback."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from aws.cli import register
from config import Settings
from tests.test_aws_helpers import MY_CIDR, REGION, aws_settings, isolate_aws_env

ROOT = Path(__file__).resolve().parents[1]

# A docker CLI stand-in: logs its argv, and on `push` stores a manifest in (moto's) ECR the way
# a real push would, so `deploy` then finds the image.
FAKE_DOCKER = """#!{python}
import json, os, sys
import boto3
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "login":
    sys.stdin.read()
if sys.argv[1] == "push":
    uri, tag = sys.argv[2].rsplit(":", 1)
    registry, repo = uri.split("/", 1)
    region = registry.split(".")[3]
    manifest = {{"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {{"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": 1, "digest": "sha256:" + "b" * 64}}, "layers": []}}
    ecr = boto3.client("ecr", region_name=region)
    ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server on a free loopback port, with AWS_ENDPOINT_URL pointing at it."""
    isolate_aws_env(monkeypatch)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto's state is per process: start each test from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` executable first on PATH; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "docker.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def run(argv: list[str], settings: Settings) -> int:
    """Parse like app/cli.py does after `register`, then call the handler."""
    parser = argparse.ArgumentParser(prog="imgsearch")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args, settings))


def _docker_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _live_instances() -> list[dict]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]


def test_a_new_user_goes_from_bucket_to_url_and_back_to_nothing(
    moto_endpoint: str, fake_docker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The region comes from AWS_REGION alone, as for a user with a configured profile.
    settings = aws_settings(region="")

    assert run(["aws", "bucket"], settings) == 0
    assert boto3.client("s3", region_name=REGION).head_bucket(
        Bucket=f"imgsearch-123456789012-{REGION}"
    )

    assert run(["aws", "ecr", "--dry-run", "--context", str(ROOT)], settings) == 0
    assert _docker_calls(fake_docker) == []
    assert "docker push" in capsys.readouterr().out

    assert run(["aws", "ecr", "--context", str(ROOT)], settings) == 0
    assert [c[0] for c in _docker_calls(fake_docker)] == ["info", "login", "build", "tag", "push"]

    assert run(["aws", "deploy", "--no-wait"], settings) == 0
    first = capsys.readouterr().out
    assert run(["aws", "deploy", "--no-wait"], settings) == 0
    second = capsys.readouterr().out
    assert len(_live_instances()) == 1
    assert "+ create" in first and "+ create" not in second
    url = first.strip().splitlines()[-1]
    assert url.startswith("http://") and url.endswith(":8501/")
    assert url == second.strip().splitlines()[-1]

    assert run(["aws", "status", "--no-probe"], settings) == 0
    text = capsys.readouterr().out
    assert "running" in text and url in text and f"from {MY_CIDR}" in text

    assert run(["aws", "destroy", "--yes"], settings) == 0
    assert _live_instances() == []
    assert boto3.client("iam", region_name=REGION).list_roles()["Roles"] == []
    assert (
        boto3.client("iam", region_name=REGION).list_instance_profiles()["InstanceProfiles"] == []
    )
    groups = boto3.client("ec2", region_name=REGION).describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]
    # The data volume (index, state) is kept until asked for.
    ec2 = boto3.client("ec2", region_name=REGION)
    assert [v["State"] for v in ec2.describe_volumes()["Volumes"]] == ["available"]
    assert "--delete-data" in capsys.readouterr().out
    assert run(["aws", "destroy", "--yes", "--delete-data"], settings) == 0
    assert ec2.describe_volumes()["Volumes"] == []


def test_deploy_before_ecr_is_one_sentence_on_stderr(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["aws", "deploy", "--no-wait"], aws_settings()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "run `imgsearch aws ecr` first" in err


def test_no_docker_engine_is_one_sentence(
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir = tmp_path / "nodaemon"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert run(["aws", "ecr", "--context", str(ROOT)], aws_settings()) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "error: no Docker engine answers (`docker info` failed): start Docker and try again.\n"
    )


def test_no_credentials_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    isolate_aws_env(monkeypatch)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Nothing listens here: the credential lookup must fail before any request is made.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert run(["aws", "bucket"], aws_settings()) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no AWS credentials found") and err.count("\n") == 1


def test_no_region_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    isolate_aws_env(monkeypatch)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert run(["aws", "status"], aws_settings(region="")) == 1
    assert capsys.readouterr().err.startswith("error: no AWS region is set")


def test_destroy_without_yes_and_without_a_terminal_refuses(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["aws", "destroy"], aws_settings()) == 1
    assert "pass --yes" in capsys.readouterr().err


def test_destroy_asks_and_a_no_deletes_nothing(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda _q: "n")
    assert run(["aws", "destroy"], aws_settings()) == 1
    assert "nothing deleted" in capsys.readouterr().out


def test_destroy_with_delete_data_offers_a_snapshot_first(
    moto_endpoint: str, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = aws_settings()
    assert run(["aws", "ecr", "--context", str(ROOT)], settings) == 0
    assert run(["aws", "deploy", "--no-wait"], settings) == 0
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    questions: list[str] = []

    def answer(question: str) -> str:
        questions.append(question)
        return "y"

    monkeypatch.setattr("builtins.input", answer)
    assert run(["aws", "destroy", "--delete-data"], settings) == 0
    assert "the data volume" in questions[0] and "Snapshot" in questions[1]
    ec2 = boto3.client("ec2", region_name=REGION)
    assert ec2.describe_volumes()["Volumes"] == []
    ours = [{"Name": "tag:imgsearch:deployment", "Values": ["imgsearch"]}]
    assert len(ec2.describe_snapshots(OwnerIds=["self"], Filters=ours)["Snapshots"]) == 1


def test_every_subcommand_is_registered_with_dry_run() -> None:
    parser = argparse.ArgumentParser(prog="imgsearch")
    register(parser.add_subparsers(dest="command"))
    for command in ("bucket", "ecr", "deploy", "update", "status", "destroy"):
        args = parser.parse_args(["aws", command, "--dry-run"])
        assert args.dry_run is True and callable(args.handler)
