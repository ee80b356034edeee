"""The Dockerfile, compose file, supervisor include and .dockerignore, checked without an engine."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
QDRANT_CONF = ROOT / "docker" / "qdrant.supervisor.conf"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def args_defaults() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )


def test_base_images_are_pinned_to_exact_versions() -> None:
    defaults = args_defaults()
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)", defaults["PYTHON_IMAGE"])
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", defaults["QDRANT_IMAGE"])
    froms = [rest.split()[0] for word, rest in instructions() if word == "FROM"]
    assert froms == ["${QDRANT_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_compose_and_dockerfile_use_the_same_qdrant_release() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["services"]["qdrant"]["image"] == args_defaults()["QDRANT_IMAGE"]


def test_torch_comes_from_the_cpu_index_by_default_and_a_build_arg_selects_cuda() -> None:
    assert args_defaults()["TORCH_VARIANT"] == "cpu"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}"' in runs
    assert "torch==2.12.1 torchvision==0.27.1" in runs
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.12.1"' in pyproject and '"torchvision==0.27.1"' in pyproject


def test_weights_are_fetched_at_build_time_into_torch_home() -> None:
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "ResNet50_Weights.DEFAULT.get_state_dict(progress=False)" in runs
    # The SSCD file lands where embed/sscd.py looks for it: TORCH_HOME/hub/checkpoints.
    assert "download_url_to_file(SSCD_URL, '/opt/torch/hub/checkpoints/' + SSCD_FILE" in runs
    envs = " ".join(rest for word, rest in instructions() if word == "ENV")
    assert "TORCH_HOME=/opt/torch" in envs
    assert "IMGSEARCH_EMBED__WEIGHTS=imagenet" in envs
    assert "COPY --from=build /opt/torch /opt/torch" in [
        f"COPY {rest}" for word, rest in instructions() if word == "COPY"
    ]


def test_runtime_runs_as_a_non_root_user_with_settings_for_the_one_box() -> None:
    steps = instructions()
    runtime = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    envs = " ".join(rest for word, rest in runtime if word == "ENV")
    for setting in (
        "IMGSEARCH_DATA_DIR=/data",
        "IMGSEARCH_QDRANT__URL=http://127.0.0.1:6333",
        "IMGSEARCH_BUNDLED_QDRANT=true",
    ):
        assert setting in envs


def test_entry_command_is_supervisord_with_the_app_config() -> None:
    cmd = [rest for word, rest in instructions() if word == "CMD"]
    assert cmd == ['["supervisord", "-c", "/app/supervisord.conf"]']
    copies = [rest.split() for word, rest in instructions() if word == "COPY"]
    assert ["supervisord.conf", "/app/supervisord.conf"] in copies
    assert ["docker/qdrant.supervisor.conf", "/etc/imgsearch/supervisor.d/qdrant.conf"] in copies


def test_healthcheck_calls_the_health_endpoint_that_covers_model_and_index() -> None:
    [check] = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    # Streamlit's /_stcore/health says ok while the model or the index failed.
    assert "http://127.0.0.1:8501/api/health" in check
    assert "EXPOSE" in {w for w, _ in instructions()}


def test_qdrant_binary_comes_from_the_official_image() -> None:
    copies = [rest for word, rest in instructions() if word == "COPY" and "--from=qdrant" in rest]
    assert any(c.endswith("/qdrant/qdrant /qdrant/qdrant") for c in copies)
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "libunwind8" in runs


def test_every_local_copy_source_exists_and_is_not_dockerignored() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, rest in instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = [part for part in rest.split() if not part.startswith("--")]
        for source in sources:
            if source == ".":
                continue
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    for needed in ("pyproject.toml", "constraints.txt", "config.py", "README.md"):
        assert not any(fnmatch.fnmatch(needed, pattern) for pattern in ignored), needed


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", "data", "tests"} <= ignored


def test_compose_runs_qdrant_minio_and_imgsearch_with_named_volumes() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"qdrant", "minio", "create-bucket", "imgsearch"} <= set(services)
    assert set(compose["volumes"]) == {"qdrant_storage", "minio_data", "imgsearch_data"}
    assert "qdrant_storage:/qdrant/storage" in services["qdrant"]["volumes"]
    assert "imgsearch_data:/data" in services["imgsearch"]["volumes"]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.[0-9TZ-]+", services["minio"]["image"])
    env = services["imgsearch"]["environment"]
    assert env["IMGSEARCH_QDRANT__URL"] == "http://qdrant:6333"
    assert env["IMGSEARCH_STORAGE__URL"] == "s3://imgsearch/images"
    assert env["IMGSEARCH_S3__ENDPOINT_URL"] == "http://minio:9000"
    assert env["IMGSEARCH_BUNDLED_QDRANT"] == "false"
    assert env["IMGSEARCH_S3__SSE"] == "none"  # MinIO without a KMS refuses SSE headers
    build = services["imgsearch"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    waits = services["imgsearch"]["depends_on"]
    assert waits["create-bucket"]["condition"] == "service_completed_successfully"
    assert "local/imgsearch" in services["create-bucket"]["command"][0]
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


REQUIRED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}")


def _required(value: str) -> str:
    """The variable a `${NAME:?message}` value names (compose stops when it is unset)."""
    match = REQUIRED.fullmatch(value)
    assert match, f"{value!r} is not a required variable"
    return match["name"]


def test_compose_qdrant_needs_an_api_key_the_app_sends_and_has_cors_off() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    qdrant = services["qdrant"]["environment"]
    key = _required(qdrant["QDRANT__SERVICE__API_KEY"])
    assert _required(services["imgsearch"]["environment"]["IMGSEARCH_QDRANT__API_KEY"]) == key
    assert qdrant["QDRANT__SERVICE__ENABLE_CORS"] == "false"


def test_compose_has_no_default_for_any_secret() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("minio", "create-bucket"):
        assert _required(services[name]["environment"]["MINIO_ROOT_PASSWORD"])
    secret_words = ("PASSWORD", "SECRET", "API_KEY")
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in secret_words):
                assert ":-" not in str(value), f"{name}.{key} has a default"
                _required(str(value))


def test_compose_app_uses_its_own_user_limited_to_the_images_prefix() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    app = services["imgsearch"]["environment"]
    setup = services["create-bucket"]["environment"]
    # The app never holds the admin credentials.
    assert "MINIO_ROOT" not in app["AWS_ACCESS_KEY_ID"] + app["AWS_SECRET_ACCESS_KEY"]
    assert app["AWS_ACCESS_KEY_ID"] == setup["APP_ACCESS_KEY"]
    assert _required(app["AWS_SECRET_ACCESS_KEY"]) == _required(setup["APP_SECRET_KEY"])
    policy = json.loads(setup["APP_POLICY"])
    granted = {
        (action, resource)
        for statement in policy["Statement"]
        for action in statement["Action"]
        for resource in statement["Resource"]
    }
    assert granted == {
        ("s3:ListBucket", "arn:aws:s3:::imgsearch"),
        ("s3:GetObject", "arn:aws:s3:::imgsearch/images/*"),
        ("s3:PutObject", "arn:aws:s3:::imgsearch/images/*"),
        ("s3:DeleteObject", "arn:aws:s3:::imgsearch/images/*"),
    }
    [listing] = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["images/*"]}}


FAKE_MC = """#!/bin/sh
echo "$*" >> "$MC_LOG"
case "$*" in
  "admin policy create local imgsearch-app "*) cp "$6" "$MC_LOG.policy" ;;
  "admin policy attach "*) [ ! -e "$MC_LOG.attached" ] || exit 1; touch "$MC_LOG.attached" ;;
  "admin user info "*) echo "PolicyName: imgsearch-app" ;;
esac
"""


def _run_setup(tmp_path: Path) -> list[str]:
    """Run the create-bucket job's shell command with a logging stand-in for mc."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["create-bucket"]
    [script] = service["command"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    mc = bin_dir / "mc"
    mc.write_text(FAKE_MC)
    mc.chmod(0o755)
    log = tmp_path / "mc.log"
    log.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MC_LOG": str(log),
        "MINIO_ROOT_USER": "admin",
        "MINIO_ROOT_PASSWORD": "root-secret",
        "APP_ACCESS_KEY": "imgsearch-app",
        "APP_SECRET_KEY": "app-secret",
        "APP_POLICY": service["environment"]["APP_POLICY"],
    }
    # Compose turns `$$` into `$` before the shell sees the command.
    result = subprocess.run(
        [*service["entrypoint"], script.replace("$$", "$")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines()


def test_compose_setup_makes_the_bucket_policy_and_app_user_and_can_run_again(
    tmp_path: Path,
) -> None:
    calls = _run_setup(tmp_path)
    assert calls == [
        "alias set local http://minio:9000 admin root-secret",
        "mb --ignore-existing local/imgsearch",
        "admin policy create local imgsearch-app /tmp/imgsearch-app.json",
        "admin user add local imgsearch-app app-secret",
        "admin policy attach local imgsearch-app --user imgsearch-app",
    ]
    written = json.loads((tmp_path / "mc.log.policy").read_text())
    assert written["Statement"][1]["Resource"] == ["arn:aws:s3:::imgsearch/images/*"]
    # A second `up`: the policy is attached already, which mc reports as an error.
    again = _run_setup(tmp_path)
    assert again[-1] == "admin user info local imgsearch-app"


def _supervisor_status(tmp_path: Path, bundled: str) -> str:
    """Run supervisord with only the qdrant include and return `supervisorctl status qdrant`."""
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"""[supervisord]
nodaemon=true
logfile={tmp_path}/supervisord.log
pidfile={tmp_path}/supervisord.pid
[unix_http_server]
file={sock}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{sock}
[include]
files = {QDRANT_CONF}
"""
    )
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "IMGSEARCH_BUNDLED_QDRANT": bundled}
    server = subprocess.Popen(
        [bin_dir / "supervisord", "-c", conf],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        status = ""
        for _ in range(50):
            time.sleep(0.2)
            result = subprocess.run(
                [bin_dir / "supervisorctl", "-c", conf, "status", "qdrant"],
                capture_output=True,
                text=True,
            )
            status = result.stdout
            if "qdrant" in status and ("STARTING" not in status):
                break
        return status
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_qdrant_program_stays_off_when_bundled_qdrant_is_false(tmp_path: Path) -> None:
    status = _supervisor_status(tmp_path, "false")
    assert "STOPPED" in status and "Not started" in status


def test_qdrant_program_starts_when_bundled_qdrant_is_true(tmp_path: Path) -> None:
    # /qdrant/qdrant only exists in the image: supervisord trying (and failing) to spawn it
    # shows the include parses and autostart follows the variable.
    status = _supervisor_status(tmp_path, "true")
    assert "Not started" not in status
    assert any(state in status for state in ("BACKOFF", "FATAL", "RUNNING", "STARTING"))


def test_qdrant_program_keeps_storage_on_the_data_volume_and_listens_on_loopback() -> None:
    text = QDRANT_CONF.read_text()
    assert "[program:qdrant]" in text and "command=/qdrant/qdrant" in text
    assert 'QDRANT__STORAGE__STORAGE_PATH="/data/qdrant-server/storage"' in text
    assert 'QDRANT__SERVICE__HOST="127.0.0.1"' in text


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE, QDRANT_CONF, ROOT / ".dockerignore"])
def test_files_end_with_a_newline(path: Path) -> None:
    assert path.read_text().endswith("\n")
