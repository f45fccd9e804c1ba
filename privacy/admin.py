from django.contrib import admin
from django.db.models import F

from privacy.forms import PrivacyPolicyForm
from privacy.models import (
    POLICY_EDITABLE_FIELDS,
    BudgetAccount,
    LedgerEntry,
    PrivacyPolicy,
    PrivacyPolicyChange,
    PrivatisedUserVector,
)
from privacy.services import create_privacy_policy, update_privacy_policy


class ReadOnlyAdminMixin:
    """View-only admin: the ledger and audit rows are written only by privacy.services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PrivacyPolicyChangeInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PrivacyPolicyChange
    extra = 0
    fields = ("changed_at", "changed_by", "old_values", "new_values")
    readonly_fields = fields
    ordering = ("-changed_at", "-id")


@admin.register(PrivacyPolicy)
class PrivacyPolicyAdmin(admin.ModelAdmin):
    form = PrivacyPolicyForm
    list_display = ("tenant", "epsilon", "budget", "window_seconds", "mechanism", "max_k", "updated_at")
    list_filter = ("mechanism",)
    search_fields = ("tenant__name",)
    readonly_fields = ("updated_at",)
    inlines = [PrivacyPolicyChangeInline]

    def get_readonly_fields(self, request, obj=None):
        # A policy belongs to one tenant for good: moving it would move its audit trail.
        if obj is not None:
            return (*self.readonly_fields, "tenant")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        # Every save goes through the services so that the audit row is written in the
        # same transaction as the change.
        values = {name: form.cleaned_data[name] for name in POLICY_EDITABLE_FIELDS if name in form.cleaned_data}
        if change:
            saved = update_privacy_policy(
                PrivacyPolicy.objects.get(pk=obj.pk), changes=values, actor=request.user
            )
        else:
            saved = create_privacy_policy(obj.tenant, values=values, actor=request.user)
        obj.pk = saved.pk
        obj.updated_at = saved.updated_at


@admin.register(PrivacyPolicyChange)
class PrivacyPolicyChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("policy", "changed_at", "changed_by")
    list_filter = ("policy__tenant",)
    date_hierarchy = "changed_at"
    list_select_related = ("policy__tenant", "changed_by")


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "tenant", "user_external_id", "request_id", "epsilon_display", "mechanism", "window_start")
    list_filter = ("tenant", "mechanism", "created_at")
    search_fields = ("user__external_id", "request_id")
    date_hierarchy = "created_at"
    list_select_related = ("tenant", "user")
    ordering = ("-created_at", "-id")

    @admin.display(description="user", ordering="user__external_id")
    def user_external_id(self, obj):
        return obj.user.external_id

    @admin.display(description="epsilon", ordering="epsilon_micro")
    def epsilon_display(self, obj):
        return f"{obj.epsilon:g}"


@admin.register(BudgetAccount)
class BudgetAccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Per-user, per-window totals: epsilon spent against the tenant's current budget."""

    list_display = ("user_external_id", "tenant", "window_start", "spent_display", "budget_display")
    list_filter = ("tenant", "window_start")
    search_fields = ("user__external_id",)
    date_hierarchy = "window_start"
    list_select_related = ("tenant", "user")
    ordering = ("-window_start", "user__external_id")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(policy_budget=F("tenant__privacy_policy__budget"))
        )

    @admin.display(description="user", ordering="user__external_id")
    def user_external_id(self, obj):
        return obj.user.external_id

    @admin.display(description="spent", ordering="spent_micro")
    def spent_display(self, obj):
        return f"{obj.spent:g}"

    @admin.display(description="budget", ordering="policy_budget")
    def budget_display(self, obj):
        return "-" if obj.policy_budget is None else f"{obj.policy_budget:g}"


@admin.register(PrivatisedUserVector)
class PrivatisedUserVectorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("user", "tenant", "window_start", "history_version", "epsilon", "created_at")
    list_filter = ("tenant",)
    search_fields = ("user__external_id",)
    # The vector itself is left out: it is long and means nothing to a reader.
    exclude = ("vector",)
    list_select_related = ("tenant", "user")
