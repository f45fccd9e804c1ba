"""Errors of the feature extractors, each with a stable snake_case code.

A MediaError fails the whole video: the file cannot be used at all. A
ModalityUnavailable removes one modality (visual, text or audio) from the video and
the others are still extracted. Callers store `code` and show the message. Both are
safe to return to the uploader: they state properties of the uploaded file and
never contain a stack trace or a server path.
"""


class MediaError(Exception):
    """The media file cannot be ingested; `code` names the failure.

    Codes: empty_file, not_media, unreadable_container, truncated_file,
    no_video_stream, unsupported_codec, invalid_resolution, resolution_too_large,
    zero_duration, duration_too_long, decode_failed.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"MediaError({self.code!r}, {self.message!r})"


class ModalityUnavailable(Exception):
    """One modality of a video cannot be extracted; `code` names the reason.

    Codes: no_audio_track, too_few_samples, non_finite_audio, silent_audio,
    empty_text, no_decodable_frames, invalid_vector, and no_media for a video
    without a media file.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ModalityUnavailable({self.code!r}, {self.message!r})"
