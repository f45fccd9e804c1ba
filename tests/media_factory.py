"""Generate small media files, valid and broken, for tests.

Each `make_*` function writes one file into `folder` and returns its path. The
files are tiny (at most a few seconds of 64x48 video, well under 100 KB) so that each
takes a few milliseconds to encode. Broken files are made from valid ones by
cutting or overwriting bytes, or by patching fields of MP4 boxes
(ISO/IEC 14496-12 layout), so the damage is exactly the one each test names.
"""

import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Container boxes of ISO base media files whose children are boxes too.
_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta", b"dinf"}


def write_clip(
    path: Path,
    *,
    seconds: float = 1.0,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    video: bool = True,
    audio: bool = True,
    audio_codec: str = "aac",
    audio_layout: str = "stereo",
    audio_rate: int = 22050,
    audio_seconds: float | None = None,
    tone_hz: float = 440.0,
    amplitude: float = 0.3,
    audio_samples: np.ndarray | None = None,
    video_codec: str = "libx264",
    gop: int = 5,
    rotation: int | None = None,
    frame_times: list[float] | None = None,
    faststart: bool = False,
    metadata: dict[str, str] | None = None,
    metadata_encoding: str = "utf-8",
) -> Path:
    """Encode a clip with a moving test pattern and a sine tone; return `path`.

    `frame_times` (seconds) replaces the constant frame rate for variable-frame-rate
    clips. `audio_samples` (channels x samples, float32) replaces the sine tone.
    """
    options = {"movflags": "faststart"} if faststart else {}
    container = av.open(str(path), mode="w", options=options, metadata_encoding=metadata_encoding)
    for key, value in (metadata or {}).items():
        container.metadata[key] = value

    video_stream = None
    if video:
        video_stream = container.add_stream(video_codec, rate=fps)
        video_stream.width = width
        video_stream.height = height
        video_stream.pix_fmt = "yuv420p"
        video_stream.codec_context.gop_size = gop
        if video_codec == "libx264":
            # Keyframes exactly every `gop` frames, so seeking tests know where they are.
            video_stream.codec_context.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        if rotation is not None:
            video_stream.set_display_rotation(rotation)
        if frame_times is not None:
            # Millisecond timestamps, so irregular frame times survive the muxer.
            video_stream.codec_context.time_base = Fraction(1, 1000)
            video_stream.time_base = Fraction(1, 1000)

    audio_stream = None
    if audio:
        audio_stream = container.add_stream(audio_codec, rate=audio_rate, layout=audio_layout)

    if video_stream is not None:
        times = frame_times if frame_times is not None else [index / fps for index in range(round(seconds * fps))]
        time_base = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
        for index, moment in enumerate(times):
            frame = av.VideoFrame.from_ndarray(_pattern(index, width, height), format="rgb24")
            frame.pts = round(moment / time_base)
            frame.time_base = time_base
            for packet in video_stream.encode(frame):
                container.mux(packet)
        for packet in video_stream.encode():
            container.mux(packet)

    if audio_stream is not None:
        if audio_samples is None:
            channels = audio_stream.codec_context.layout.nb_channels
            count = round((audio_seconds if audio_seconds is not None else seconds) * audio_rate)
            tone = amplitude * np.sin(2 * np.pi * tone_hz * np.arange(count) / audio_rate)
            audio_samples = np.tile(tone.astype(np.float32), (channels, 1))
        _encode_audio(container, audio_stream, audio_samples, audio_rate, audio_layout)

    container.close()
    return path


def _pattern(index: int, width: int, height: int) -> np.ndarray:
    """Return an RGB frame: a colour gradient with a white square moving right.

    The blue channel is (12 * index) % 256 everywhere outside the square, so a test
    can read which frame it got from any corner pixel.
    """
    rows = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = rows
    image[..., 1] = columns
    image[..., 2] = (index * 12) % 256
    side = max(2, min(width, height) // 4)
    left = (index * 4) % max(1, width - side)
    image[height // 2 - side // 2 : height // 2 + side // 2, left : left + side] = 255
    return image


def _encode_audio(container, stream, samples: np.ndarray, rate: int, layout: str) -> None:
    chunk = 1024
    for start in range(0, samples.shape[1], chunk):
        block = np.ascontiguousarray(samples[:, start : start + chunk], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


# Valid clips.


def make_normal_mp4(folder: Path) -> Path:
    """H.264 video (2 s, 64x48, 10 fps, keyframe every 5 frames) and an AAC 440 Hz tone."""
    return write_clip(folder / "normal.mp4", seconds=2.0)


def make_video_only(folder: Path) -> Path:
    return write_clip(folder / "video-only.mp4", audio=False)


def make_audio_only(folder: Path, extension: str = "m4a") -> Path:
    """AAC audio without a video stream, in an .m4a or .mp4 container."""
    return write_clip(folder / f"audio-only.{extension}", video=False)


def make_six_channel_audio(folder: Path) -> Path:
    """AAC 5.1 audio: the tone on the front channels, silence on the others."""
    rate = 22050
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(rate) / rate).astype(np.float32)
    samples = np.zeros((6, rate), dtype=np.float32)
    samples[0] = tone
    samples[1] = tone
    return write_clip(folder / "six-channel.mp4", audio_layout="5.1", audio_samples=samples)


def make_silent_audio(folder: Path) -> Path:
    return write_clip(folder / "silent-audio.mp4", amplitude=0.0)


def make_short_audio(folder: Path) -> Path:
    """A 1 s video whose audio track lasts 0.2 s, under the 0.5 s minimum."""
    return write_clip(folder / "short-audio.mp4", audio_seconds=0.2)


def make_non_finite_audio(folder: Path) -> Path:
    """Matroska with 32-bit float PCM audio that contains NaN and infinity."""
    rate = 22050
    samples = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(rate) / rate)).astype(np.float32)[None, :]
    samples[0, 100:200] = np.nan
    samples[0, 300] = np.inf
    return write_clip(
        folder / "non-finite-audio.mkv",
        audio_codec="pcm_f32le",
        audio_layout="mono",
        audio_samples=samples,
    )


def make_rotated(folder: Path, degrees: int = 90) -> Path:
    """64x32 stored frames (top half white) with a display rotation of `degrees` counter-clockwise."""
    path = folder / f"rotated-{degrees}.mp4"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=10)
    stream.width = 64
    stream.height = 32
    stream.pix_fmt = "yuv420p"
    stream.set_display_rotation(degrees)
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[:16] = 255
    for _ in range(10):
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def make_anamorphic(folder: Path) -> Path:
    """32x48 stored frames with 2:1 pixels, shown 64x48, with a white band over stored columns 12..19."""
    path = folder / "anamorphic.mp4"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=10)
    stream.width = 32
    stream.height = 48
    stream.pix_fmt = "yuv420p"
    stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
    image = np.zeros((48, 32, 3), dtype=np.uint8)
    image[:, 12:20] = 255
    for _ in range(5):
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def make_variable_frame_rate(folder: Path) -> Path:
    """Frames at irregular times over 2 s, gaps from 10 ms to 600 ms."""
    times = [0.0, 0.01, 0.05, 0.1, 0.7, 0.72, 0.9, 1.5, 1.55, 1.6, 1.9, 1.99]
    return write_clip(folder / "variable-frame-rate.mp4", frame_times=times, seconds=2.0)


def make_extreme_aspect_ratio(folder: Path, width: int = 2000, height: int = 16) -> Path:
    return write_clip(folder / f"aspect-{width}x{height}.mp4", width=width, height=height, seconds=0.5)


def make_bad_metadata(folder: Path) -> Path:
    """Tags with a Latin-1 byte (invalid UTF-8) and NUL bytes inside a tag value."""
    path = write_clip(
        folder / "bad-metadata.mp4",
        metadata={"title": "caf\xe9 MARKER-MARKER", "comment": "NULTAG"},
        metadata_encoding="latin-1",
    )
    data = path.read_bytes()
    data = data.replace(b"MARKER-MARKER", b"MA\x00KER\x00\xff\xfeRKER").replace(b"NULTAG", b"\x00\x00\x00\x00\x00\x00")
    path.write_bytes(data)
    return path


# Files whose headers declare limits-breaking properties.


def make_huge_declared_resolution(folder: Path, side: int = 16000) -> Path:
    """A one-frame Motion JPEG MOV whose headers declare side x side pixels.

    The frame is encoded at 16x16; the JPEG SOF0 marker, the sample entry and the
    track header are then patched, so nothing of that size is ever encoded. FFmpeg
    reports the declared size up to about 268 megapixels (16000x16000 is 256) and
    reports 0x0 above it.
    """
    source = folder / f"mjpeg-{side}.tmp.mov"
    container = av.open(str(source), mode="w")
    stream = container.add_stream("mjpeg", rate=10)
    stream.width = 16
    stream.height = 16
    stream.pix_fmt = "yuvj420p"
    frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 128, dtype=np.uint8), format="rgb24")
    for packet in list(stream.encode(frame.reformat(format="yuvj420p"))) + list(stream.encode()):
        container.mux(packet)
    container.close()

    data = bytearray(source.read_bytes())
    source.unlink()
    (mdat_offset, _, _), = _find_boxes(data, [b"mdat"])
    sof = data.index(b"\xff\xc0", mdat_offset)
    # SOF0: marker(2) length(2) precision(1) height(2) width(2).
    struct.pack_into(">HH", data, sof + 5, side, side)
    (stsd_offset, _, _), = _find_boxes(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    # stsd: header(8) version/flags(4) count(4), then the visual sample entry: header(8)
    # reserved(6) data_reference_index(2) pre_defined/reserved(16) width(2) height(2).
    struct.pack_into(">HH", data, stsd_offset + 16 + 8 + 6 + 2 + 16, side, side)
    (tkhd_offset, _, _), = _find_boxes(data, [b"moov", b"trak", b"tkhd"])
    # tkhd version 0: header(8) version/flags(4) times/ids(20) reserved(8) layer..volume(8)
    # matrix(36), then width and height as 16.16 fixed point.
    struct.pack_into(">II", data, tkhd_offset + 8 + 4 + 20 + 8 + 8 + 36, side << 16, side << 16)

    path = folder / f"huge-declared-{side}.mov"
    path.write_bytes(bytes(data))
    return path


def make_long_declared_duration(folder: Path, hours: float = 10.0) -> Path:
    """Two frames, at 0 s and at `hours` hours: the container states that duration."""
    return write_clip(folder / "long-duration.mp4", frame_times=[0.0, hours * 3600.0], audio=False)


def make_zero_duration(folder: Path) -> Path:
    """A one-frame MP4 whose movie, track, media, sample and edit durations are all 0."""
    path = write_clip(folder / "zero-duration.mp4", seconds=0.1, audio=False)
    data = bytearray(path.read_bytes())

    # Offset of the duration field from the start of each box, for versions 0 and 1:
    # after header(8) and version/flags(4) come creation and modification times, then
    # the timescale (mvhd, mdhd) or the track id and a reserved word (tkhd).
    duration_fields = ((b"mvhd", 12 + 12, 12 + 20), (b"mdhd", 12 + 12, 12 + 20), (b"tkhd", 12 + 16, 12 + 24))
    for name, v0_offset, v1_offset in duration_fields:
        for offset, _, _ in _find_boxes_anywhere(data, name):
            version = data[offset + 8]
            if version == 1:
                struct.pack_into(">Q", data, offset + v1_offset, 0)
            else:
                struct.pack_into(">I", data, offset + v0_offset, 0)

    for offset, _, _ in _find_boxes_anywhere(data, b"stts"):
        (count,) = struct.unpack_from(">I", data, offset + 12)
        for entry in range(count):
            struct.pack_into(">I", data, offset + 16 + entry * 8 + 4, 0)

    for offset, _, _ in _find_boxes_anywhere(data, b"elst"):
        version = data[offset + 8]
        (count,) = struct.unpack_from(">I", data, offset + 12)
        entry_size = 20 if version == 1 else 12
        for entry in range(count):
            field = ">Q" if version == 1 else ">I"
            struct.pack_into(field, data, offset + 16 + entry * entry_size, 0)

    path.write_bytes(bytes(data))
    return path


# Files that are not media, or damaged media.


def make_empty_file(folder: Path) -> Path:
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return path


def make_random_bytes(folder: Path, size: int = 4096, seed: int = 7) -> Path:
    path = folder / "random.mp4"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def make_text_named_mp4(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("These are meeting notes, not a video.\n" * 50, encoding="utf-8")
    return path


def make_header_only_mp4(folder: Path) -> Path:
    """A fast-start MP4 cut right after the mdat box header: the index, but no media data."""
    source = write_clip(folder / "header-only.tmp.mp4", faststart=True)
    data = source.read_bytes()
    source.unlink()
    (mdat_offset, _, header), = _find_boxes(data, [b"mdat"])
    path = folder / "header-only.mp4"
    path.write_bytes(data[: mdat_offset + header])
    return path


def make_truncated_mp4(folder: Path, fraction: float, *, faststart: bool) -> Path:
    """A 2 s MP4 cut to `fraction` of its bytes.

    With `faststart` the index (moov) comes first, so the cut removes media data that
    the index still refers to. Without it the index is at the end and is lost.
    """
    source = write_clip(folder / "truncated.tmp.mp4", seconds=2.0, faststart=faststart)
    data = source.read_bytes()
    source.unlink()
    layout = "faststart" if faststart else "moov-last"
    path = folder / f"truncated-{layout}-{round(fraction * 100)}.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_moov_cut_off(folder: Path) -> Path:
    """An MP4 with its index (moov) at the end, cut in the middle of that index."""
    source = write_clip(folder / "moov-cut.tmp.mp4", seconds=2.0)
    data = source.read_bytes()
    source.unlink()
    (moov_offset, moov_size, _), = _find_boxes(data, [b"moov"])
    path = folder / "moov-cut-off.mp4"
    path.write_bytes(data[: moov_offset + moov_size // 2])
    return path


def make_still_image(folder: Path) -> Path:
    """A PNG picture: one frame, no duration."""
    path = folder / "picture.png"
    container = av.open(str(path), mode="w", format="image2")
    stream = container.add_stream("png", rate=1)
    stream.width = 64
    stream.height = 48
    stream.pix_fmt = "rgb24"
    frame = av.VideoFrame.from_ndarray(_pattern(0, 64, 48), format="rgb24")
    for packet in list(stream.encode(frame)) + list(stream.encode()):
        container.mux(packet)
    container.close()
    return path


def make_corrupted_middle(folder: Path, seed: int = 3) -> Path:
    """A 3 s MP4 whose media data has random bytes over 10% in its middle."""
    path = write_clip(folder / "corrupted-middle.mp4", seconds=3.0)
    data = bytearray(path.read_bytes())
    (mdat_offset, mdat_size, header), = _find_boxes(data, [b"mdat"])
    payload_start = mdat_offset + header
    payload_size = mdat_size - header
    start = payload_start + int(payload_size * 0.45)
    length = max(1, int(payload_size * 0.10))
    data[start : start + length] = random.Random(seed).randbytes(length)
    path.write_bytes(bytes(data))
    return path


# MP4 box helpers.


def _iter_boxes(data: bytes, start: int, end: int):
    """Yield (type, offset, size, header_size) of the boxes between start and end."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            return
        yield kind, offset, size, header
        offset += size


def _find_boxes(data: bytes, path: list[bytes]) -> list[tuple[int, int, int]]:
    """Return (offset, size, header_size) of every box at `path`, e.g. [b"moov", b"trak"]."""
    found = []

    def walk(start: int, end: int, depth: int) -> None:
        for kind, offset, size, header in _iter_boxes(data, start, end):
            if kind != path[depth]:
                continue
            if depth == len(path) - 1:
                found.append((offset, size, header))
            else:
                walk(offset + header, offset + size, depth + 1)

    walk(0, len(data), 0)
    return found


def _find_boxes_anywhere(data: bytes, kind: bytes) -> list[tuple[int, int, int]]:
    """Return (offset, size, header_size) of every box of type `kind` in the container boxes."""
    found = []

    def walk(start: int, end: int) -> None:
        for name, offset, size, header in _iter_boxes(data, start, end):
            if name == kind:
                found.append((offset, size, header))
            if name in _CONTAINER_BOXES:
                walk(offset + header, offset + size)

    walk(0, len(data))
    return found
