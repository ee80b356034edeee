"""The docker CLI behind a seam: every call goes through one runner that tests replace."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import DockerError


class DockerMissing(DockerError):
    """No docker executable on PATH."""


#: Runs argv with optional stdin; capture=True collects output instead of streaming it.
Runner = Callable[[Sequence[str], str | None, bool], "subprocess.CompletedProcess[str]"]


def run_subprocess(
    argv: Sequence[str], stdin: str | None, capture: bool
) -> subprocess.CompletedProcess[str]:
    """The real runner: a subprocess with text I/O that never raises on a non-zero exit."""
    return subprocess.run(list(argv), input=stdin, text=True, capture_output=capture, check=False)


class DockerCli:
    """Thin wrapper over `docker info/login/build/tag/push` with one-sentence errors."""

    def __init__(self, executable: str = "docker", runner: Runner | None = None) -> None:
        self.executable = executable
        self.runner = runner or run_subprocess

    def _run(
        self, args: Sequence[str], stdin: str | None = None, capture: bool = False
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.executable, *args]
        try:
            result = self.runner(argv, stdin, capture)
        except FileNotFoundError as error:
            raise DockerMissing(
                "the docker CLI is not on PATH: install Docker (https://docs.docker.com/get-docker/)."
            ) from error
        if result.returncode != 0:
            detail = _last_line(result.stderr) if capture else ""
            raise DockerError(
                f"`docker {args[0]}` failed with exit code {result.returncode}"
                + (f": {detail}." if detail else "; see its output above.")
            )
        return result

    def check_engine(self) -> None:
        """Fail with one sentence when no Docker engine answers the CLI."""
        try:
            self._run(["info", "--format", "{{.ServerVersion}}"], capture=True)
        except DockerMissing:
            raise
        except DockerError as error:
            raise DockerError(
                "no Docker engine answers (`docker info` failed): start Docker and try again."
            ) from error

    def login(self, registry: str, username: str, password: str) -> None:
        """Log in with the password on stdin, so it never shows in the process list."""
        self._run(
            ["login", "--username", username, "--password-stdin", registry],
            stdin=password,
            capture=True,
        )

    def build(
        self,
        context: Path,
        dockerfile: Path,
        tag: str,
        build_args: dict[str, str],
        platform: str,
    ) -> None:
        """Build the image for the instance's platform (an arm64 laptop builds amd64 too)."""
        args = ["build", "--platform", platform, "-f", str(dockerfile), "-t", tag]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        self._run([*args, str(context)])

    def tag(self, source: str, target: str) -> None:
        """Give the local image its ECR name."""
        self._run(["tag", source, target])

    def push(self, image: str) -> None:
        """Push to the registry logged into before."""
        self._run(["push", image])


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else ""
