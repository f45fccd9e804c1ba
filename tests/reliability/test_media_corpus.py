"""A corpus of broken and valid media uploaded together through the API to a live worker.

tests/test_videos_api.py covers the common cases one at a time. This corpus adds
the cuts at several points, damage at several seeds and the odd geometries, and
uploads them all with a few valid clips in between. Each broken file must end in a
4xx with its code, or as a failed or partial video with its reason. The worker must
stay alive, and the valid clips in flight with the broken ones must end ready.
"""

import os

import pytest

from tests import media_factory as mf
from tests.conftest import wait_for
from videos.models import Video, VideoStatus

FINAL = {VideoStatus.READY, VideoStatus.PARTIAL, VideoStatus.FAILED}
CUT_FRACTIONS = (0.1, 0.3, 0.7, 0.9)
DAMAGE_SEEDS = (1, 2, 5, 7, 11)

# name, factory, error codes accepted for a 400
REJECTED = [
    *[
        (f"truncated-faststart-{round(f * 100)}", lambda d, f=f: mf.make_truncated_mp4(d, f, faststart=True),
         {"truncated_file"})
        for f in CUT_FRACTIONS
    ],
    # The index (moov) is at the end, so every cut loses it.
    *[
        (f"truncated-index-at-end-{round(f * 100)}", lambda d, f=f: mf.make_truncated_mp4(d, f, faststart=False),
         {"truncated_file", "unreadable_container"})
        for f in CUT_FRACTIONS
    ],
    ("index-cut-off", mf.make_moov_cut_off, {"truncated_file", "unreadable_container"}),
    ("header-only", mf.make_header_only_mp4, {"truncated_file", "unreadable_container", "not_media"}),
    ("zero-duration", mf.make_zero_duration, {"zero_duration", "no_decodable_frames", "unreadable_container"}),
    ("still-image", mf.make_still_image, {"zero_duration"}),
    ("random-64k", lambda d: mf.make_random_bytes(d, 65536, seed=11), {"not_media"}),
    ("random-16-bytes", lambda d: mf.make_random_bytes(d, 16, seed=2), {"not_media"}),
    ("text-named-mp4", mf.make_text_named_mp4, {"not_media"}),
    ("audio-only-mp4", lambda d: mf.make_audio_only(d, "mp4"), {"no_video_stream"}),
    ("declared-5000x5000", lambda d: mf.make_huge_declared_resolution(d, 5000), {"resolution_too_large"}),
    ("declared-one-hour", lambda d: mf.make_long_declared_duration(d, 1.0), {"duration_too_long"}),
    ("empty", mf.make_empty_file, {"empty_file"}),
]

# name, factory, expected status (None: any final status, with a reason unless ready),
# expected missing modalities (None: not checked)
ACCEPTED = [
    ("valid-1", mf.make_normal_mp4, VideoStatus.READY, set()),
    ("anamorphic", mf.make_anamorphic, VideoStatus.PARTIAL, {"audio"}),
    ("aspect-2000x16", lambda d: mf.make_extreme_aspect_ratio(d, 2000, 16), VideoStatus.READY, set()),
    ("non-finite-audio", mf.make_non_finite_audio, VideoStatus.PARTIAL, {"audio"}),
    *[(f"damaged-middle-seed-{seed}", lambda d, s=seed: mf.make_corrupted_middle(d, seed=s), None, None)
      for seed in DAMAGE_SEEDS[:3]],
    ("valid-2", mf.make_six_channel_audio, VideoStatus.READY, set()),
    ("aspect-16x2000", lambda d: mf.make_extreme_aspect_ratio(d, 16, 2000), VideoStatus.READY, set()),
    ("rotated-180", lambda d: mf.make_rotated(d, 180), VideoStatus.PARTIAL, {"audio"}),
    ("rotated-270", lambda d: mf.make_rotated(d, 270), VideoStatus.PARTIAL, {"audio"}),
    *[(f"damaged-middle-seed-{seed}", lambda d, s=seed: mf.make_corrupted_middle(d, seed=s), None, None)
      for seed in DAMAGE_SEEDS[3:]],
    ("valid-3", mf.make_variable_frame_rate, VideoStatus.READY, set()),
]


def upload(api, path, **fields):
    with open(path, "rb") as handle:
        return api.post("/api/v1/videos/", {"file": handle, **fields}, format="multipart")


def test_corpus_has_at_least_thirty_cases():
    assert len(REJECTED) + len(ACCEPTED) >= 30


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_corpus_ends_with_codes_and_reasons(api, tmp_path, live_worker):
    # given: the worker's parent process before the corpus
    worker_pid = live_worker.process.pid

    # when: broken files are uploaded between the accepted ones, so that the worker
    # has the accepted ones in its queue while the rest arrive
    rejected_responses = {}
    accepted_ids = []
    interleaved = []
    for index in range(max(len(ACCEPTED), len(REJECTED))):
        interleaved += [(case, True) for case in ACCEPTED[index : index + 1]]
        interleaved += [(case, False) for case in REJECTED[index : index + 1]]
    for case, is_accepted in interleaved:
        name, make = case[0], case[1]
        folder = tmp_path / name
        folder.mkdir()
        response = upload(api, make(folder), external_id=name, title=f"corpus {name}")
        if is_accepted:
            assert response.status_code == 202, (name, response.content)
            accepted_ids.append(name)
        else:
            rejected_responses[name] = response

    videos = {
        name: wait_for(
            lambda name=name: Video.objects.filter(external_id=name, status__in=FINAL).first(),
            timeout=300, message=f"video {name} to be processed",
        )
        for name in accepted_ids
    }

    print(f"\n{len(REJECTED)} rejected at upload, {len(accepted_ids)} accepted:")
    for name, response in rejected_responses.items():
        print(f"  {name}: {response.status_code} {response.json().get('error', {}).get('code')}")
    for name, video in videos.items():
        print(f"  {name}: {video.status} {video.status_reason or ''} {video.modality_reasons or ''}")

    # then: each rejected file got a 400 naming its failure, and stored nothing
    for name, _, codes in REJECTED:
        response = rejected_responses[name]
        assert response.status_code == 400, (name, response.status_code, response.content)
        error = response.json()["error"]
        assert error["code"] in codes, (name, error)
        assert error["message"], name
        assert not Video.objects.filter(external_id=name).exists(), name

    # then: each accepted file ended with its expected status, and a reason where not ready
    for name, _, status, missing in ACCEPTED:
        video = videos[name]
        if video.status != VideoStatus.READY:
            assert video.status_reason, (name, video.status)
            assert video.status_message, (name, video.status)
        if status is not None:
            assert video.status == status, (name, video.status, video.status_reason, video.status_message)
        if missing is not None:
            assert set(video.modality_reasons) == missing, (name, video.modality_reasons)
        assert video.attempts == 1, (name, video.attempts)

    # then: the API reports the same status and reason
    for name in accepted_ids:
        body = api.get(f"/api/v1/videos/{name}/").json()
        assert body["status"] == videos[name].status, name
        assert body["failure_reason"] == (videos[name].status_reason or None), name

    # then: the worker survived the corpus and still has a pool process
    assert live_worker.process.poll() is None
    assert live_worker.process.pid == worker_pid
    os.kill(worker_pid, 0)
    assert live_worker.child_pids(), "the worker has no pool process left"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_non_finite_audio_names_the_audio_reason(api, tmp_path, live_worker):
    # given
    path = mf.make_non_finite_audio(tmp_path)

    # when
    response = upload(api, path, external_id="nan-audio", title="Tone with NaN samples")
    video = wait_for(
        lambda: Video.objects.filter(external_id="nan-audio", status__in=FINAL).first(),
        timeout=180, message="the non-finite audio video to be processed",
    )

    # then: the audio is dropped for its NaN samples and the other modalities are kept
    assert response.status_code == 202
    assert video.status == VideoStatus.PARTIAL
    assert video.modality_reasons == {"audio": "non_finite_audio"}
    assert video.visual_embedding is not None
    assert video.text_embedding is not None
