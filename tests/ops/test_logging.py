"""JSON logs: the request id travels from an upload into the worker, and no secret is logged."""

import io
import json
import logging

import numpy as np
import pytest

from recsys_platform.observability import JsonFormatter, RequestIdFilter, request_id_var
from tests import media_factory as mf
from tests.conftest import wait_for
from tests.ops.conftest import json_lines
from videos.models import Video, VideoStatus

REQUEST_ID = "test-req-123"
TITLE = "Harbour sunset seen from the ferry 4f2a"
DESCRIPTION = "A private description that must stay out of the logs 9b7c"
FINAL = {VideoStatus.READY, VideoStatus.PARTIAL, VideoStatus.FAILED}


@pytest.fixture
def web_log():
    """Capture this process's log records as the JSON lines the console handler writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def read_from(path, offset: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def records_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_upload_request_id_reaches_worker_logs(api, tenant, live_worker, tmp_path, web_log):
    # given
    offset = live_worker.log_path.stat().st_size
    clip = mf.make_normal_mp4(tmp_path)

    # when: an upload with a request id, processed by the real worker
    with open(clip, "rb") as handle:
        response = api.post(
            "/api/v1/videos/", {"file": handle, "title": TITLE, "description": DESCRIPTION},
            format="multipart", HTTP_X_REQUEST_ID=REQUEST_ID,
        )
    assert response.status_code == 202, response.content
    external_id = response.json()["id"]
    video = wait_for(
        lambda: Video.objects.filter(external_id=external_id, status__in=FINAL).first(),
        timeout=240, message=f"video {external_id} to be processed",
    )
    finished = f"Video {video.pk} is {video.status}"

    def worker_text_once_finished() -> str | None:
        text = read_from(live_worker.log_path, offset)
        return text if finished in text else None

    worker_text = wait_for(worker_text_once_finished, timeout=30, message="the worker's completion line")

    # then: the web response echoes the id and the task's own lines carry it
    assert response["X-Request-ID"] == REQUEST_ID
    task_lines = [r for r in records_of(worker_text) if r.get("request_id") == REQUEST_ID]
    task_messages = [r["message"] for r in task_lines if r["logger"] == "workers.tasks"]
    assert any(m.startswith(f"Extracting video {video.pk}") for m in task_messages), task_messages
    assert any(m.startswith(finished) for m in task_messages), task_messages
    web_lines = records_of(web_log.getvalue())
    assert any(r["request_id"] == REQUEST_ID and "Accepted upload" in r["message"] for r in web_lines)

    # and: neither the API key nor the user's title or description is in any line
    for name, text in (("web", web_log.getvalue()), ("worker", worker_text)):
        assert tenant.raw_api_key not in text, f"{name} log contains the API key"
        assert TITLE not in text, f"{name} log contains the title"
        assert DESCRIPTION not in text, f"{name} log contains the description"


def format_record(message: str, *args, **extra) -> dict:
    record = logging.LogRecord("tests", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    RequestIdFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_formatter_redacts_api_keys_and_tokens():
    raw_key = "rk_0123456789ab_" + "S" * 43

    line = format_record("presented %s with Authorization: Bearer abcdefgh12345678", raw_key, header=raw_key)

    assert raw_key not in json.dumps(line)
    assert "abcdefgh12345678" not in json.dumps(line)
    assert "rk_0123456789ab_[redacted]" in line["message"]
    assert line["header"] == "rk_0123456789ab_[redacted]"


def test_formatter_logs_arrays_by_shape_only():
    embedding = np.linspace(0.123456, 0.987654, 128, dtype=np.float32)

    line = format_record("embedded", embedding=embedding)

    assert line["embedding"] == "<array shape=(128,)>"


def test_formatter_drops_task_arguments_and_return_values():
    data = {"id": "abc", "name": "workers.tasks.x", "args": "('secret title',)", "kwargs": "{}",
            "return_value": "'secret title'", "runtime": 0.5}

    line = format_record("Task %(name)s[%(id)s] succeeded", data=data)

    assert line["data"] == {"id": "abc", "name": "workers.tasks.x", "runtime": 0.5}


@pytest.mark.django_db
def test_eager_task_keeps_callers_request_id(web_log):
    from workers.maintenance import ping_task

    token = request_id_var.set("eager-req-7")
    try:
        ping_task.apply(("eager-ping",))
    finally:
        request_id_var.reset(token)

    ping_lines = [record for record in records_of(web_log.getvalue()) if record.get("ping_token") == "eager-ping"]
    assert len(ping_lines) == 1
    assert ping_lines[0]["request_id"] == "eager-req-7"
