from django.contrib import admin, messages

from users.models import ApiKey, AppUser, Interaction, Tenant
from users.services import create_api_key, revoke_api_key


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ("prefix", "label", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        # Keys are created with the "Create an API key" action, which shows the plain
        # key once. The inline form has no way to show a generated key.
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "is_active", "created_at")
    search_fields = ("name", "display_name")
    list_filter = ("is_active",)
    inlines = [ApiKeyInline]
    actions = ["create_key"]

    @admin.action(description="Create an API key (shown once)")
    def create_key(self, request, queryset):
        for tenant in queryset:
            key, raw_key = create_api_key(tenant, label=f"created by {request.user.get_username()}")
            self.message_user(
                request,
                f"New API key for {tenant.name}: {raw_key} (copy it now; only its hash is stored).",
                level=messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "tenant", "label", "created_at", "last_used_at", "revoked_at")
    list_filter = ("tenant", ("revoked_at", admin.EmptyFieldListFilter))
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            revoke_api_key(key)
        self.message_user(request, f"Revoked {queryset.count()} keys.")


@admin.register(AppUser)
class AppUserAdmin(admin.ModelAdmin):
    list_display = ("external_id", "tenant", "history_version", "created_at")
    list_filter = ("tenant",)
    search_fields = ("external_id",)


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ("user", "video", "event_type", "watch_seconds", "occurred_at")
    list_filter = ("tenant", "event_type")
    raw_id_fields = ("user", "video")
    list_select_related = ("user", "video")
