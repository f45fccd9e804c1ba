"""``manage.py privacy_audit`` run as operators run it: a separate process on a real tenant.

tests/privacy/test_audit.py calls the command in-process for one mechanism at a time.
Here the whole command runs in a subprocess against the committed test database,
for every mechanism and its under-noised control, with a bounded number of runs
and a fixed seed, and must exit 0.
"""

import subprocess
import sys

import pytest
from django.conf import settings

from privacy.mechanisms import MECHANISMS
from privacy.services import get_privacy_policy, update_privacy_policy
from tests.conftest import REPO_ROOT, _test_database_url
from tests.reliability.processes import base_environment

# Runs per history and mechanism: enough for every control to be detected at epsilon 1.
AUDIT_RUNS = 2000
AUDIT_TIMEOUT_S = 600


@pytest.mark.django_db(transaction=True)
def test_privacy_audit_command_passes_every_mechanism(make_tenant, make_ready_videos):
    # given: a small tenant with 25 ready videos and epsilon 1 per response
    tenant = make_tenant("audit-small")
    make_ready_videos(tenant, 25, seed=11)
    update_privacy_policy(get_privacy_policy(tenant), changes={"epsilon": 1.0, "history_length": 20}, actor=None)

    # when
    result = subprocess.run(
        [sys.executable, "manage.py", "privacy_audit", "--tenant", tenant.name, "--runs", str(AUDIT_RUNS),
         "--seed", "5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S,
        env=base_environment(DATABASE_URL=_test_database_url(), CELERY_BROKER_URL=settings.CELERY_BROKER_URL),
    )

    # then
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fused embeddings of 25 ready videos" in result.stdout
    for name in MECHANISMS:
        assert f"| {name} | 1 |" in result.stdout, name
        assert f"| {name} (noise / 10, control) |" in result.stdout, name
    assert result.stdout.count("detected (expected)") == len(MECHANISMS)
    assert "FAIL" not in result.stdout
    assert "Privacy audit passed." in result.stdout


@pytest.mark.django_db(transaction=True)
def test_privacy_audit_command_exits_nonzero_for_unknown_tenant():
    result = subprocess.run(
        [sys.executable, "manage.py", "privacy_audit", "--tenant", "no-such-tenant", "--runs", "20"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S,
        env=base_environment(DATABASE_URL=_test_database_url(), CELERY_BROKER_URL=settings.CELERY_BROKER_URL),
    )

    assert result.returncode == 1
    assert "No tenant named 'no-such-tenant'" in result.stderr
