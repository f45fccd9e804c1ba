import math

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from privacy.forms import PrivacyPolicyForm
from privacy.models import PrivacyPolicy, PrivacyPolicyChange
from privacy.services import create_privacy_policy, get_privacy_policy, update_privacy_policy

INVALID_EPSILONS = [0.0, -1.0, math.nan, math.inf, 10.5]


def form_data(tenant, **overrides):
    data = {
        "tenant": tenant.pk,
        "epsilon": "1",
        "budget": "10",
        "window_seconds": "86400",
        "mechanism": "user_vector",
        "max_k": "50",
        "history_length": "50",
        "retrieval_fraction": "0.5",
        "n_candidates": "100",
    }
    data.update(overrides)
    return data


def test_get_privacy_policy_creates_default(privacy_tenant):
    policy = get_privacy_policy(privacy_tenant)

    assert policy.tenant == privacy_tenant
    assert policy.epsilon == 1.0
    assert policy.mechanism == "user_vector"
    assert policy.window_seconds == 86400
    assert policy.exclude_seen is False
    assert get_privacy_policy(privacy_tenant).pk == policy.pk


def test_default_epsilon_follows_lower_configured_maximum(privacy_tenant, settings):
    settings.PRIVACY_MAX_EPSILON = 0.5

    policy = get_privacy_policy(privacy_tenant)

    assert policy.epsilon == 0.5


@pytest.mark.parametrize("epsilon", INVALID_EPSILONS)
def test_policy_clean_rejects_invalid_epsilon(privacy_tenant, epsilon):
    policy = PrivacyPolicy(tenant=privacy_tenant, epsilon=epsilon)

    with pytest.raises(ValidationError) as error:
        policy.full_clean()

    assert "epsilon must be greater than 0 and at most 10" in str(error.value.message_dict["epsilon"])


def test_policy_clean_respects_lower_configured_maximum(privacy_tenant, settings):
    settings.PRIVACY_MAX_EPSILON = 2.0
    policy = PrivacyPolicy(tenant=privacy_tenant, epsilon=3.0)

    with pytest.raises(ValidationError, match="at most 2; got 3"):
        policy.full_clean()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("budget", 0.0, "budget must be a finite number greater than 0"),
        ("budget", math.inf, "budget must be a finite number greater than 0"),
        ("budget", 0.5, "budget must be at least epsilon"),
        ("retrieval_fraction", 1.0, "retrieval_fraction must be greater than 0 and less than 1"),
        ("history_length", 5000, "history_length must be between 1 and 1000"),
        ("n_candidates", 10, "n_candidates must be at least max_k"),
    ],
)
def test_policy_clean_rejects_invalid_values(privacy_tenant, field, value, message):
    policy = PrivacyPolicy(tenant=privacy_tenant, **{field: value})

    with pytest.raises(ValidationError, match=message):
        policy.full_clean()


@pytest.mark.parametrize("epsilon", ["0", "-1", "nan", "inf", "10.5"])
def test_policy_form_rejects_invalid_epsilon(privacy_tenant, epsilon):
    form = PrivacyPolicyForm(data=form_data(privacy_tenant, epsilon=epsilon))

    assert not form.is_valid()
    assert form.errors["epsilon"] == [f"epsilon must be greater than 0 and at most 10; got {float(epsilon):g}"]


def test_policy_form_accepts_valid_policy(privacy_tenant):
    form = PrivacyPolicyForm(data=form_data(privacy_tenant, epsilon="2.5"))

    assert form.is_valid(), form.errors


@pytest.mark.parametrize("epsilon", INVALID_EPSILONS)
def test_database_rejects_invalid_epsilon(privacy_tenant, epsilon):
    policy = get_privacy_policy(privacy_tenant)

    with pytest.raises(IntegrityError, match="privacy_policy_epsilon_range"):
        with transaction.atomic():
            PrivacyPolicy.objects.filter(pk=policy.pk).update(epsilon=epsilon)


@pytest.mark.parametrize("budget", [0.0, -1.0, math.nan, math.inf])
def test_database_rejects_invalid_budget(privacy_tenant, budget):
    policy = get_privacy_policy(privacy_tenant)

    with pytest.raises(IntegrityError, match="privacy_policy_budget_range"):
        with transaction.atomic():
            PrivacyPolicy.objects.filter(pk=policy.pk).update(budget=budget)


def test_database_rejects_invalid_retrieval_fraction(privacy_tenant):
    policy = get_privacy_policy(privacy_tenant)

    with pytest.raises(IntegrityError, match="privacy_policy_retrieval_fraction_range"):
        with transaction.atomic():
            PrivacyPolicy.objects.filter(pk=policy.pk).update(retrieval_fraction=1.0)


def test_update_policy_writes_change_row(privacy_tenant, staff_user):
    policy = get_privacy_policy(privacy_tenant)

    updated = update_privacy_policy(policy, changes={"epsilon": 2.0, "budget": 10.0}, actor=staff_user)

    change = PrivacyPolicyChange.objects.get(policy=policy)
    assert updated.epsilon == 2.0
    assert change.changed_by == staff_user
    assert change.old_values == {"epsilon": 1.0}
    assert change.new_values == {"epsilon": 2.0}


def test_update_policy_without_change_writes_nothing(privacy_tenant, staff_user):
    policy = get_privacy_policy(privacy_tenant)

    update_privacy_policy(policy, changes={"epsilon": policy.epsilon}, actor=staff_user)

    assert PrivacyPolicyChange.objects.count() == 0


def test_update_policy_rolls_back_when_audit_fails(privacy_tenant, staff_user, monkeypatch):
    # given: the audit row cannot be written
    policy = get_privacy_policy(privacy_tenant)

    def failing_create(*args, **kwargs):
        raise IntegrityError("audit table unavailable")

    monkeypatch.setattr(PrivacyPolicyChange.objects, "create", failing_create)

    # when
    with pytest.raises(IntegrityError):
        update_privacy_policy(policy, changes={"epsilon": 3.0}, actor=staff_user)

    # then: the change was in the same transaction, so it is gone too
    assert PrivacyPolicy.objects.get(pk=policy.pk).epsilon == 1.0


def test_update_policy_rejects_invalid_value_without_writing(privacy_tenant, staff_user):
    policy = get_privacy_policy(privacy_tenant)

    with pytest.raises(ValidationError):
        update_privacy_policy(policy, changes={"epsilon": math.nan}, actor=staff_user)

    assert PrivacyPolicy.objects.get(pk=policy.pk).epsilon == 1.0
    assert PrivacyPolicyChange.objects.count() == 0


def test_update_policy_rejects_unknown_field(privacy_tenant):
    policy = get_privacy_policy(privacy_tenant)

    with pytest.raises(ValueError, match="unknown privacy policy fields: epsilom"):
        update_privacy_policy(policy, changes={"epsilom": 2.0}, actor=None)


def test_create_policy_audits_initial_values(privacy_tenant, staff_user):
    policy = create_privacy_policy(privacy_tenant, values={"epsilon": 0.5, "budget": 5.0}, actor=staff_user)

    change = PrivacyPolicyChange.objects.get(policy=policy)
    assert change.old_values == {}
    assert change.new_values["epsilon"] == 0.5


def test_admin_change_goes_through_service(privacy_tenant, officer_client, staff_user):
    # given
    policy = get_privacy_policy(privacy_tenant)
    data = form_data(privacy_tenant, epsilon="4", budget="20")
    data.update({"changes-TOTAL_FORMS": "0", "changes-INITIAL_FORMS": "0"})

    # when
    response = officer_client.post(f"/admin/privacy/privacypolicy/{policy.pk}/change/", data)

    # then
    assert response.status_code == 302, response.content[:2000]
    change = PrivacyPolicyChange.objects.get(policy=policy)
    assert change.changed_by == staff_user
    assert change.old_values == {"epsilon": 1.0, "budget": 10.0}
    assert change.new_values == {"epsilon": 4.0, "budget": 20.0}


def test_admin_rejects_invalid_epsilon(privacy_tenant, officer_client):
    policy = get_privacy_policy(privacy_tenant)
    data = form_data(privacy_tenant, epsilon="0")
    data.update({"changes-TOTAL_FORMS": "0", "changes-INITIAL_FORMS": "0"})

    response = officer_client.post(f"/admin/privacy/privacypolicy/{policy.pk}/change/", data)

    assert response.status_code == 200
    assert b"epsilon must be greater than 0 and at most 10; got 0" in response.content
    assert PrivacyPolicyChange.objects.count() == 0


def test_admin_add_policy_writes_audit_row(privacy_tenant, officer_client, staff_user):
    data = form_data(privacy_tenant, epsilon="2")
    data.update({"changes-TOTAL_FORMS": "0", "changes-INITIAL_FORMS": "0"})

    response = officer_client.post("/admin/privacy/privacypolicy/add/", data)

    assert response.status_code == 302, response.content[:2000]
    policy = PrivacyPolicy.objects.get(tenant=privacy_tenant)
    assert policy.epsilon == 2.0
    assert PrivacyPolicyChange.objects.get(policy=policy).changed_by == staff_user


def test_admin_shows_change_history(privacy_tenant, officer_client, staff_user):
    policy = get_privacy_policy(privacy_tenant)
    update_privacy_policy(policy, changes={"epsilon": 2.0}, actor=staff_user)

    response = officer_client.get(f"/admin/privacy/privacypolicy/{policy.pk}/change/")

    assert response.status_code == 200
    assert b"officer" in response.content


@pytest.mark.parametrize("model", ["ledgerentry", "budgetaccount", "privacypolicychange"])
def test_admin_ledger_models_are_read_only(officer_client, model):
    listing = officer_client.get(f"/admin/privacy/{model}/")
    add = officer_client.get(f"/admin/privacy/{model}/add/")

    assert listing.status_code == 200
    assert add.status_code == 403


def test_admin_ledger_search_by_user(privacy_tenant, app_user, officer_client):
    from privacy.services import spend_privacy_budget

    spend_privacy_budget(
        tenant=privacy_tenant, user=app_user, request_id="req-1", epsilon=1.0,
        mechanism="user_vector", parameters={}, released=["v1"],
    )

    found = officer_client.get("/admin/privacy/ledgerentry/", {"q": "alice"})
    budget = officer_client.get("/admin/privacy/budgetaccount/")

    assert b"req-1" in found.content
    assert b"alice" in budget.content
