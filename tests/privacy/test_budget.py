import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from django.db import connection

from privacy.accounting import budget_to_micro, epsilon_to_micro, window_bounds
from privacy.models import BudgetAccount, LedgerEntry, PrivatisedUserVector
from privacy.selectors import find_privatised_user_vector, get_budget_status
from privacy.services import spend_privacy_budget, store_privatised_user_vector

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=timezone.utc)


def spend(tenant, user, request_id, epsilon=1.0, now=NOW, released=("v1", "v2")):
    return spend_privacy_budget(
        tenant=tenant,
        user=user,
        request_id=request_id,
        epsilon=epsilon,
        mechanism="laplace",
        parameters={"k": 2},
        released=list(released),
        now=now,
    )


def test_epsilon_to_micro_rounds_up_without_float_artefacts():
    assert epsilon_to_micro(0.1) == 100_000
    assert epsilon_to_micro(1.0) == 1_000_000
    assert epsilon_to_micro(1e-7) == 1
    assert epsilon_to_micro(0.1234567) == 123_457
    assert epsilon_to_micro(0.0) == 0


def test_budget_to_micro_rounds_down_without_float_artefacts():
    assert budget_to_micro(0.3) == 300_000
    assert budget_to_micro(10.0) == 10_000_000
    assert budget_to_micro(0.1234567) == 123_456


def test_window_bounds_are_aligned_to_epoch():
    start, end = window_bounds(NOW, 86400)

    assert start == datetime(2026, 3, 14, tzinfo=timezone.utc)
    assert end - start == timedelta(days=1)
    assert window_bounds(start, 86400)[0] == start
    assert window_bounds(end - timedelta(microseconds=1), 86400)[0] == start


def test_spend_charges_and_records_ledger_entry(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=3.0)

    result = spend(privacy_tenant, app_user, "req-1", epsilon=1.0)

    entry = LedgerEntry.objects.get(request_id="req-1")
    assert result.status == "charged"
    assert result.entry == entry
    assert entry.epsilon_micro == 1_000_000
    assert entry.released == ["v1", "v2"]
    assert result.spent_micro == 1_000_000
    assert result.remaining_micro == 2_000_000
    assert BudgetAccount.objects.get(user=app_user).spent_micro == 1_000_000


def test_spend_replayed_request_spends_nothing(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=3.0)
    first = spend(privacy_tenant, app_user, "req-1", released=("a", "b"))

    replay = spend(privacy_tenant, app_user, "req-1", released=("c",))

    assert replay.status == "replayed"
    assert replay.entry.pk == first.entry.pk
    assert replay.entry.released == ["a", "b"]
    assert LedgerEntry.objects.count() == 1
    assert BudgetAccount.objects.get(user=app_user).spent_micro == 1_000_000


def test_spend_exhausted_writes_nothing(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=1.5)

    result = spend(privacy_tenant, app_user, "req-1", epsilon=2.0)

    assert result.status == "exhausted"
    assert result.entry is None
    assert LedgerEntry.objects.count() == 0
    assert BudgetAccount.objects.count() == 0


def test_spend_exhausted_keeps_earlier_spending(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=1.5)
    spend(privacy_tenant, app_user, "req-1", epsilon=1.0)

    result = spend(privacy_tenant, app_user, "req-2", epsilon=1.0)

    assert result.status == "exhausted"
    assert result.spent_micro == 1_000_000
    assert LedgerEntry.objects.count() == 1
    assert BudgetAccount.objects.get(user=app_user).spent_micro == 1_000_000


def test_spend_zero_epsilon_is_recorded(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=1.0)
    spend(privacy_tenant, app_user, "req-1", epsilon=1.0)

    result = spend(privacy_tenant, app_user, "req-2", epsilon=0.0)

    assert result.status == "charged"
    assert result.entry.epsilon_micro == 0
    assert LedgerEntry.objects.count() == 2


def test_spend_uses_a_new_account_per_window(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=1.0, window_seconds=3600)
    spend(privacy_tenant, app_user, "req-1", now=NOW)

    later = spend(privacy_tenant, app_user, "req-2", now=NOW + timedelta(hours=1))

    assert later.status == "charged"
    assert BudgetAccount.objects.filter(user=app_user).count() == 2


def test_spend_counts_decimal_epsilon_exactly(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=0.1, budget=1.0)

    statuses = [spend(privacy_tenant, app_user, f"req-{i}", epsilon=0.1).status for i in range(11)]

    assert statuses == ["charged"] * 10 + ["exhausted"]


@pytest.mark.parametrize("epsilon", [-0.1, float("nan"), float("inf")])
def test_spend_rejects_invalid_epsilon(privacy_tenant, app_user, epsilon):
    with pytest.raises(ValueError, match="epsilon to charge must be finite"):
        spend(privacy_tenant, app_user, "req-1", epsilon=epsilon)


def test_spend_rejects_user_of_other_tenant(privacy_tenant, make_app_user):
    from users.services import create_tenant

    stranger = make_app_user("bob", tenant=create_tenant("privacy-tests-other"))

    with pytest.raises(ValueError, match="does not belong"):
        spend(privacy_tenant, stranger, "req-1")


def test_budget_status_reports_current_window(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=0.5, budget=2.0, mechanism="laplace")
    spend(privacy_tenant, app_user, "req-1", epsilon=0.5)

    status = get_budget_status(privacy_tenant, app_user, now=NOW)

    assert status.budget == 2.0
    assert status.spent == 0.5
    assert status.remaining == 1.5
    assert status.mechanism == "laplace"
    assert status.window_start == datetime(2026, 3, 14, tzinfo=timezone.utc)
    assert status.find_entry("req-1") is not None
    assert status.as_dict()["remaining"] == 1.5


def test_privatised_vector_is_stored_once_per_version(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=5.0)
    entry = spend(privacy_tenant, app_user, "req-1").entry
    window_start, _ = window_bounds(NOW, 86400)
    first = np.linspace(-1, 1, 128)

    stored = store_privatised_user_vector(app_user, window_start, 7, first, 1.0, entry)
    again = store_privatised_user_vector(app_user, window_start, 7, np.zeros(128), 1.0, entry)

    found = find_privatised_user_vector(app_user, window_start, 7)
    assert again.pk == stored.pk
    assert np.allclose(found.vector, first, atol=1e-6)
    assert find_privatised_user_vector(app_user, window_start, 8) is None
    assert PrivatisedUserVector.objects.count() == 1


def test_privatised_vector_rejects_wrong_dimension(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=5.0)
    entry = spend(privacy_tenant, app_user, "req-1").entry

    with pytest.raises(ValueError, match="128 dimensions"):
        store_privatised_user_vector(app_user, NOW, 1, np.zeros(64), 1.0, entry)


@pytest.mark.django_db(transaction=True)
def test_concurrent_spends_never_exceed_budget(privacy_tenant, app_user, set_policy):
    # given: a budget that pays for exactly 10 responses, and 50 concurrent requests
    epsilon = 0.3
    set_policy(epsilon=epsilon, budget=3.0)
    barrier = threading.Barrier(50)
    statuses = []
    errors = []
    lock = threading.Lock()

    def request(index: int) -> None:
        try:
            barrier.wait()
            result = spend(privacy_tenant, app_user, f"req-{index}", epsilon=epsilon)
            with lock:
                statuses.append(result.status)
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            with lock:
                errors.append(error)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=request, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then
    ledger_sum = sum(LedgerEntry.objects.values_list("epsilon_micro", flat=True))
    assert errors == []
    assert statuses.count("charged") == 10
    assert statuses.count("exhausted") == 40
    assert ledger_sum == 10 * epsilon_to_micro(epsilon)
    assert BudgetAccount.objects.get(user=app_user).spent_micro == ledger_sum


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_charge_once(privacy_tenant, app_user, set_policy):
    set_policy(epsilon=1.0, budget=10.0)
    barrier = threading.Barrier(20)
    statuses = []
    lock = threading.Lock()

    def request() -> None:
        try:
            barrier.wait()
            result = spend(privacy_tenant, app_user, "same-request", epsilon=1.0)
            with lock:
                statuses.append(result.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses.count("charged") == 1
    assert statuses.count("replayed") == 19
    assert BudgetAccount.objects.get(user=app_user).spent_micro == 1_000_000
