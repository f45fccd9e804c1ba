"""API errors of the users app, each with a stable code."""

from rest_framework import exceptions, status


def _preview(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class UnknownVideos(exceptions.APIException):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "video_not_found"

    def __init__(self, video_ids: list[str]):
        super().__init__(
            f"No video of this tenant has the id {_preview(video_ids)}; upload or import it first. "
            "No interaction of this request was stored."
        )


class VideosNotReady(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "video_not_ready"

    def __init__(self, video_ids: list[str]):
        super().__init__(
            f"Video {_preview(video_ids)} is still being processed or failed; send interactions "
            "once its status is ready or partial. No interaction of this request was stored."
        )


class AppUserNotFound(exceptions.NotFound):
    default_detail = "No user with this id exists for this tenant."
    default_code = "user_not_found"
