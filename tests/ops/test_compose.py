"""The deployment files: docker-compose.yml, .env.example and the configuration reference.

``docker-compose config`` (Debian's docker-compose 1.29 package) validates the file
against the Compose schema without a Docker engine. The structural checks below run
with PyYAML on the file as compose resolves it.
"""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"
SETTINGS_FILE = REPO_ROOT / "recsys_platform" / "settings.py"

# The one-shot migration job exits after "migrate"; services wait for its exit code
# (service_completed_successfully), so a health check would never be consulted.
ONE_SHOT_SERVICES = {"migrate"}
EXPECTED_SERVICES = {
    "postgres", "redis", "migrate", "web", "worker-ingestion", "worker-training", "worker-default", "beat",
}
_ENV_CALL = re.compile(r"env_(?:str|optional_str|bool|int|float|list)\(\s*\"([A-Z0-9_]+)\"", re.S)


def settings_variables() -> set[str]:
    """Return every environment variable that settings.py reads through the env helpers."""
    return set(_ENV_CALL.findall(SETTINGS_FILE.read_text()))


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory) -> dict:
    """Return the compose file as docker-compose resolves it with .env.example as .env."""
    folder = tmp_path_factory.mktemp("compose")
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, folder / ".env")
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install --no-install-recommends docker-compose)")
    result = subprocess.run(
        [tool, "--project-directory", str(folder), "-f", str(folder / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_config_is_valid(compose_config):
    assert set(compose_config["services"]) == EXPECTED_SERVICES


@pytest.mark.parametrize("service", sorted(EXPECTED_SERVICES - ONE_SHOT_SERVICES))
def test_every_service_has_healthcheck(compose_config, service):
    healthcheck = compose_config["services"][service].get("healthcheck")

    assert healthcheck, f"{service} has no healthcheck"
    assert healthcheck.get("test"), f"{service} has an empty healthcheck test"
    assert not healthcheck.get("disable", False)


def test_healthchecks_call_the_documented_probes(compose_config):
    services = compose_config["services"]

    def command(service):
        return " ".join(services[service]["healthcheck"]["test"])

    assert "pg_isready" in command("postgres")
    assert "redis-cli ping" in command("redis")
    assert "/health/ready" in command("web")
    assert "recsys_platform.schedules" in command("beat")
    for queue in ("ingestion", "training", "default"):
        assert f"inspect ping -d {queue}@" in command(f"worker-{queue}")


def test_migrate_job_runs_once_before_the_app(compose_config):
    services = compose_config["services"]

    assert services["migrate"]["restart"] == "no"
    assert "migrate" in services["migrate"]["command"]
    for name in ("web", "worker-ingestion", "worker-training", "worker-default", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_workers_consume_separate_queues(compose_config):
    services = compose_config["services"]

    for queue in ("ingestion", "training", "default"):
        command = services[f"worker-{queue}"]["command"]
        assert command[command.index("-Q") + 1] == queue


def test_images_are_pinned(compose_config):
    for name, service in compose_config["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name} uses an image without a tag: {image}"
        assert tag != "latest", f"{name} uses the moving tag latest: {image}"
    assert compose_config["services"]["postgres"]["image"].startswith("pgvector/pgvector:pg17")


def test_volumes_are_named_and_declared(compose_config):
    declared = set(compose_config.get("volumes", {}))

    used = set()
    for service in compose_config["services"].values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            assert not source.startswith(("/", ".")), f"bind mount {source}; use a named volume"
            used.add(source)
    assert used == declared
    assert {"pgdata", "redisdata", "media", "beatdata"} <= declared


def test_app_services_read_env_file():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())

    for name, service in raw["services"].items():
        if "build" in service or service.get("image", "").startswith("recsys-platform"):
            assert service.get("env_file") == ".env", name


def test_env_example_documents_every_setting():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))

    missing = settings_variables() - documented
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_sets_every_compose_variable():
    # "$${NAME}" is escaped: the container's shell expands it, not docker-compose.
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    assigned = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))

    missing = referenced - assigned
    assert not missing, f".env.example does not set {sorted(missing)}"


def test_operations_doc_lists_every_setting():
    text = OPERATIONS_DOC.read_text()

    missing = {name for name in settings_variables() if f"`{name}`" not in text}
    assert not missing, f"docs/operations.md lacks {sorted(missing)}"
