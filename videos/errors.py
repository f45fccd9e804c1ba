"""API errors of the videos app, each with a stable code."""

from rest_framework import exceptions, status


class InvalidMedia(exceptions.APIException):
    """The uploaded file is not a video the platform can process."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The uploaded file is not a supported video."
    default_code = "invalid_media"

    def __init__(self, message: str, code: str):
        super().__init__(detail=message, code=code)


class UploadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The uploaded file is larger than the configured limit."
    default_code = "upload_too_large"


class DuplicateVideo(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A video with this external_id already exists for this tenant."
    default_code = "duplicate_video"


class VideoNotFound(exceptions.NotFound):
    default_detail = "No video with this id exists for this tenant."
    default_code = "video_not_found"


class VideoNotReady(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The video has no fused embedding yet; wait until its status is ready or partial."
    default_code = "video_not_ready"


class BrokerUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The task queue is unavailable, so the upload was not accepted; retry shortly."
    default_code = "service_unavailable"
