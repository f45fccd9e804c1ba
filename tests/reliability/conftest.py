"""Fixtures of the reliability tests: a private Redis and videos stored without a task.

Tests that kill or restart workers publish to a Redis server of their own, so the
session's worker (``live_worker``) never takes their messages and their workers
never take the session's.
"""

import shutil
from pathlib import Path

import pytest
from django.core.files import File

from tests.reliability.processes import RedisServer


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    """Yield a Redis server that only this module's tests use."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_media_root(tmp_path_factory) -> Path:
    """Return a media folder that the test process and its workers both use."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture
def store_pending_video(settings, shared_media_root):
    """Store an uploaded video as pending without enqueueing its extraction.

    The test sends the task itself, to a broker of its choosing.
    """
    from videos.models import Video, VideoStatus

    settings.MEDIA_ROOT = str(shared_media_root)

    def _store(tenant, source: Path, external_id: str, title: str = "a test clip") -> Video:
        video = Video(tenant=tenant, external_id=external_id, title=title, status=VideoStatus.PENDING)
        with open(source, "rb") as handle:
            video.media.save(f"{external_id}{source.suffix}", File(handle), save=True)
        return video

    return _store


@pytest.fixture
def long_clip(tmp_path) -> Path:
    """Return a copy of the longest real clip (16 s of HEVC 1280x720), slow enough to kill mid-task."""
    from tests.conftest import data_dir

    source = data_dir() / "clips" / "microlens-1002.mp4"
    if not source.exists():
        pytest.skip(f"needs the real clip {source}")
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    return target
