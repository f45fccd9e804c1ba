"""Privacy budget spending under 200 concurrent requests for one user.

The user's budget pays for exactly 20 personalised responses. Whatever the
interleaving, exactly 20 responses must be personalised, the other 180 must be the
free fallback, and the ledger must sum to the budget. The requests go once to the
threaded test server (one process) and once to gunicorn with 2 worker processes of
4 threads each, which share nothing but the database.
"""

import json
import math
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.db.models import Sum

from privacy.accounting import epsilon_to_micro
from privacy.models import BudgetAccount, LedgerEntry
from privacy.services import get_privacy_policy, update_privacy_policy
from tests.conftest import _test_database_url
from tests.reliability.processes import WebServer
from users.services import InteractionInput, record_interactions

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 200
CLIENT_THREADS = 50
EPSILON = 0.1
PAID_RESPONSES = 20
REQUEST_TIMEOUT_S = 60


@pytest.fixture
def budgeted_user(tenant, make_ready_videos):
    """Give user "bob" a history and a budget of exactly 20 responses at epsilon 0.1."""
    make_ready_videos(tenant, 200, seed=5)
    record_interactions(tenant, [InteractionInput("bob", f"v{i}", "view", None, None) for i in range(8)])
    # laplace charges every response; user_vector would reuse one paid release for free.
    update_privacy_policy(
        get_privacy_policy(tenant),
        changes={"epsilon": EPSILON, "budget": EPSILON * PAID_RESPONSES, "mechanism": "laplace"},
        actor=None,
    )
    return tenant


def fire(base_url: str, api_key: str) -> list[dict]:
    """Send REQUESTS concurrent recommendation requests for bob; return the JSON bodies."""
    url = f"{base_url}/api/v1/users/bob/recommendations/?k=10"

    def call(index: int) -> dict:
        outgoing = urllib.request.Request(url, headers={"Authorization": f"Api-Key {api_key}"})
        try:
            with urllib.request.urlopen(outgoing, timeout=REQUEST_TIMEOUT_S) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return {"http_status": error.code, "body": error.read().decode(errors="replace")}

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        return list(pool.map(call, range(REQUESTS)))


def assert_budget_spent_exactly(tenant, bodies: list[dict]) -> None:
    errors = [body for body in bodies if "http_status" in body]
    personalised = [body for body in bodies if body.get("personalised") is True]
    fallbacks = [body for body in bodies if body.get("personalised") is False]
    ledger_micro = LedgerEntry.objects.filter(tenant=tenant, user__external_id="bob").aggregate(
        total=Sum("epsilon_micro"))["total"]
    account = BudgetAccount.objects.get(tenant=tenant, user__external_id="bob")
    print(f"\n{len(bodies)} requests: {len(personalised)} personalised, {len(fallbacks)} fallbacks, "
          f"{len(errors)} errors; ledger {ledger_micro} micro-epsilon")

    assert errors == []
    assert len(personalised) == PAID_RESPONSES
    assert len(fallbacks) == REQUESTS - PAID_RESPONSES
    assert all(body["fallback_reason"] == "budget_exhausted" for body in fallbacks)
    assert all(body["epsilon_spent"] == 0 for body in fallbacks)
    assert ledger_micro == PAID_RESPONSES * epsilon_to_micro(EPSILON)
    assert account.spent_micro == ledger_micro
    assert LedgerEntry.objects.filter(tenant=tenant).count() == PAID_RESPONSES
    assert len({body["request_id"] for body in personalised}) == PAID_RESPONSES
    assert math.isclose(sum(body["epsilon_spent"] for body in bodies), EPSILON * PAID_RESPONSES)


def test_threaded_server_spends_exactly_the_budget(live_server, budgeted_user):
    bodies = fire(live_server.url, budgeted_user.raw_api_key)
    connections.close_all()

    assert_budget_spent_exactly(budgeted_user, bodies)


def test_two_gunicorn_processes_spend_exactly_the_budget(budgeted_user, tmp_path, settings):
    # given: gunicorn with 2 worker processes of 4 threads on the test database
    web = WebServer(tmp_path / "gunicorn.log", workers=2, threads=4, env={
        "DATABASE_URL": _test_database_url(), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }).start()
    try:
        assert len(web.worker_pids()) == 2

        # when
        bodies = fire(web.base_url, budgeted_user.raw_api_key)
    finally:
        web.stop()

    # then
    assert_budget_spent_exactly(budgeted_user, bodies)
