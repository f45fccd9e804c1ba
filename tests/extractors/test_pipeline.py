import numpy as np
import pytest

from tests import media_factory
from workers.extractors.audio import AUDIO_DIM
from workers.extractors.errors import MediaError
from workers.extractors.pipeline import (
    EXTRACTOR_VERSIONS,
    MODALITIES,
    Embedders,
    ExtractionLimits,
    extract_text_only,
    extract_video,
    get_embedders,
)
from workers.extractors.text import TEXT_DIM
from workers.extractors.visual import VISUAL_DIM

# Small frames keep the visual model cheap; the embedder resizes them to 224.
LIMITS = ExtractionLimits(frame_count=4, frame_size=64, max_audio_seconds=10.0)
DIMENSIONS = {"visual": VISUAL_DIM, "text": TEXT_DIM, "audio": AUDIO_DIM}


def _extract(path, embedders, title="A test clip", limits=LIMITS):
    return extract_video(path, title=title, description="", tags=["test"], limits=limits, embedders=embedders)


def test_extract_normal_clip_has_all_modalities(tmp_path, embedders):
    result = _extract(media_factory.make_normal_mp4(tmp_path), embedders)

    assert set(result.embeddings) == set(MODALITIES)
    assert result.missing == {}
    assert result.messages == {}


def test_extract_embeddings_have_declared_dimensions(tmp_path, embedders):
    result = _extract(media_factory.make_normal_mp4(tmp_path), embedders)

    for modality, vector in result.embeddings.items():
        assert vector.shape == (DIMENSIONS[modality],)
        assert vector.dtype == np.float32
        assert np.isfinite(vector).all()


def test_extract_reports_extractor_versions(tmp_path, embedders):
    result = _extract(media_factory.make_video_only(tmp_path), embedders)

    assert result.extractors == {"visual": EXTRACTOR_VERSIONS["visual"], "text": EXTRACTOR_VERSIONS["text"]}


def test_extract_records_timings(tmp_path, embedders):
    result = _extract(media_factory.make_normal_mp4(tmp_path), embedders)

    steps = ("probe", "visual_decode_wait", "visual_model", "text_model", "audio_decode", "audio_features", "total")
    for step in steps:
        assert result.timings[step] >= 0.0
    assert result.timings["total"] >= result.timings["probe"]


def test_extract_keeps_media_info(tmp_path, embedders):
    result = _extract(media_factory.make_six_channel_audio(tmp_path), embedders)

    assert result.media.audio_channels == 6
    assert "audio" in result.embeddings


@pytest.mark.parametrize(
    ("make", "modality", "code"),
    [
        (media_factory.make_video_only, "audio", "no_audio_track"),
        (media_factory.make_silent_audio, "audio", "silent_audio"),
        (media_factory.make_short_audio, "audio", "too_few_samples"),
        (media_factory.make_non_finite_audio, "audio", "non_finite_audio"),
    ],
    ids=["video-only", "silent", "short-audio", "non-finite-audio"],
)
def test_extract_records_missing_audio(tmp_path, embedders, make, modality, code):
    result = _extract(make(tmp_path), embedders)

    assert result.missing == {modality: code}
    assert result.messages[modality]
    assert set(result.embeddings) == set(MODALITIES) - {modality}


@pytest.mark.parametrize("title", ["", "   ", "\x00\x00", None])
def test_extract_records_empty_text(tmp_path, embedders, title):
    result = extract_video(
        media_factory.make_normal_mp4(tmp_path),
        title=title,
        description=None,
        tags=[],
        limits=LIMITS,
        embedders=embedders,
    )

    assert result.missing == {"text": "empty_text"}


@pytest.mark.parametrize(
    "make",
    [
        media_factory.make_rotated,
        media_factory.make_variable_frame_rate,
        media_factory.make_extreme_aspect_ratio,
        media_factory.make_bad_metadata,
        media_factory.make_corrupted_middle,
    ],
    ids=["rotated", "variable-frame-rate", "extreme-aspect", "bad-metadata", "corrupted-middle"],
)
def test_extract_unusual_valid_clips_have_visual(tmp_path, embedders, make):
    result = _extract(make(tmp_path), embedders)

    assert "visual" in result.embeddings
    assert "visual" not in result.missing


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (media_factory.make_empty_file, "empty_file"),
        (media_factory.make_text_named_mp4, "not_media"),
        (media_factory.make_audio_only, "no_video_stream"),
        (media_factory.make_header_only_mp4, "truncated_file"),
        (media_factory.make_moov_cut_off, "truncated_file"),
        (media_factory.make_long_declared_duration, "duration_too_long"),
        (media_factory.make_huge_declared_resolution, "resolution_too_large"),
        (media_factory.make_zero_duration, "zero_duration"),
    ],
    ids=["empty", "text", "audio-only", "header-only", "moov-cut", "long", "huge", "zero-duration"],
)
def test_extract_propagates_media_error(tmp_path, embedders, make, code):
    with pytest.raises(MediaError) as raised:
        _extract(make(tmp_path), embedders)

    assert raised.value.code == code


def test_extract_text_only(embedders):
    result = extract_text_only("Dog barking", "", ["dog"], embedders)

    assert result.media is None
    assert set(result.embeddings) == {"text"}
    assert result.missing == {"visual": "no_media", "audio": "no_media"}


def test_extract_text_only_empty_title(embedders):
    result = extract_text_only("", None, None, embedders)

    assert result.embeddings == {}
    assert result.missing["text"] == "empty_text"


def test_get_embedders_returns_one_instance_per_paths():
    assert get_embedders() is get_embedders(None, None)


def test_get_embedders_separates_thread_counts():
    assert get_embedders(num_threads=1) is not get_embedders(num_threads=2)


def test_embedders_load_models_on_first_use():
    embedders = Embedders()

    assert embedders._visual is None
    assert embedders._text is None
    assert embedders.visual is embedders.visual
    assert embedders._text is None


@pytest.mark.parametrize("field", ["max_duration_s", "frame_count", "frame_size", "audio_sample_rate"])
def test_limits_reject_non_positive_values(field):
    with pytest.raises(ValueError, match=field):
        ExtractionLimits(**{field: 0})


def _real_clip(clips, clip_id):
    row = clips[clip_id]
    return row["path"], row["title"]


@pytest.mark.parametrize(
    ("clip_id", "expected_missing"),
    [
        ("mmaction-demo-no-audio", {"audio": "no_audio_track"}),
        ("moviepy-example3", {"text": "empty_text"}),
        ("big-buck-bunny-opening", {}),
        ("microlens-10034", {}),
        ("big-buck-bunny-short", {}),
    ],
    ids=["no-audio", "empty-title", "webm-vp8", "hevc", "six-channel"],
)
def test_extract_real_clip(clips, embedders, clip_id, expected_missing):
    path, title = _real_clip(clips, clip_id)
    limits = ExtractionLimits(frame_count=4, max_audio_seconds=10.0)

    result = extract_video(path, title=title, description=None, tags=None, limits=limits, embedders=embedders)

    assert result.missing == expected_missing
    assert set(result.embeddings) == set(MODALITIES) - set(expected_missing)


def test_real_clips_cover_expected_formats(clips):
    # The clip choices above rely on these properties of the manifest.
    assert clips["mmaction-demo-no-audio"]["audio"] == "NO_AUDIO"
    assert clips["moviepy-example3"]["title"] == ""
    assert clips["big-buck-bunny-opening"]["video"].startswith("vp8")
    assert clips["microlens-10034"]["video"].startswith("hevc")


def test_real_clip_probes_six_channels(clips, embedders):
    path, title = _real_clip(clips, "big-buck-bunny-short")

    result = extract_video(path, title=title, description=None, tags=None, limits=LIMITS, embedders=embedders)

    assert result.media.audio_channels == 6
