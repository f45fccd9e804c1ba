"""The import_youtube8m command on TFRecord files written by the test."""

import csv
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from videos.models import Video, VideoStatus
from videos.youtube8m import MEAN_AUDIO_DIM, MEAN_RGB_DIM, build_example, write_tfrecord

LABEL_NAMES = {3: "Cooking", 17: "Guitar", 42: "Football"}


def _record(video_id: str, labels, seed: int, *, rgb=None, audio=None) -> bytes:
    rng = np.random.default_rng(seed)
    return build_example({
        "id": video_id.encode(),
        "labels": list(labels),
        "mean_rgb": rng.standard_normal(MEAN_RGB_DIM).astype(np.float32) if rgb is None else rgb,
        "mean_audio": rng.standard_normal(MEAN_AUDIO_DIM).astype(np.float32) if audio is None else audio,
    })


def _write_vocabulary(folder) -> None:
    with open(folder / "vocabulary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Index", "TrainVideoCount", "KnowledgeGraphId", "Name", "WikiUrl", "Vertical1",
                         "Vertical2", "Vertical3", "WikiDescription"])
        for index, name in LABEL_NAMES.items():
            writer.writerow([index, 10, f"/m/{index}", name, "", "Arts", "", "", ""])


@pytest.fixture
def features_dir(tmp_path):
    folder = tmp_path / "youtube8m"
    folder.mkdir()
    write_tfrecord(folder / "part0000.tfrecord", [_record("aa01", [3, 17], 1), _record("aa02", [42], 2)])
    write_tfrecord(folder / "part0001.tfrecord", [_record("bb01", [17], 3), _record("bb02", [3, 99], 4)])
    _write_vocabulary(folder)
    return folder


def _import(folder, tenant="yt-import", **options):
    out, err = StringIO(), StringIO()
    call_command("import_youtube8m", str(folder), tenant=tenant, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_import_stores_features_as_videos(features_dir):
    # when
    output, _ = _import(features_dir)

    # then
    videos = {v.external_id: v for v in Video.objects.filter(tenant__name="yt-import")}
    assert sorted(videos) == ["aa01", "aa02", "bb01", "bb02"]
    video = videos["aa01"]
    assert video.labels == [3, 17]
    assert video.tags == ["Cooking", "Guitar"]
    assert video.title == "Cooking, Guitar"
    assert video.visual_extractor == "youtube8m-mean-rgb/1"
    assert video.audio_extractor == "youtube8m-mean-audio/1"
    assert len(video.visual_embedding) == MEAN_RGB_DIM
    assert len(video.audio_embedding) == MEAN_AUDIO_DIM
    assert video.text_embedding is None
    assert video.modality_reasons == {"text": "no_text"}
    assert video.status == VideoStatus.PARTIAL
    assert video.fusion_version
    assert np.linalg.norm(video.fused_embedding) == pytest.approx(1.0, abs=1e-5)
    assert "4 new" in output


@pytest.mark.django_db
def test_import_keeps_vectors_exactly(features_dir):
    # given
    rng = np.random.default_rng(1)
    expected_rgb = rng.standard_normal(MEAN_RGB_DIM).astype(np.float32)

    # when
    _import(features_dir)

    # then
    stored = Video.objects.get(tenant__name="yt-import", external_id="aa01").visual_embedding
    np.testing.assert_array_equal(np.asarray(stored, np.float32), expected_rgb)


@pytest.mark.django_db
def test_import_keeps_unnamed_labels(features_dir):
    _import(features_dir)

    video = Video.objects.get(tenant__name="yt-import", external_id="bb02")
    assert video.labels == [3, 99]
    assert video.tags == ["Cooking"]


@pytest.mark.django_db
def test_import_rerun_changes_nothing(features_dir):
    # given
    _import(features_dir)
    before = {v.external_id: (v.pk, v.updated_at, v.processed_at, list(v.fused_embedding))
              for v in Video.objects.filter(tenant__name="yt-import")}

    # when
    output, _ = _import(features_dir)

    # then
    after = {v.external_id: (v.pk, v.updated_at, v.processed_at, list(v.fused_embedding))
             for v in Video.objects.filter(tenant__name="yt-import")}
    assert after == before
    assert "0 new, 0 updated, 4 unchanged" in output


@pytest.mark.django_db
def test_import_rerun_overwrites_changed_features(features_dir, tmp_path):
    # given
    _import(features_dir)
    new_audio = np.full(MEAN_AUDIO_DIM, 0.5, np.float32)
    write_tfrecord(features_dir / "part0001.tfrecord",
                   [_record("bb01", [17], 3, audio=new_audio), _record("bb02", [3, 99], 4)])

    # when
    output, _ = _import(features_dir)

    # then
    stored = Video.objects.get(tenant__name="yt-import", external_id="bb01").audio_embedding
    np.testing.assert_array_equal(np.asarray(stored, np.float32), new_audio)
    assert "0 new, 1 updated, 3 unchanged" in output
    assert Video.objects.filter(tenant__name="yt-import").count() == 4


@pytest.mark.django_db
def test_import_drops_an_invalid_modality_with_a_message(tmp_path):
    # given
    rgb = np.ones(MEAN_RGB_DIM, np.float32)
    rgb[5] = np.nan
    write_tfrecord(tmp_path / "bad.tfrecord", [_record("nan1", [3], 1, rgb=rgb)])

    # when
    output, errors = _import(tmp_path)

    # then
    video = Video.objects.get(tenant__name="yt-import", external_id="nan1")
    assert video.visual_embedding is None
    assert video.audio_embedding is not None
    assert video.modality_reasons == {"visual": "invalid_vector", "text": "no_text"}
    assert "bad.tfrecord: video 'nan1': The visual embedding contains 1 NaN or infinite values" in errors
    assert "1 stored without an invalid modality" in output


@pytest.mark.django_db
def test_import_rejects_a_video_without_any_valid_vector(tmp_path):
    # given
    zeros_rgb = np.zeros(MEAN_RGB_DIM, np.float32)
    zeros_audio = np.zeros(MEAN_AUDIO_DIM, np.float32)
    write_tfrecord(tmp_path / "bad.tfrecord",
                   [_record("zero1", [3], 1, rgb=zeros_rgb, audio=zeros_audio), _record("good1", [3], 2)])

    # when
    output, errors = _import(tmp_path)

    # then
    stored = set(Video.objects.filter(tenant__name="yt-import").values_list("external_id", flat=True))
    assert stored == {"good1"}
    assert "video 'zero1': rejected, no valid visual or audio vector" in errors
    assert "has L2 norm 0.0" in errors
    assert "1 rejected" in output


@pytest.mark.django_db
def test_import_limit_stops_after_n_videos(features_dir):
    _import(features_dir, limit=3)

    assert Video.objects.filter(tenant__name="yt-import").count() == 3


@pytest.mark.django_db
def test_import_without_vocabulary_leaves_titles_empty(tmp_path):
    write_tfrecord(tmp_path / "part.tfrecord", [_record("nv1", [3], 1)])

    _import(tmp_path)

    video = Video.objects.get(tenant__name="yt-import", external_id="nv1")
    assert video.title == ""
    assert video.labels == [3]


@pytest.mark.django_db
def test_import_missing_folder_fails_clearly(tmp_path):
    with pytest.raises(CommandError, match="not found; pass a folder of YouTube-8M .tfrecord files"):
        _import(tmp_path / "absent")


@pytest.mark.django_db
def test_import_wrong_dimension_imports_nothing(features_dir):
    # given
    short = build_example({"id": b"short1", "labels": [3], "mean_rgb": np.ones(10, np.float32),
                           "mean_audio": np.ones(MEAN_AUDIO_DIM, np.float32)})
    write_tfrecord(features_dir / "part0002.tfrecord", [short])

    # when
    with pytest.raises(CommandError, match="feature 'mean_rgb' has 10 values; expected 1024"):
        _import(features_dir)

    # then
    assert not Video.objects.filter(tenant__name="yt-import").exists()


@pytest.mark.django_db
def test_import_corrupt_file_imports_nothing(features_dir):
    # given
    path = features_dir / "part0001.tfrecord"
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))

    # when
    with pytest.raises(CommandError, match="payload CRC mismatch.*Nothing was imported"):
        _import(features_dir)

    # then
    assert not Video.objects.filter(tenant__name="yt-import").exists()
