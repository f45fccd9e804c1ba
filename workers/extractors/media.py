"""Probe and decode uploaded media with PyAV (FFmpeg's libraries).

Every function opens the file through a reader that hides the file name from
FFmpeg, so the container format is detected from the bytes alone: a text file named
`.mp4` is `not_media`, and a real MP4 named `.bin` still opens.
"""

import bisect
import dataclasses
import logging
import os
import struct
import time
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from workers.extractors.audio import check_audio_samples
from workers.extractors.errors import MediaError, ModalityUnavailable

logger = logging.getLogger(__name__)

# Leading bytes of containers FFmpeg reads. A file that starts like one of them but
# does not open is a damaged container (unreadable_container), not a non-media file.
_ISO_BMFF_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"}
_SIGNATURES = (
    b"\x1a\x45\xdf\xa3",  # EBML: Matroska, WebM
    b"RIFF",  # AVI, WAV
    b"OggS",
    b"FLV",
    b"\x00\x00\x01\xba",  # MPEG program stream
    b"\x30\x26\xb2\x75",  # ASF, WMV
)
_MPEG_TS_PACKET_BYTES = 188

# Probing decodes at most this many video packets while looking for the first frame.
# An H.264 stream needs a few packets to fill its reorder buffer, and decoder threads
# need a few more.
_PROBE_MAX_PACKETS = 64

_RESAMPLER_FORMAT = "fltp"


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """Properties of a media file that passed `probe_media`.

    `width` and `height` are the stored frame size in pixels, swapped when
    `rotation_degrees` (counter-clockwise, as FFmpeg's display matrix states it) is a
    quarter turn. A non-square pixel aspect ratio is not applied to them.
    """

    format_name: str
    duration_s: float
    width: int
    height: int
    rotation_degrees: int
    has_video: bool
    has_audio: bool
    audio_channels: int
    audio_sample_rate: int
    video_codec: str
    audio_codec: str


class _NamelessReader:
    """File object without a `name`, so FFmpeg cannot guess the format from the extension."""

    def __init__(self, path: str):
        self._file = open(path, "rb")

    def read(self, size: int) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class _Input:
    """Context manager of an opened input container and its underlying file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.size = os.path.getsize(self.path)
        if self.size == 0:
            raise MediaError("empty_file", "The file is empty (0 bytes); upload the complete video file.")

        self._reader = _NamelessReader(self.path)
        try:
            # metadata_errors="replace": PyAV decodes every tag as UTF-8 when opening,
            # and a tag in another encoding would otherwise raise UnicodeDecodeError.
            self.container = av.open(self._reader, mode="r", metadata_errors="replace")
        except av.error.FFmpegError as error:
            self._reader.close()
            logger.info("FFmpeg could not open %s (%d bytes): %s", self.path, self.size, error)
            raise _open_error(self.path, self.size) from error
        except BaseException:
            self._reader.close()
            raise

    def __enter__(self) -> "_Input":
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.container.close()
        finally:
            self._reader.close()


def _open_error(path: str, size: int) -> MediaError:
    with open(path, "rb") as file:
        head = file.read(2 * _MPEG_TS_PACKET_BYTES + 1)

    if _looks_like_container(head):
        return MediaError(
            "unreadable_container",
            f"The file ({size} bytes) starts like a video container, but its header or index "
            "cannot be read; it is probably truncated or damaged. Upload the complete file.",
        )
    return MediaError(
        "not_media",
        f"The file ({size} bytes) is not a video or audio format that can be read; "
        "upload an MP4, WebM, MKV or MOV file.",
    )


def _looks_like_container(head: bytes) -> bool:
    if len(head) >= 8 and head[4:8] in _ISO_BMFF_BOX_TYPES:
        return True
    if any(head.startswith(signature) for signature in _SIGNATURES):
        return True
    return (
        len(head) > _MPEG_TS_PACKET_BYTES
        and head[0] == 0x47
        and head[_MPEG_TS_PACKET_BYTES] == 0x47
    )


def _video_stream(container) -> av.video.stream.VideoStream | None:
    """Return the first video stream that is not a cover picture, or None."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _audio_stream(container) -> av.audio.stream.AudioStream | None:
    """Return the first audio stream that has a decoder, or None."""
    for stream in container.streams.audio:
        if stream.codec_context is not None:
            return stream
    return None


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _header_span(container, stream) -> tuple[float, float] | None:
    """Return (start, duration) of a stream in seconds as its headers state it, or None."""
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    duration = _seconds(stream.duration, stream.time_base)
    if not duration or duration <= 0:
        duration = container.duration / av.time_base if container.duration else None
    if duration and duration > 0:
        return start, duration
    return None


def _stream_span(source: "_Input", stream) -> tuple[float, float]:
    """Return (start, duration) of a stream in seconds, from headers when they have it.

    When neither the stream nor the container states a duration, the stream's
    packets are demuxed (not decoded) in a second handle on the file, and the span of
    their timestamps is used, so `source` keeps its read position.
    """
    span = _header_span(source.container, stream)
    if span is not None:
        return span
    with _Input(source.path) as scan:
        return _demuxed_span(scan.container, scan.container.streams[stream.index])


def _demuxed_span(container, stream) -> tuple[float, float]:
    """Return (start, duration) in seconds from the timestamps of the stream's packets.

    A stream needs two packets at distinct times to have a measurable duration: a
    single packet's duration is a guess when the headers state none (FFmpeg assumes
    25 fps for a still picture), so one frame alone gives duration 0.
    """
    timestamps = set()
    end = None
    packets = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        packets += 1
        if packet.pts is None:
            continue
        timestamps.add(packet.pts)
        packet_end = packet.pts + (packet.duration or 0)
        end = packet_end if end is None else max(end, packet_end)

    if len(timestamps) >= 2:
        first = min(timestamps)
        return float(first * stream.time_base), float((end - first) * stream.time_base)
    # Without timestamps (a raw elementary stream), count packets at the frame rate.
    rate = stream.average_rate or stream.guessed_rate
    if not timestamps and packets >= 2 and rate:
        return 0.0, float(packets / rate)
    return 0.0, 0.0


def _check_iso_boxes(source: _Input) -> None:
    """Raise truncated_file when a top-level box of an MP4/MOV file runs past its end.

    FFmpeg opens an MP4 whose trailing index (moov) is cut in half and silently drops
    the tracks it could not read, so the box sizes are checked here. In ISO/IEC
    14496-12 a box starts with a 32-bit size, which is 1 when a 64-bit size follows
    the type and 0 when the box runs to the end of the file.
    """
    offset = 0
    with open(source.path, "rb") as file:
        while offset + 8 <= source.size:
            file.seek(offset)
            header = file.read(16)
            box_size, kind = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) == 16:
                (box_size,) = struct.unpack(">Q", header[8:16])
            if box_size == 0 or box_size < 8 or not all(32 <= byte < 127 for byte in kind):
                # The rest of the file is one box, or it is not box-structured (trailing
                # bytes some writers leave); FFmpeg has already accepted what came before.
                return
            if offset + box_size > source.size:
                name = kind.decode("ascii")
                raise MediaError(
                    "truncated_file",
                    f"The file is truncated: its '{name}' box needs bytes up to {offset + box_size}, "
                    f"but the file ends at byte {source.size}. Upload the complete file.",
                )
            offset += box_size


def _check_truncation(source: _Input) -> None:
    """Raise truncated_file when the file's boxes or index point past its end."""
    if source.container.format.name.startswith("mov"):
        _check_iso_boxes(source)

    index_end = 0
    for stream in source.container.streams:
        if stream.type not in ("video", "audio"):
            continue
        for entry in stream.index_entries:
            index_end = max(index_end, entry.pos + max(entry.size, 0))

    if index_end > source.size:
        raise MediaError(
            "truncated_file",
            f"The file is truncated: its index refers to byte {index_end}, but the file "
            f"ends at byte {source.size}. Upload the complete file.",
        )


def _decoded_frames(container, stream) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """Decode one stream from the current position, skipping packets that fail to decode."""
    failures = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as error:
            failures += 1
            if failures == 1 or failures % 100 == 0:
                logger.warning("Skipped %d undecodable packets of stream %d: %s", failures, stream.index, error)
            continue
        yield from frames


def probe_media(path, *, max_duration_s: float, max_width: int, max_height: int) -> MediaInfo:
    """Validate a media file and return its properties, decoding one video frame.

    Checks run cheapest first, so a file is rejected before anything is decoded when
    its headers already show the problem. The size limit ignores orientation: the
    frame must fit in a max_width x max_height box in either orientation. So a
    portrait clip of an accepted landscape size passes, whether it is stored upright
    or stored landscape with a 90-degree display rotation. The first video frame is
    then decoded to read the display rotation and to prove that the stream decodes.

    Raises FileNotFoundError when `path` does not exist, and MediaError with code
    empty_file, not_media, unreadable_container, no_video_stream, truncated_file,
    unsupported_codec, invalid_resolution, resolution_too_large, zero_duration,
    duration_too_long or decode_failed.
    """
    with _Input(path) as source:
        container = source.container
        video = _video_stream(container)
        audio = _audio_stream(container)
        if video is None:
            kind = "an audio-only file" if audio is not None else "a file without video"
            raise MediaError(
                "no_video_stream",
                f"The file is {kind} ({container.format.name}); upload a file with a video track.",
            )

        _check_truncation(source)

        if video.codec_context is None:
            raise MediaError(
                "unsupported_codec",
                "The video stream's codec is unknown or has no decoder on this server; "
                "re-encode the video as H.264, HEVC, VP8, VP9 or AV1.",
            )
        width = video.codec_context.width
        height = video.codec_context.height
        _check_resolution(width, height, max_width=max_width, max_height=max_height)

        _, duration_s = _stream_span(source, video)
        if container.duration and container.duration > 0:
            duration_s = max(duration_s, container.duration / av.time_base)
        _check_duration(duration_s, max_duration_s=max_duration_s)

        rotation = _first_frame_rotation(container, video)
        if rotation % 180:
            width, height = height, width

        return MediaInfo(
            format_name=container.format.name,
            duration_s=duration_s,
            width=width,
            height=height,
            rotation_degrees=rotation,
            has_video=True,
            has_audio=audio is not None,
            audio_channels=audio.codec_context.channels if audio is not None else 0,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else "",
        )


def _check_resolution(width: int, height: int, *, max_width: int, max_height: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(
            "invalid_resolution",
            f"The video stream declares no valid frame size (got {width}x{height}); FFmpeg "
            "rejects sizes above about 268 megapixels. Re-encode the video at a normal size.",
        )

    long_side, short_side = max(width, height), min(width, height)
    long_limit, short_limit = max(max_width, max_height), min(max_width, max_height)
    if long_side > long_limit or short_side > short_limit:
        raise MediaError(
            "resolution_too_large",
            f"The video is {width}x{height} pixels; the maximum is {max_width}x{max_height} "
            "in either orientation. Downscale the video and upload it again.",
        )


def _check_duration(duration_s: float, *, max_duration_s: float) -> None:
    if duration_s <= 0:
        raise MediaError(
            "zero_duration",
            "The video has zero or unknown duration, even after reading all its packets; "
            "upload a video that contains at least one timed frame.",
        )
    if duration_s > max_duration_s:
        raise MediaError(
            "duration_too_long",
            f"The video lasts {duration_s:.1f} s; the maximum is {max_duration_s:g} s. "
            "Trim the video and upload it again.",
        )


def _first_frame_rotation(container, stream) -> int:
    packets = 0
    for packet in container.demux(stream):
        packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            frames = []
        if frames:
            return _rotation_of(frames[0])
        if packets >= _PROBE_MAX_PACKETS:
            break

    raise MediaError(
        "decode_failed",
        f"No frame of the {stream.codec_context.name} video stream could be decoded from "
        f"its first {packets} packets; the file is damaged or uses an unsupported encoding.",
    )


def _rotation_of(frame: av.VideoFrame) -> int:
    """Return the display rotation of a frame, counter-clockwise, in {0, 90, 180, 270}."""
    # PyAV 18 (with FFmpeg 8) exposes the DISPLAYMATRIX side data as VideoFrame.rotation,
    # in degrees counter-clockwise within [-180, 180]. The decoder copies the container's
    # display matrix onto every frame, as the rotated test clips confirm.
    degrees = getattr(frame, "rotation", 0) or 0
    return int(round(degrees / 90.0)) % 4 * 90


def sample_frames(path, *, count: int, size: int) -> list[np.ndarray]:
    """Decode frames near `count` evenly spaced times and return them as size x size RGB.

    See `iter_sampled_frames` for how frames are chosen. Raises
    ModalityUnavailable('no_decodable_frames') when no frame decodes, and MediaError
    when the file cannot be opened at all.
    """
    return list(iter_sampled_frames(path, count=count, size=size))


def iter_sampled_frames(path, *, count: int, size: int) -> Iterator[np.ndarray]:
    """Yield frames near `count` evenly spaced times as size x size RGB, as they are decoded.

    The i-th target time is start + (i + 0.5) / count of the video's duration. For
    each target the decoder seeks to the keyframe before it and decodes forward. When
    that keyframe is not after the last decoded frame, decoding simply continues
    instead, so no part of the stream is decoded twice. (A container without a
    keyframe index seeks for every target.) Non-reference frames are skipped while
    decoding (FFmpeg's skip_frame=NONREF, about 30% less work on the H.264 test clips
    with B-frames), so the frame returned for a target is the nearest reference
    frame, usually within two frames of it. When a clip has fewer frames than
    targets, fewer frames are yielded.

    Each frame has its display rotation applied, its centre square cropped, and is
    resized to `size` x `size` (uint8, H x W x 3). Packets that fail to decode are
    skipped. Raises ModalityUnavailable('no_decodable_frames') when no frame decodes,
    and MediaError when the file cannot be opened at all.
    """
    if count < 1 or size < 1:
        raise ValueError(f"count and size must be positive; got count={count}, size={size}")

    # A stream that marks every frame non-reference decodes nothing with NONREF, so
    # the second pass decodes every frame.
    for skip_frame in ("NONREF", "DEFAULT"):
        yielded = 0
        with _Input(path) as source:
            container = source.container
            stream = _video_stream(container)
            if stream is None or stream.codec_context is None:
                raise ModalityUnavailable("no_decodable_frames", "The file has no decodable video stream.")
            stream.codec_context.skip_frame = skip_frame

            start, duration = _stream_span(source, stream)
            targets = [start + (index + 0.5) * duration / count for index in range(count)]
            pixel_aspect = stream.codec_context.sample_aspect_ratio
            for frame in _frames_at(container, stream, targets):
                yield _square_rgb(frame, size, pixel_aspect)
                yielded += 1
        if yielded:
            return

    raise ModalityUnavailable(
        "no_decodable_frames",
        f"None of the {count} sampled positions of the video stream could be decoded.",
    )


def _keyframe_times(stream) -> list[float]:
    time_base = stream.time_base
    return sorted(float(entry.timestamp * time_base) for entry in stream.index_entries if entry.is_keyframe)


def _frames_at(container, stream, targets: list[float]) -> Iterator[av.VideoFrame]:
    """Yield the frame nearest to each target time, seeking only when it saves work.

    Consecutive targets that select the same frame (a clip with fewer frames than
    targets) yield it once.
    """
    keyframes = _keyframe_times(stream)
    # Chosen frames never go back in time, so a repeat can only be the previous one.
    previous: av.VideoFrame | None = None
    yielded = 0
    frames: Iterator[av.VideoFrame] | None = None
    earlier: av.VideoFrame | None = None
    current: av.VideoFrame | None = None
    seeks = 0

    for target in targets:
        if current is not None and (current.time is None or current.time >= target):
            # Frames are sparser than targets: the last decoded frame is already past this one.
            chosen = _nearest(earlier, current, target)
        elif frames is None and current is not None:
            # The stream ended before this target, so the last frame is the nearest.
            chosen = current
        else:
            if not _can_continue(frames, current, keyframes, target):
                if _seek(container, stream, target):
                    seeks += 1
                    frames = _decoded_frames(container, stream)
                    earlier = current = None
                    # Matroska reads its cue index on the first seek, so keyframes become known only now.
                    if len(keyframes) <= 1:
                        keyframes = _keyframe_times(stream)
                elif frames is None:
                    frames = _decoded_frames(container, stream)

            for frame in frames:
                earlier, current = current, frame
                if frame.time is None or frame.time >= target:
                    break
            else:
                frames = None
            if current is None:
                continue
            chosen = _nearest(earlier, current, target)

        if previous is None or not _same_frame(chosen, previous):
            previous = chosen
            yielded += 1
            yield chosen

    logger.debug("Sampled %d frames for %d targets with %d seeks", yielded, len(targets), seeks)


def _can_continue(frames, current, keyframes: list[float], target: float) -> bool:
    """Tell whether decoding on from `current` reaches `target` no later than a seek would.

    A seek lands on the last keyframe at or before the target. When that keyframe is
    not after the current frame, continuing decodes the same frames or fewer.
    """
    if frames is None or current is None or current.time is None or current.time > target:
        return False
    index = bisect.bisect_right(keyframes, target) - 1
    return index >= 0 and keyframes[index] <= current.time


def _nearest(earlier: av.VideoFrame | None, later: av.VideoFrame, target: float) -> av.VideoFrame:
    if earlier is None or earlier.time is None or later.time is None:
        return later
    return earlier if target - earlier.time < later.time - target else later


def _same_frame(first: av.VideoFrame, second: av.VideoFrame) -> bool:
    if first is second:
        return True
    return first.pts is not None and first.pts == second.pts


def _seek(container, stream, target: float) -> bool:
    try:
        container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError as error:
        logger.warning("Seek to %.3f s failed (%s); decoding forward instead", target, error)
        return False
    return True


def _square_rgb(frame: av.VideoFrame, size: int, pixel_aspect: Fraction | None) -> np.ndarray:
    """Crop the centre square of a frame, resize it to size x size and apply its rotation."""
    width = frame.width
    if pixel_aspect and pixel_aspect != 1:
        # Anamorphic video stores non-square pixels; scale to square pixels first.
        width = max(1, round(frame.width * pixel_aspect))
    rgb = frame.to_ndarray(format="rgb24", width=width, height=frame.height)

    height, width = rgb.shape[:2]
    side = min(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    square = np.ascontiguousarray(rgb[top : top + side, left : left + side])
    if side != size:
        interpolation = "AREA" if side > size else "BICUBIC"
        square = (
            av.VideoFrame.from_ndarray(square, format="rgb24")
            .reformat(width=size, height=size, interpolation=interpolation)
            .to_ndarray()
        )

    # A centre square maps onto itself under quarter turns, so rotating after the crop
    # gives the same pixels as rotating the full frame first.
    turns = _rotation_of(frame) // 90
    return np.ascontiguousarray(np.rot90(square, k=turns)) if turns else square


def decode_audio(path, *, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Decode the first `max_seconds` of the first audio track to mono float32 at `sample_rate`.

    FFmpeg's resampler (through PyAV's AudioResampler) downmixes any channel layout,
    5.1 included, and converts the sample rate. Packets that fail to decode are
    skipped. Raises ModalityUnavailable with code no_audio_track, or the codes of
    `check_audio_samples` (too_few_samples, non_finite_audio, silent_audio).
    """
    if sample_rate <= 0 or max_seconds <= 0:
        raise ValueError(f"sample_rate and max_seconds must be positive; got {sample_rate}, {max_seconds}")

    with _Input(path) as source:
        stream = _audio_stream(source.container)
        if stream is None:
            raise ModalityUnavailable("no_audio_track", "The video has no audio track.")
        resampler = av.AudioResampler(format=_RESAMPLER_FORMAT, layout="mono", rate=sample_rate)
        limit = int(max_seconds * sample_rate)
        chunks: list[np.ndarray] = []
        total = 0

        for frame in _decoded_frames(source.container, stream):
            for resampled in resampler.resample(frame):
                chunk = resampled.to_ndarray()[0]
                chunks.append(chunk)
                total += chunk.shape[0]
            if total >= limit:
                break
        else:
            for resampled in resampler.resample(None):
                chunks.append(resampled.to_ndarray()[0])

    samples = np.concatenate(chunks)[:limit] if chunks else np.zeros(0, dtype=np.float32)
    return check_audio_samples(samples, sample_rate)


def decode_all(path) -> float:
    """Decode every frame of the video and audio streams and return the seconds it took.

    This is the decode-only floor of the ingestion benchmark: the same streams that
    extraction reads, with the same decoder settings (PyAV's default slice
    threading), and no conversion of the decoded frames.
    """
    started = time.perf_counter()
    failures = 0
    with _Input(path) as source:
        container = source.container
        streams = [stream for stream in (_video_stream(container), _audio_stream(container)) if stream is not None]
        for packet in container.demux(*streams):
            try:
                packet.decode()
            except av.error.FFmpegError:
                failures += 1
    elapsed = time.perf_counter() - started

    if failures:
        logger.warning("Skipped %d undecodable packets while decoding %s", failures, path)
    return elapsed
