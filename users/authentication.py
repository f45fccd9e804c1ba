"""``Authorization: Api-Key <key>`` authentication that scopes a request to one tenant."""

import logging
from dataclasses import dataclass
from functools import cache

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from recsys_platform import rows
from users.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

KEYWORD = "Api-Key"


@dataclass(frozen=True)
class TenantPrincipal:
    """The caller of an API request: a tenant, through one of its keys."""

    tenant: Tenant
    api_key_id: int

    is_authenticated = True
    is_anonymous = False


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticate a request by a tenant's API key."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw_key = header.partition(" ")
        if keyword != KEYWORD:
            return None
        raw_key = raw_key.strip()
        prefix = ApiKey.prefix_of(raw_key)
        if prefix is None:
            raise exceptions.AuthenticationFailed("Malformed API key; expected 'Api-Key rk_<prefix>_<secret>'.")

        key = _key_with_tenant(prefix)
        if key is None or not key.matches(raw_key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.is_revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked; ask an admin for a new one.")
        if not key.tenant.is_active:
            raise exceptions.AuthenticationFailed("This tenant is deactivated.")

        _touch(key)
        return TenantPrincipal(tenant=key.tenant, api_key_id=key.pk), key

    def authenticate_header(self, request):
        return KEYWORD


@cache
def _key_sql() -> str:
    return (
        f"SELECT {rows.columns(ApiKey, 'k')}, {rows.columns(Tenant, 't')} "
        f"FROM {ApiKey._meta.db_table} k JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id "
        "WHERE k.prefix = %s ORDER BY k.id LIMIT 1"
    )


def _key_with_tenant(prefix: str) -> ApiKey | None:
    # Every request runs this lookup, so it skips the ORM's query compilation.
    row = rows.fetch_row(_key_sql(), [prefix])
    if row is None:
        return None
    key = rows.instance(ApiKey, row)
    key.tenant = rows.instance(Tenant, row, rows.width(ApiKey))
    return key


def _touch(key: ApiKey) -> None:
    # Writing last_used_at on every request would put a row lock on the hot path. A
    # minute's resolution is enough for an admin deciding which keys are in use.
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)


class HasTenant(permissions.BasePermission):
    """Allow only requests authenticated by a tenant API key."""

    def has_permission(self, request, view):
        return isinstance(request.user, TenantPrincipal)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describe ``ApiKeyAuthentication`` in the OpenAPI schema as the ``ApiKeyAuth`` scheme."""

    target_class = "users.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization"}

    def get_security_requirement(self, auto_schema):
        # SPECTACULAR_SETTINGS["SECURITY"] already requires ApiKeyAuth on every
        # operation; a second requirement here would list it twice.
        return None
