"""Errors the aws commands raise; the CLI prints their text as one sentence."""

from __future__ import annotations


class AwsError(Exception):
    """A failure a user can act on; its message is one complete sentence."""


class DockerError(AwsError):
    """The docker CLI is missing, no engine answers, or a docker command failed."""
