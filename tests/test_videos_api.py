"""Video uploads over REST, processed by a real worker, with real and broken media."""

import csv

import pytest

from tests import media_factory as mf
from tests.conftest import data_dir, wait_for
from videos.models import Video, VideoStatus

FINAL = {VideoStatus.READY, VideoStatus.PARTIAL, VideoStatus.FAILED}


def upload(api, path, **fields):
    with open(path, "rb") as handle:
        return api.post("/api/v1/videos/", {"file": handle, **fields}, format="multipart")


def wait_until_final(external_id: str, timeout: float = 120) -> Video:
    return wait_for(
        lambda: Video.objects.filter(external_id=external_id, status__in=FINAL).first(),
        timeout=timeout, message=f"video {external_id} to be processed",
    )


REJECTED_AT_UPLOAD = [
    ("empty", mf.make_empty_file, {"empty_file"}),
    ("random-bytes", mf.make_random_bytes, {"not_media"}),
    ("text-named-mp4", mf.make_text_named_mp4, {"not_media"}),
    ("header-only", mf.make_header_only_mp4, {"truncated_file", "unreadable_container", "not_media"}),
    ("truncated-faststart", lambda f: mf.make_truncated_mp4(f, 0.5, faststart=True), {"truncated_file"}),
    ("truncated-moov-last", lambda f: mf.make_truncated_mp4(f, 0.5, faststart=False),
     {"truncated_file", "unreadable_container"}),
    ("moov-cut-off", mf.make_moov_cut_off, {"truncated_file", "unreadable_container"}),
    ("audio-only", mf.make_audio_only, {"no_video_stream"}),
    ("huge-declared-resolution", mf.make_huge_declared_resolution, {"resolution_too_large"}),
    ("unrepresentable-resolution", lambda f: mf.make_huge_declared_resolution(f, side=20000),
     {"invalid_resolution", "resolution_too_large"}),
    ("still-image", mf.make_still_image, {"zero_duration"}),
    ("long-declared-duration", mf.make_long_declared_duration, {"duration_too_long"}),
    ("zero-duration", mf.make_zero_duration, {"zero_duration", "no_decodable_frames", "unreadable_container"}),
]


@pytest.mark.django_db
@pytest.mark.parametrize("name, make, codes", REJECTED_AT_UPLOAD, ids=[c[0] for c in REJECTED_AT_UPLOAD])
def test_bad_media_is_rejected_with_its_reason(api, tmp_path, name, make, codes):
    response = upload(api, make(tmp_path), title=name)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in codes
    assert response.json()["error"]["message"]
    assert not Video.objects.filter(title=name).exists()


@pytest.mark.django_db
def test_resolution_over_limit_is_rejected(api, tmp_path, settings):
    settings.UPLOAD_MAX_WIDTH = 1000
    settings.UPLOAD_MAX_HEIGHT = 1000

    response = upload(api, mf.make_extreme_aspect_ratio(tmp_path, 2000, 16))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "resolution_too_large"
    assert "1000" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_upload_over_size_limit_is_rejected(api, tmp_path, settings):
    settings.UPLOAD_MAX_BYTES = 100

    response = upload(api, mf.make_normal_mp4(tmp_path))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"


@pytest.mark.django_db
def test_nul_bytes_in_tags_rejected(api, tmp_path):
    response = upload(api, mf.make_normal_mp4(tmp_path), title="tags", tags="a\x00b,c")

    assert response.status_code == 400
    assert "tags" in response.json()["error"]["fields"]


@pytest.mark.django_db
def test_upload_without_file_names_the_field(api):
    response = api.post("/api/v1/videos/", {"title": "no file"}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["error"]["fields"]


@pytest.mark.django_db
def test_duplicate_external_id_is_a_conflict(api, tmp_path, live_worker):
    path = mf.make_normal_mp4(tmp_path)
    upload(api, path, external_id="same")

    response = upload(api, path, external_id="same")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_video"


ACCEPTED = [
    # name, factory, fields, expected status, expected missing modalities
    ("normal", mf.make_normal_mp4, {"title": "A test pattern with a tone"}, VideoStatus.READY, set()),
    ("video-only", mf.make_video_only, {"title": "Silent pattern"}, VideoStatus.PARTIAL, {"audio"}),
    ("silent-audio", mf.make_silent_audio, {"title": "Quiet"}, VideoStatus.PARTIAL, {"audio"}),
    ("short-audio", mf.make_short_audio, {"title": "Blip"}, VideoStatus.PARTIAL, {"audio"}),
    ("six-channel", mf.make_six_channel_audio, {"title": "Surround"}, VideoStatus.READY, set()),
    ("rotated", mf.make_rotated, {"title": "Rotated"}, VideoStatus.PARTIAL, {"audio"}),
    ("variable-frame-rate", mf.make_variable_frame_rate, {"title": "VFR"}, VideoStatus.READY, set()),
    ("bad-metadata", mf.make_bad_metadata, {"title": "Tags with NUL and invalid UTF-8"}, VideoStatus.READY, set()),
    ("corrupted-middle", mf.make_corrupted_middle, {"title": "Damaged"}, None, None),
    ("empty-title", mf.make_normal_mp4, {"title": "   "}, VideoStatus.PARTIAL, {"text"}),
    ("emoji-title", mf.make_normal_mp4, {"title": "🐶🐶🔥"}, VideoStatus.READY, set()),
    ("cjk-title", mf.make_normal_mp4, {"title": "狗在公园里奔跑"}, VideoStatus.READY, set()),
    ("10000-words", mf.make_normal_mp4, {"title": " ".join(["word"] * 10_000)}, VideoStatus.READY, set()),
]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_accepted_uploads_end_with_status_and_reason(api, tmp_path, live_worker):
    # given: every accepted case uploaded at once, so they are in flight together
    for name, make, fields, _, _ in ACCEPTED:
        folder = tmp_path / name
        folder.mkdir()
        response = upload(api, make(folder), external_id=name, **fields)
        assert response.status_code == 202, (name, response.content)
        assert response.json()["status"] == "pending"

    # when: the worker processes them
    videos = {name: wait_until_final(name, timeout=240) for name, *_ in ACCEPTED}

    # then: each ends with the expected status and missing modalities
    for name, _, _, status, missing in ACCEPTED:
        video = videos[name]
        if status is None:
            assert video.status in FINAL, name
            assert video.status == VideoStatus.READY or video.status_reason, name
            continue
        assert video.status == status, (name, video.status, video.status_reason, video.status_message)
        assert set(video.modality_reasons) == missing, (name, video.modality_reasons)
    assert live_worker.process.poll() is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_video_detail_reports_modalities(api, tmp_path, live_worker):
    upload(api, mf.make_video_only(tmp_path), external_id="detail", title="Only pictures")
    wait_until_final("detail")

    body = api.get("/api/v1/videos/detail/").json()

    assert body["status"] == "partial"
    assert body["modalities"] == ["visual", "text"]
    assert body["missing_modalities"] == {"audio": "no_audio_track"}


@pytest.mark.django_db
def test_unknown_video_is_not_found(api):
    response = api.get("/api/v1/videos/nope/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "video_not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("k", ["0", "-1", "abc", "100000"])
def test_similar_rejects_invalid_k(api, tenant, make_ready_videos, k):
    make_ready_videos(tenant, 3)

    response = api.get(f"/api/v1/videos/v0/similar/?k={k}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert k in response.json()["error"]["message"]


@pytest.mark.django_db
def test_similar_returns_nearest_of_same_tenant(api, tenant, other_tenant, make_ready_videos):
    make_ready_videos(tenant, 20, seed=1)
    make_ready_videos(other_tenant, 20, seed=1)

    body = api.get("/api/v1/videos/v0/similar/?k=5").json()

    assert len(body["similar"]) == 5
    assert all(item["id"] != "v0" for item in body["similar"])
    similarities = [item["similarity"] for item in body["similar"]]
    assert similarities == sorted(similarities, reverse=True)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_real_clips_missing_modalities(api, tenant, live_worker):
    # given: a sample of the real clips covering each codec, no audio and empty titles
    clips_dir = data_dir() / "clips"
    with open(clips_dir / "clips.csv", newline="", encoding="utf-8") as handle:
        manifest = {row["clip_id"]: row for row in csv.DictReader(handle)}
    chosen = ["vas-dog-1", "vas-dog-2", "dog-barking", "anet-dog-scooter", "bikes-no-audio",
              "mmaction-demo-no-audio", "demo-1", "big-buck-bunny-opening", "microlens-1002", "chaplin",
              "flipping-a-pancake", "fire"]

    # when
    for clip_id in chosen:
        response = upload(api, clips_dir / manifest[clip_id]["file"], external_id=clip_id,
                          title=manifest[clip_id]["title"])
        assert response.status_code == 202, (clip_id, response.content)
    videos = {clip_id: wait_until_final(clip_id, timeout=300) for clip_id in chosen}

    # then
    for clip_id, video in videos.items():
        row = manifest[clip_id]
        expected = set()
        if row["audio"] == "NO_AUDIO":
            expected.add("audio")
        if not row["title"]:
            expected.add("text")
        assert video.status == (VideoStatus.PARTIAL if expected else VideoStatus.READY), (clip_id, video.status)
        assert set(video.modality_reasons) == expected, clip_id
    similar = api.get("/api/v1/videos/vas-dog-1/similar/?k=3").json()["similar"]
    assert {"vas-dog-2", "dog-barking", "anet-dog-scooter"} & {item["id"] for item in similar}
