"""Helpers shared by the aws tests (no tests here): a credential-free env, settings, images."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

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


def context(settings: Settings, session: boto3.session.Session | None = None) -> AwsContext:
    """A context on a fresh default session (inside mock_aws or against AWS_ENDPOINT_URL)."""
    return make_context(settings, session or boto3.session.Session())


@dataclass
class Recorder:
    """Every API call made through a session: (service, operation, parameters)."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def attach(self, session: boto3.session.Session) -> boto3.session.Session:
        """Record the calls of every client this session makes from now on."""
        session.events.register("provide-client-params", self._record)
        return session

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        self.calls.append((service, model.name, dict(params)))

    def of(self, service: str, operation: str = "") -> list[dict[str, Any]]:
        """Parameters of the calls to one service (and operation)."""
        return [p for s, o, p in self.calls if s == service and operation in ("", o)]


@dataclass
class Ec2Idempotency:
    """EC2's documented RunInstances idempotency, which moto lacks.

    A repeated ClientToken gets the first call's instance back (in its current state) instead of
    a new one, as https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html says.
    One object stands for one account: attach it to every session that plays a deployer.
    """

    launched: dict[str, str] = field(default_factory=dict)

    def attach(self, session: boto3.session.Session) -> boto3.session.Session:
        """Apply the rule to every EC2 client this session makes from now on."""
        session.events.register("before-parameter-build.ec2.RunInstances", self._token)
        session.events.register("before-call.ec2.RunInstances", self._replay)
        session.events.register("after-call.ec2.RunInstances", self._remember)
        return session

    def _token(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["client_token"] = params.get("ClientToken", "")

    def _replay(self, context: dict[str, Any], **_: Any) -> Any:
        instance_id = self.launched.get(context.get("client_token", ""))
        if not instance_id:
            return None
        ec2 = boto3.client("ec2", region_name=REGION)
        [reservation] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return AWSResponse("", 200, {}, None), {
            "ReservationId": reservation["ReservationId"],
            "Instances": reservation["Instances"],
        }

    def _remember(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        token = context.get("client_token", "")
        if token and parsed.get("Instances"):
            self.launched.setdefault(token, parsed["Instances"][0]["InstanceId"])


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
