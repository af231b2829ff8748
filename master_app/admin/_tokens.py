"""Admin of tokens: public API tokens (issued here, shown once) and server tokens."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from master_app.models import ApiToken, ServerToken
from master_app.services.tokens import api_token_issue, api_token_revoke, server_tokens_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "jti", "created_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "jti")
    fields = ("name",)
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return ("name", "jti", "created_at", "expires_at", "revoked_at") if obj else ()

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) if obj else ("name",)

    def save_model(self, request, obj, form, change):
        if change:
            return
        record, token = api_token_issue(obj.name)
        obj.pk = record.pk
        self.message_user(
            request,
            format_html(
                "Token for {} (copy it now, it is not shown again): <code>{}</code>",
                record.name,
                token,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for record in queryset:
            api_token_revoke(record)
        self.message_user(request, f"revoked {queryset.count()} token(s)")


@admin.register(ServerToken)
class ServerTokenAdmin(admin.ModelAdmin):
    """Server tokens the master signed. New ones come from ``manage.py sign_jwt`` (the
    token goes to the node's token file); here they are listed and revoked."""

    list_display = ("node_id", "role", "jti", "url", "created_at", "expires_at", "revoked_at")
    list_filter = ("role", "revoked_at")
    search_fields = ("node_id", "jti")
    readonly_fields = list_display
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke the selected server tokens", permissions=["change"])
    def revoke(self, request, queryset):
        jtis = list(queryset.values_list("jti", flat=True))
        revoked = server_tokens_revoke(jtis=jtis) if jtis else 0
        self.message_user(request, f"revoked {revoked} server token(s)")
