"""REST endpoints for interactions."""

import math

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from users.models import EventType
from users.services import InteractionInput, record_interactions


def _finite(value):
    if value is not None and not math.isfinite(value):
        raise serializers.ValidationError(f"must be a finite number; got {value}.")
    return value


class InteractionSerializer(serializers.Serializer):
    user = serializers.CharField(max_length=255, help_text="The app's id of the user.")
    video = serializers.CharField(max_length=255, help_text="The video's external id.")
    event_type = serializers.ChoiceField(choices=EventType.choices)
    watch_seconds = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=86_400, validators=[_finite],
        help_text="Seconds watched, 0 to 86400.",
    )
    occurred_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Defaults to now.")

    def to_input(self) -> InteractionInput:
        data = self.validated_data
        return InteractionInput(
            user_id=data["user"],
            video_id=data["video"],
            event_type=data["event_type"],
            watch_seconds=data.get("watch_seconds"),
            occurred_at=data.get("occurred_at"),
        )


class InteractionBatchSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField(
        max_length=128, required=False, allow_null=True,
        help_text="Send the same key when retrying a batch; a batch whose key was accepted is not stored again.",
    )
    interactions = InteractionSerializer(many=True, allow_empty=False)

    def validate_interactions(self, value):
        limit = settings.INTERACTIONS_MAX_BATCH
        if len(value) > limit:
            raise serializers.ValidationError(
                f"A batch contains at most {limit} interactions; got {len(value)}. Split it into smaller batches."
            )
        return value


class InteractionsView(APIView):
    @extend_schema(
        request=InteractionBatchSerializer,
        responses={
            201: inline_serializer(
                "InteractionsAccepted",
                {"accepted": serializers.IntegerField(), "replayed": serializers.BooleanField(),
                 "idempotency_key": serializers.CharField(allow_null=True)},
            )
        },
        description="Record one interaction (a single object) or a batch "
        "(`{\"idempotency_key\": ..., \"interactions\": [...]}`), all or nothing.",
    )
    def post(self, request):
        if isinstance(request.data, dict) and "interactions" in request.data:
            batch = InteractionBatchSerializer(data=request.data)
            batch.is_valid(raise_exception=True)
            items = [InteractionInput(
                user_id=i["user"], video_id=i["video"], event_type=i["event_type"],
                watch_seconds=i.get("watch_seconds"), occurred_at=i.get("occurred_at"),
            ) for i in batch.validated_data["interactions"]]
            key = batch.validated_data.get("idempotency_key")
        else:
            single = InteractionSerializer(data=request.data)
            single.is_valid(raise_exception=True)
            items = [single.to_input()]
            key = request.headers.get("Idempotency-Key")

        recorded = record_interactions(request.user.tenant, items, idempotency_key=key)

        body = {"accepted": recorded.count, "replayed": recorded.replayed, "idempotency_key": recorded.idempotency_key}
        return Response(body, status=status.HTTP_200_OK if recorded.replayed else status.HTTP_201_CREATED)
