"""Django's deployment checks against the production settings (``RECSYS_PRODUCTION=1``).

``manage.py check --deploy --fail-level WARNING`` runs in a subprocess, so the
settings module is read fresh from the environment. The production settings must
pass with no warning at all, and the same check must fail when a production
setting is weakened, which shows that it can fail.
"""

import secrets
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import REPO_ROOT, _test_database_url
from tests.reliability.processes import base_environment

CHECK_TIMEOUT_S = 120


def production_environment(**overrides) -> dict:
    env = base_environment(
        RECSYS_PRODUCTION="1",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="recommendations.example.com",
        METRICS_TOKEN=secrets.token_urlsafe(32),
        DATABASE_URL=_test_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    for name in ("DJANGO_DEBUG", "DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_HSTS_SECONDS"):
        env.pop(name, None)
    env.update(overrides)
    return env


def run_deploy_check(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
    )


def test_production_settings_pass_deploy_check():
    result = run_deploy_check(production_environment())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize("overrides, warning", [
    ({"DJANGO_SECRET_KEY": "too-short"}, "security.W009"),
    ({"DJANGO_DEBUG": "1"}, "security.W018"),
    ({"DJANGO_SECURE_SSL_REDIRECT": "0"}, "security.W008"),
    ({"DJANGO_SECURE_HSTS_SECONDS": "0"}, "security.W004"),
])
def test_weakened_production_setting_fails_deploy_check(overrides, warning):
    result = run_deploy_check(production_environment(**overrides))

    assert result.returncode != 0
    assert warning in result.stderr + result.stdout
