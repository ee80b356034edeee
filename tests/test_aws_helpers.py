"""Helpers shared by the aws tests (no tests here): a credential-free env, settings, images."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import pytest

from aws.clients import AwsContext, make_context
from aws.deploy import Waiting
from config import Settings

REGION = "eu-west-1"
MY_CIDR = "203.0.113.7/32"


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials only, so nothing can reach a real account."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")


def aws_settings(**aws: Any) -> Settings:
    """Settings for a deployment in REGION reachable from MY_CIDR."""
    values: dict[str, Any] = {"region": REGION, "allowed_cidr": MY_CIDR, **aws}
    return Settings(_env_file=None, aws=values)  # type: ignore[call-arg, arg-type]


def context(settings: Settings) -> AwsContext:
    """A context on a fresh default session (inside mock_aws or against AWS_ENDPOINT_URL)."""
    return make_context(settings, boto3.session.Session())


def put_image(repository: str, tag: str, region: str = REGION) -> None:
    """Stand-in for `docker push`: an image manifest under the tag."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:" + "a" * 64,
        },
        "layers": [],
    }
    boto3.client("ecr", region_name=region).put_image(
        repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag
    )


def instant(**overrides: Any) -> Waiting:
    """Waiting that never sleeps; the app 'answers' unless told otherwise."""
    values: dict[str, Any] = {"sleep": lambda _s: None, "probe": lambda _url: True}
    values.update(overrides)
    return Waiting(**values)
