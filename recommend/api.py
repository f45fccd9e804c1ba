"""REST endpoints for recommendations, privacy budgets and erasing a user."""

import math

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from privacy.models import PrivacyPolicy
from privacy.selectors import get_budget_status
from privacy.services import get_privacy_policy
from recommend.serving import recommend_for_user
from recsys_platform import rows
from recsys_platform.api import InvalidParameter
from users.errors import AppUserNotFound
from users.models import AppUser
from users.services import erase_app_user
from videos.api import parse_k

BUDGET_SCHEMA = inline_serializer(
    "PrivacyBudget",
    {
        "budget": serializers.FloatField(), "spent": serializers.FloatField(),
        "remaining": serializers.FloatField(), "window_start": serializers.DateTimeField(),
        "window_end": serializers.DateTimeField(), "mechanism": serializers.CharField(),
        "epsilon_per_response": serializers.FloatField(),
    },
)


def get_app_user(tenant, user_id: str) -> AppUser:
    user = None
    # PostgreSQL text cannot hold NUL, so no stored id contains one, and querying
    # with it would raise DataError.
    if "\x00" not in user_id:
        user = AppUser.objects.filter(tenant=tenant, external_id=user_id).first()
    return _found(user, user_id)


def _found(user: AppUser | None, user_id: str) -> AppUser:
    if user is None:
        raise AppUserNotFound(
            f"No user with id {user_id!r} exists for this tenant; users are created by their first interaction."
        )
    return user


def policy_and_app_user(tenant, user_id: str) -> tuple[PrivacyPolicy, AppUser | None]:
    """Return the tenant's privacy policy and the user with ``user_id`` (None if unknown).

    Every recommendation request reads both, so they come from one query without the
    ORM's query compilation.
    """
    if "\x00" in user_id:
        return get_privacy_policy(tenant), None
    row = rows.fetch_row(
        f"SELECT {rows.columns(PrivacyPolicy, 'p')}, {rows.columns(AppUser, 'u')} "
        f"FROM {PrivacyPolicy._meta.db_table} p LEFT JOIN {AppUser._meta.db_table} u "
        "ON u.tenant_id = p.tenant_id AND u.external_id = %s WHERE p.tenant_id = %s ORDER BY u.id LIMIT 1",
        [user_id, tenant.pk],
    )
    if row is None:
        # The tenant has no policy yet; get_privacy_policy creates the default one.
        return get_privacy_policy(tenant), AppUser.objects.filter(tenant=tenant, external_id=user_id).first()
    width = rows.width(PrivacyPolicy)
    user = rows.instance(AppUser, row, width) if row[width] is not None else None
    return rows.instance(PrivacyPolicy, row), user


def parse_epsilon(raw, *, maximum: float) -> float | None:
    """Parse an optional ``epsilon`` query parameter: finite, > 0 and <= the policy's epsilon."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameter(f"epsilon must be a number greater than 0 and at most {maximum:g}; got {raw!r}.",
                               code="invalid_epsilon") from None
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise InvalidParameter(f"epsilon must be greater than 0 and at most {maximum:g}; got {raw}.",
                               code="invalid_epsilon")
    return value


class RecommendationsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("k", int, description="Number of videos, 1 to the tenant's max_k (default 10)."),
            OpenApiParameter("epsilon", float, description="Spend less than the policy's epsilon for this response."),
            OpenApiParameter("request_id", str, description="Repeat it when retrying: the same list is returned "
                             "and nothing is spent twice. Also read from the Idempotency-Key header."),
        ],
        responses=inline_serializer(
            "Recommendations",
            {
                "user": serializers.CharField(), "request_id": serializers.CharField(),
                "videos": serializers.ListField(child=serializers.CharField()),
                "personalised": serializers.BooleanField(),
                "fallback_reason": serializers.CharField(allow_null=True),
                "mechanism": serializers.CharField(), "epsilon_spent": serializers.FloatField(),
                "replayed": serializers.BooleanField(), "budget": BUDGET_SCHEMA,
            },
        ),
    )
    def get(self, request, user_id: str):
        tenant = request.user.tenant
        policy, user = policy_and_app_user(tenant, user_id)
        maximum_k = min(policy.max_k, settings.RECOMMEND_MAX_K)
        k = parse_k(request.query_params.get("k"), default=min(10, maximum_k), maximum=maximum_k)
        epsilon = parse_epsilon(request.query_params.get("epsilon"), maximum=policy.epsilon)
        request_id = request.query_params.get("request_id") or request.headers.get("Idempotency-Key")
        if request_id is not None and not 1 <= len(request_id) <= 128:
            raise InvalidParameter(f"request_id must be 1 to 128 characters; got {len(request_id)}.")
        if request_id is not None and "\x00" in request_id:
            raise InvalidParameter("request_id must not contain NUL characters; remove them and retry.")

        user = _found(user, user_id)
        result = recommend_for_user(tenant, user, k=k, request_id=request_id, epsilon=epsilon, policy=policy)

        return Response({
            "user": user.external_id, "request_id": result.request_id, "videos": result.video_ids,
            "personalised": result.personalised, "fallback_reason": result.fallback_reason,
            "mechanism": result.mechanism, "epsilon_spent": result.epsilon_spent, "replayed": result.replayed,
            "budget": result.budget,
        })


class PrivacyBudgetView(APIView):
    @extend_schema(responses=BUDGET_SCHEMA)
    def get(self, request, user_id: str):
        user = get_app_user(request.user.tenant, user_id)
        return Response(get_budget_status(request.user.tenant, user).as_dict())


class AppUserView(APIView):
    @extend_schema(responses={204: None}, description="Erase the user's interactions, embeddings and ledger rows.")
    def delete(self, request, user_id: str):
        user = get_app_user(request.user.tenant, user_id)
        erase_app_user(user)
        return Response(status=status.HTTP_204_NO_CONTENT)
