"""Private recommendations over REST: budgets, replays, fallbacks and bad input."""

import json
import math
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.db.models import Sum

from privacy.models import LedgerEntry
from privacy.services import get_privacy_policy, update_privacy_policy
from users.models import AppUser, Interaction
from users.services import InteractionInput, record_interactions

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(tenant, make_ready_videos):
    make_ready_videos(tenant, 300, seed=3)
    record_interactions(tenant, [InteractionInput("alice", f"v{i}", "like", None, None) for i in range(5)])
    return tenant


def set_policy(tenant, **changes):
    return update_privacy_policy(get_privacy_policy(tenant), changes=changes, actor=None)


def test_personalised_response_reports_spend_and_budget(api, catalogue):
    set_policy(catalogue, epsilon=0.5, budget=2.0, mechanism="laplace")

    body = api.get("/api/v1/users/alice/recommendations/?k=10").json()

    assert body["personalised"] is True
    assert len(body["videos"]) == 10
    assert body["epsilon_spent"] == pytest.approx(0.5)
    assert body["budget"]["remaining"] == pytest.approx(1.5)


@pytest.mark.parametrize("mechanism", ["laplace", "importance_weighted", "user_vector"])
def test_each_mechanism_serves_k_distinct_videos(api, catalogue, mechanism):
    set_policy(catalogue, mechanism=mechanism)

    body = api.get("/api/v1/users/alice/recommendations/?k=7").json()

    assert body["mechanism"] == mechanism
    assert len(set(body["videos"])) == 7


def test_exhausted_budget_gives_marked_fallback_for_free(api, catalogue):
    set_policy(catalogue, epsilon=1.0, budget=1.0, mechanism="laplace")
    api.get("/api/v1/users/alice/recommendations/?k=5")

    body = api.get("/api/v1/users/alice/recommendations/?k=5").json()

    assert body["personalised"] is False
    assert body["fallback_reason"] == "budget_exhausted"
    assert body["epsilon_spent"] == 0
    assert len(body["videos"]) == 5
    assert LedgerEntry.objects.count() == 1


def test_repeated_request_id_spends_once(api, catalogue):
    set_policy(catalogue, epsilon=0.5, budget=5.0, mechanism="laplace")

    first = api.get("/api/v1/users/alice/recommendations/?k=10&request_id=r-1").json()
    second = api.get("/api/v1/users/alice/recommendations/?k=10&request_id=r-1").json()

    assert second["videos"] == first["videos"]
    assert second["replayed"] is True
    assert second["epsilon_spent"] == 0
    assert LedgerEntry.objects.count() == 1


def test_user_vector_release_is_reused_until_history_changes(api, catalogue):
    set_policy(catalogue, epsilon=1.0, budget=10.0, mechanism="user_vector")
    first = api.get("/api/v1/users/alice/recommendations/?k=10").json()
    reused = api.get("/api/v1/users/alice/recommendations/?k=10").json()

    record_interactions(catalogue, [InteractionInput("alice", "v200", "like", None, None)])
    after = api.get("/api/v1/users/alice/recommendations/?k=10").json()

    assert first["epsilon_spent"] == pytest.approx(1.0)
    assert reused["epsilon_spent"] == 0
    assert reused["videos"] == first["videos"]
    assert after["epsilon_spent"] == pytest.approx(1.0)
    assert after["videos"] != first["videos"]


@pytest.mark.parametrize("k", ["0", "-3", "abc", "100000", "1.5"])
def test_invalid_k_is_rejected_and_spends_nothing(api, catalogue, k):
    response = api.get(f"/api/v1/users/alice/recommendations/?k={k}")

    assert response.status_code == 400
    assert k in response.json()["error"]["message"]
    assert LedgerEntry.objects.count() == 0


@pytest.mark.parametrize("epsilon", ["0", "-1", "nan", "inf", "11", "abc"])
def test_invalid_epsilon_is_rejected_and_spends_nothing(api, catalogue, epsilon):
    response = api.get(f"/api/v1/users/alice/recommendations/?epsilon={epsilon}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_epsilon"
    assert LedgerEntry.objects.count() == 0


def test_smaller_epsilon_is_charged_as_requested(api, catalogue):
    set_policy(catalogue, epsilon=1.0, budget=5.0, mechanism="laplace")

    body = api.get("/api/v1/users/alice/recommendations/?epsilon=0.25").json()

    assert body["epsilon_spent"] == pytest.approx(0.25)


def test_unknown_user_is_not_found(api, catalogue):
    response = api.get("/api/v1/users/nobody/recommendations/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "user_not_found"


def test_privacy_budget_endpoint(api, catalogue):
    set_policy(catalogue, epsilon=0.5, budget=3.0, mechanism="laplace")
    api.get("/api/v1/users/alice/recommendations/")

    body = api.get("/api/v1/users/alice/privacy-budget/").json()

    assert body["budget"] == pytest.approx(3.0)
    assert body["spent"] == pytest.approx(0.5)
    assert body["remaining"] == pytest.approx(2.5)


def test_delete_user_erases_interactions_and_ledger(api, catalogue):
    api.get("/api/v1/users/alice/recommendations/")

    response = api.delete("/api/v1/users/alice/")

    assert response.status_code == 204
    assert not AppUser.objects.filter(external_id="alice").exists()
    assert Interaction.objects.count() == 0
    assert LedgerEntry.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_requests_spend_exactly_the_budget(live_server, tenant, make_ready_videos):
    # given: a budget that pays for exactly 10 responses
    make_ready_videos(tenant, 200, seed=5)
    record_interactions(tenant, [InteractionInput("bob", f"v{i}", "view", None, None) for i in range(8)])
    set_policy(tenant, epsilon=0.1, budget=1.0, mechanism="laplace")
    url = f"{live_server.url}/api/v1/users/bob/recommendations/?k=10"

    def call(index):
        request = urllib.request.Request(url, headers={"Authorization": f"Api-Key {tenant.raw_api_key}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    # when
    with ThreadPoolExecutor(max_workers=25) as pool:
        bodies = list(pool.map(call, range(50)))
    connections.close_all()

    # then
    personalised = [b for b in bodies if b["personalised"]]
    assert len(personalised) == 10
    assert all(b["fallback_reason"] == "budget_exhausted" for b in bodies if not b["personalised"])
    total = LedgerEntry.objects.filter(user__external_id="bob").aggregate(total=Sum("epsilon_micro"))["total"]
    assert total == 10 * 100_000
    assert math.isclose(sum(b["epsilon_spent"] for b in bodies), 1.0)
