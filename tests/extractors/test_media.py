import shutil

import numpy as np
import pytest

from tests import media_factory
from workers.extractors import media
from workers.extractors.errors import MediaError, ModalityUnavailable
from workers.extractors.media import decode_all, decode_audio, probe_media, sample_frames

LIMITS = {"max_duration_s": 600.0, "max_width": 3840, "max_height": 3840}


def _probe(path, **overrides):
    return probe_media(path, **{**LIMITS, **overrides})


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (media_factory.make_empty_file, "empty_file"),
        (media_factory.make_random_bytes, "not_media"),
        (media_factory.make_text_named_mp4, "not_media"),
        (lambda folder: media_factory.make_audio_only(folder, "m4a"), "no_video_stream"),
        (lambda folder: media_factory.make_audio_only(folder, "mp4"), "no_video_stream"),
        (media_factory.make_header_only_mp4, "truncated_file"),
        (lambda folder: media_factory.make_truncated_mp4(folder, 0.05, faststart=True), "unreadable_container"),
        (lambda folder: media_factory.make_truncated_mp4(folder, 0.3, faststart=True), "truncated_file"),
        (lambda folder: media_factory.make_truncated_mp4(folder, 0.95, faststart=True), "truncated_file"),
        (lambda folder: media_factory.make_truncated_mp4(folder, 0.05, faststart=False), "unreadable_container"),
        (lambda folder: media_factory.make_truncated_mp4(folder, 0.5, faststart=False), "unreadable_container"),
        (lambda folder: media_factory.make_truncated_mp4(folder, 0.95, faststart=False), "truncated_file"),
        (media_factory.make_moov_cut_off, "truncated_file"),
        (media_factory.make_zero_duration, "zero_duration"),
        (media_factory.make_still_image, "zero_duration"),
        (media_factory.make_long_declared_duration, "duration_too_long"),
        (media_factory.make_huge_declared_resolution, "resolution_too_large"),
        (lambda folder: media_factory.make_huge_declared_resolution(folder, 20000), "invalid_resolution"),
    ],
    ids=[
        "empty",
        "random-bytes",
        "text-named-mp4",
        "audio-only-m4a",
        "audio-only-mp4",
        "header-only",
        "faststart-cut-5",
        "faststart-cut-30",
        "faststart-cut-95",
        "moov-last-cut-5",
        "moov-last-cut-50",
        "moov-last-cut-95",
        "moov-cut-in-half",
        "zero-duration",
        "still-image",
        "long-duration",
        "huge-declared-16000",
        "huge-declared-20000",
    ],
)
def test_probe_rejects_broken_media(tmp_path, make, code):
    path = make(tmp_path)

    with pytest.raises(MediaError) as raised:
        _probe(path)

    assert raised.value.code == code
    assert raised.value.message


def test_probe_rejects_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        _probe(tmp_path / "absent.mp4")


def test_probe_reads_normal_clip(tmp_path):
    info = _probe(media_factory.make_normal_mp4(tmp_path))

    assert info.format_name.startswith("mov")
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert (info.width, info.height) == (64, 48)
    assert info.rotation_degrees == 0
    assert info.has_video
    assert info.has_audio
    assert info.audio_channels == 2
    assert info.audio_sample_rate == 22050
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac"


def test_probe_detects_format_from_content_not_name(tmp_path):
    source = media_factory.make_normal_mp4(tmp_path)
    renamed = tmp_path / "clip.txt"
    shutil.copy(source, renamed)

    assert _probe(renamed).video_codec == "h264"


def test_probe_reads_video_only_clip(tmp_path):
    info = _probe(media_factory.make_video_only(tmp_path))

    assert not info.has_audio
    assert info.audio_channels == 0


def test_probe_reads_six_channels(tmp_path):
    assert _probe(media_factory.make_six_channel_audio(tmp_path)).audio_channels == 6


@pytest.mark.parametrize(("degrees", "expected"), [(90, 90), (-90, 270), (180, 180)])
def test_probe_reports_rotation(tmp_path, degrees, expected):
    info = _probe(media_factory.make_rotated(tmp_path, degrees))

    assert info.rotation_degrees == expected


def test_probe_swaps_size_for_quarter_turn(tmp_path):
    info = _probe(media_factory.make_rotated(tmp_path, 90))

    assert (info.width, info.height) == (32, 64)


def test_probe_resolution_limit_ignores_orientation(tmp_path):
    # The rotated clip is stored 64x32 and displayed 32x64; both fit a 64x32 box.
    path = media_factory.make_rotated(tmp_path, 90)

    assert _probe(path, max_width=64, max_height=32).width == 32


def test_probe_rejects_frame_over_short_side_limit(tmp_path):
    path = media_factory.make_normal_mp4(tmp_path)

    with pytest.raises(MediaError) as raised:
        _probe(path, max_width=64, max_height=40)

    assert raised.value.code == "resolution_too_large"
    assert "64x48" in raised.value.message


def test_probe_rejects_duration_over_limit(tmp_path):
    path = media_factory.make_normal_mp4(tmp_path)

    with pytest.raises(MediaError) as raised:
        _probe(path, max_duration_s=1.5)

    assert raised.value.code == "duration_too_long"


def test_bad_metadata_fixture_has_invalid_bytes(tmp_path):
    data = media_factory.make_bad_metadata(tmp_path).read_bytes()

    assert b"caf\xe9" in data
    assert b"MA\x00KER\x00\xff\xfe" in data


def test_probe_accepts_undecodable_tag_bytes(tmp_path):
    info = _probe(media_factory.make_bad_metadata(tmp_path))

    assert info.has_video


def test_probe_accepts_extreme_aspect_ratio(tmp_path):
    info = _probe(media_factory.make_extreme_aspect_ratio(tmp_path))

    assert (info.width, info.height) == (2000, 16)


def test_probe_accepts_variable_frame_rate(tmp_path):
    info = _probe(media_factory.make_variable_frame_rate(tmp_path))

    assert info.duration_s == pytest.approx(2.0, abs=0.1)


def test_probe_accepts_corrupted_middle(tmp_path):
    assert _probe(media_factory.make_corrupted_middle(tmp_path)).has_video


def test_sample_frames_shape_and_count(tmp_path):
    frames = sample_frames(media_factory.make_normal_mp4(tmp_path), count=8, size=32)

    assert len(frames) == 8
    assert all(frame.shape == (32, 32, 3) and frame.dtype == np.uint8 for frame in frames)


def test_sample_frames_are_distinct(tmp_path):
    frames = sample_frames(media_factory.make_normal_mp4(tmp_path), count=8, size=32)

    assert len({frame.tobytes() for frame in frames}) == 8


def test_sample_frames_follow_timestamps(tmp_path):
    # Targets (i + 0.5) / 4 of a 2 s, 10 fps clip are frames 2.5, 7.5, 12.5 and 17.5.
    # The pattern's blue channel is 12 * frame index, and the nearest reference
    # frame is at most 2 frames from a target.
    frames = sample_frames(media_factory.make_normal_mp4(tmp_path), count=4, size=32)

    indices = [int(frame[0, 0, 2]) / 12 for frame in frames]

    for index, target in zip(indices, [2.5, 7.5, 12.5, 17.5]):
        assert abs(index - target) <= 2.5


def test_sample_frames_decode_less_than_whole_clip(tmp_path, monkeypatch):
    # 10 s at 10 fps with a keyframe every 5 frames: 3 targets need at most 3 GOPs.
    path = media_factory.write_clip(tmp_path / "long.mp4", seconds=10.0, audio=False)
    decoded = []
    original = media._decoded_frames

    def counting(container, stream):
        for frame in original(container, stream):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(media, "_decoded_frames", counting)

    frames = sample_frames(path, count=3, size=32)

    assert len(frames) == 3
    assert len(decoded) <= 20


def test_sample_frames_apply_rotation(tmp_path):
    # Stored frames have a white top half; turned 90 degrees counter-clockwise the
    # white half is on the left.
    frame = sample_frames(media_factory.make_rotated(tmp_path, 90), count=1, size=32)[0]

    left = frame[:, :12].mean()
    right = frame[:, 20:].mean()
    top = frame[:12].mean()
    bottom = frame[20:].mean()

    assert left > 200 > 50 > right
    assert abs(top - bottom) < 30


def test_sample_frames_apply_clockwise_rotation(tmp_path):
    frame = sample_frames(media_factory.make_rotated(tmp_path, -90), count=1, size=32)[0]

    assert frame[:, 20:].mean() > 200 > 50 > frame[:, :12].mean()


def test_sample_frames_apply_pixel_aspect_ratio(tmp_path):
    # Shown 64x48, the white band covers display columns 24..39, a third of the
    # centre 48x48 square: 16 columns. Ignoring the 2:1 pixels would crop the stored
    # 32x32 centre, where the band is a quarter: 12 columns after resizing to 48.
    frame = sample_frames(media_factory.make_anamorphic(tmp_path), count=1, size=48)[0]

    white_columns = int(np.count_nonzero(frame.mean(axis=(0, 2)) > 128))

    assert 15 <= white_columns <= 17


def test_sample_frames_variable_frame_rate(tmp_path):
    frames = sample_frames(media_factory.make_variable_frame_rate(tmp_path), count=8, size=32)

    # 12 frames at irregular times: every target finds a frame, some share one.
    assert 4 <= len(frames) <= 8


def test_sample_frames_extreme_aspect_ratio(tmp_path):
    frames = sample_frames(media_factory.make_extreme_aspect_ratio(tmp_path), count=4, size=64)

    assert all(frame.shape == (64, 64, 3) for frame in frames)


def test_sample_frames_fewer_frames_than_targets(tmp_path):
    path = media_factory.write_clip(tmp_path / "three-frames.mp4", seconds=0.3, audio=False)

    frames = sample_frames(path, count=8, size=32)

    # Non-reference frames are skipped, so one of the 3 frames may be left out.
    assert 2 <= len(frames) <= 3
    assert len({frame.tobytes() for frame in frames}) == len(frames)


def test_sample_frames_skip_corrupted_packets(tmp_path):
    frames = sample_frames(media_factory.make_corrupted_middle(tmp_path), count=8, size=32)

    assert len(frames) >= 6


def test_sample_frames_without_video_stream(tmp_path):
    with pytest.raises(MediaError) as raised:
        sample_frames(media_factory.make_empty_file(tmp_path), count=2, size=32)

    assert raised.value.code == "empty_file"


def test_sample_frames_audio_only(tmp_path):
    with pytest.raises(ModalityUnavailable) as raised:
        sample_frames(media_factory.make_audio_only(tmp_path), count=2, size=32)

    assert raised.value.code == "no_decodable_frames"


def test_decode_audio_mono_at_requested_rate(tmp_path):
    samples = decode_audio(media_factory.make_normal_mp4(tmp_path), sample_rate=16000, max_seconds=60.0)

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert len(samples) == pytest.approx(2.0 * 16000, rel=0.05)


def test_decode_audio_stops_at_max_seconds(tmp_path):
    samples = decode_audio(media_factory.make_normal_mp4(tmp_path), sample_rate=16000, max_seconds=0.75)

    assert len(samples) == 12000


def test_decode_audio_keeps_tone_frequency(tmp_path):
    samples = decode_audio(media_factory.make_normal_mp4(tmp_path), sample_rate=16000, max_seconds=60.0)

    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 16000 / len(samples)

    assert peak_hz == pytest.approx(440.0, abs=5.0)


def test_decode_audio_downmixes_six_channels(tmp_path):
    samples = decode_audio(media_factory.make_six_channel_audio(tmp_path), sample_rate=22050, max_seconds=60.0)

    assert samples.ndim == 1
    assert np.sqrt(np.mean(samples**2)) > 0.05


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (media_factory.make_video_only, "no_audio_track"),
        (media_factory.make_silent_audio, "silent_audio"),
        (media_factory.make_short_audio, "too_few_samples"),
        (media_factory.make_non_finite_audio, "non_finite_audio"),
    ],
    ids=["no-track", "silent", "too-short", "non-finite"],
)
def test_decode_audio_reports_missing_audio(tmp_path, make, code):
    with pytest.raises(ModalityUnavailable) as raised:
        decode_audio(make(tmp_path), sample_rate=22050, max_seconds=60.0)

    assert raised.value.code == code


def test_decode_audio_skips_corrupted_packets(tmp_path):
    samples = decode_audio(media_factory.make_corrupted_middle(tmp_path), sample_rate=22050, max_seconds=60.0)

    assert len(samples) > 2 * 22050


def test_decode_all_returns_seconds(tmp_path):
    seconds = decode_all(media_factory.make_normal_mp4(tmp_path))

    assert 0.0 < seconds < 10.0
