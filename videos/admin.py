from django.contrib import admin

from videos.models import Video
from videos.services import reprocess_videos


@admin.register(Video)
class VideoAdmin(admin.ModelAdmin):
    list_display = ("external_id", "tenant", "status", "status_reason", "modalities", "duration_s", "created_at")
    list_filter = ("status", "status_reason", "tenant")
    search_fields = ("external_id", "title")
    readonly_fields = (
        "status", "status_reason", "status_message", "modality_reasons", "attempts", "duration_s", "width",
        "height", "has_audio", "visual_extractor", "text_extractor", "audio_extractor", "fusion_version",
        "popularity", "processed_at", "created_at", "updated_at",
    )
    exclude = ("visual_embedding", "text_embedding", "audio_embedding", "fused_embedding")
    actions = ["reprocess"]

    @admin.display(description="modalities")
    def modalities(self, video):
        return ", ".join(video.modalities_present) or "-"

    @admin.action(description="Reprocess selected videos (extract again)")
    def reprocess(self, request, queryset):
        count = reprocess_videos(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Queued {count} videos for extraction; videos without media were skipped.")
