"""REST endpoints for video uploads, status and similar videos."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from recsys_platform.api import InvalidParameter
from videos.models import MODALITIES, Video
from videos.selectors import get_video, similar_videos
from videos.services import create_video_upload

MAX_TITLE_CHARS = 100_000
MAX_DESCRIPTION_CHARS = 100_000
MAX_TAGS = 100


class TagListField(serializers.ListField):
    """Tags as repeated form fields or one comma-separated string."""

    child = serializers.CharField(max_length=200, allow_blank=False)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [part.strip() for part in data.split(",") if part.strip()]
        elif isinstance(data, list) and len(data) == 1 and isinstance(data[0], str) and "," in data[0]:
            data = [part.strip() for part in data[0].split(",") if part.strip()]
        return super().to_internal_value(data)

    def get_value(self, dictionary):
        if hasattr(dictionary, "getlist"):
            values = dictionary.getlist(self.field_name)
            return values if values else serializers.empty
        return dictionary.get(self.field_name, serializers.empty)


def _clean_text(value: str) -> str:
    # NUL bytes cannot be stored in PostgreSQL text columns.
    return value.replace("\x00", "")


class VideoUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, help_text="The video file (mp4, webm, mkv, mov).")
    title = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TITLE_CHARS, trim_whitespace=False)
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_DESCRIPTION_CHARS, trim_whitespace=False
    )
    tags = TagListField(required=False, max_length=MAX_TAGS)
    external_id = serializers.RegexField(
        r"^[A-Za-z0-9._:-]{1,255}$", required=False,
        help_text="Your id for the video (letters, digits, . _ : -); generated if absent.",
    )


class VideoSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="external_id")
    modalities = serializers.SerializerMethodField()
    missing_modalities = serializers.JSONField(source="modality_reasons")
    failure_reason = serializers.SerializerMethodField()

    class Meta:
        model = Video
        fields = [
            "id", "title", "description", "tags", "status", "failure_reason", "status_message",
            "modalities", "missing_modalities", "duration_s", "width", "height", "has_audio",
            "created_at", "processed_at",
        ]

    def get_modalities(self, video) -> list[str]:
        return [m for m in MODALITIES if getattr(video, f"{m}_embedding") is not None]

    def get_failure_reason(self, video) -> str | None:
        return video.status_reason or None


class VideoListView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": VideoUploadSerializer}, responses={202: VideoSerializer})
    def post(self, request):
        serializer = VideoUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        video = create_video_upload(
            tenant=request.user.tenant,
            uploaded_file=data["file"],
            title=_clean_text(data.get("title", "")),
            description=_clean_text(data.get("description", "")),
            tags=[_clean_text(t) for t in data.get("tags", [])],
            external_id=data.get("external_id"),
        )

        return Response(VideoSerializer(video).data, status=status.HTTP_202_ACCEPTED)


class VideoDetailView(APIView):
    @extend_schema(responses=VideoSerializer)
    def get(self, request, video_id: str):
        video = get_video(request.user.tenant, video_id)
        return Response(VideoSerializer(video).data)


def parse_k(raw, *, default: int, maximum: int) -> int:
    """Parse the ``k`` query parameter; raise InvalidParameter naming the value and range."""
    if raw is None or raw == "":
        return default
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise InvalidParameter(f"k must be an integer from 1 to {maximum}; got {raw!r}.") from None
    if not 1 <= k <= maximum:
        raise InvalidParameter(f"k must be an integer from 1 to {maximum}; got {k}.")
    return k


class SimilarVideosView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("k", int, description="Number of videos, 1 to RECOMMEND_MAX_K (default 10).")],
        responses=inline_serializer(
            "SimilarVideos",
            {"id": serializers.CharField(),
             "similar": serializers.ListField(child=serializers.DictField())},
        ),
    )
    def get(self, request, video_id: str):
        k = parse_k(request.query_params.get("k"), default=10, maximum=settings.RECOMMEND_MAX_K)
        video = get_video(request.user.tenant, video_id)

        neighbours = similar_videos(video, k, ef_search=settings.RECOMMEND_HNSW_EF_SEARCH)

        return Response({
            "id": video.external_id,
            "similar": [
                {"id": v.external_id, "title": v.title, "similarity": round(score, 6)}
                for v, score in neighbours
            ],
        })
