"""Celery beat: the maintenance schedule, and a scheduler that proves it is alive.

``settings.CELERY_BEAT_SCHEDULE`` is built by ``build_beat_schedule`` from the
intervals in the environment. Run exactly one beat process per deployment: two would
send every task twice.

The health check of the beat container runs this module::

    python -m recsys_platform.schedules /var/lib/celery/beat-schedule.heartbeat 180

and exits 0 only when the scheduler has written its heartbeat file within that many
seconds.
"""

import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from celery.beat import PersistentScheduler

logger = logging.getLogger(__name__)

HEARTBEAT_SUFFIX = ".heartbeat"


def build_beat_schedule(*, retrain_interval_s: int, rollover_interval_s: int, reextract_interval_s: int,
                        pending_sweep_interval_s: int) -> dict:
    """Build the beat schedule of the maintenance tasks in ``workers.maintenance``.

    Each message expires after one interval, so a backlog (workers down for a day)
    yields one run of each task when they return, not one per missed tick.
    """
    def entry(task: str, interval_s: int) -> dict:
        return {
            "task": task,
            "schedule": timedelta(seconds=interval_s),
            "options": {"queue": "default", "expires": interval_s},
        }

    return {
        "retrain-tenants": entry("workers.maintenance.schedule_tenant_retraining_task", retrain_interval_s),
        "roll-over-budget-windows": entry("workers.maintenance.roll_over_budget_windows_task", rollover_interval_s),
        "re-extract-outdated-videos": entry("workers.maintenance.reextract_outdated_videos_task", reextract_interval_s),
        "requeue-stale-pending-videos": entry("workers.maintenance.requeue_stale_pending_videos_task",
                                              pending_sweep_interval_s),
    }


def heartbeat_path(schedule_filename: str | os.PathLike) -> Path:
    return Path(f"{schedule_filename}{HEARTBEAT_SUFFIX}")


class HeartbeatScheduler(PersistentScheduler):
    """A persistent scheduler that touches ``<schedule file>.heartbeat`` on every tick.

    Beat ticks at least every ``beat_max_loop_interval`` seconds, so a heartbeat older
    than a few intervals means the scheduling loop is stuck or dead. The schedule file
    itself is a poor signal: it is written only when beat syncs its state.
    """

    def tick(self, *args, **kwargs):
        heartbeat = heartbeat_path(self.schedule_filename)
        try:
            heartbeat.touch()
        except OSError as error:
            logger.warning("Could not write the beat heartbeat %s: %s", heartbeat, error)
        return super().tick(*args, **kwargs)


def heartbeat_age_s(path: str | os.PathLike) -> float | None:
    """Return the seconds since the heartbeat was written, or None if it does not exist."""
    try:
        return max(time.time() - os.stat(path).st_mtime, 0.0)
    except FileNotFoundError:
        return None


def main(argv: list[str]) -> int:
    """Exit 0 when the heartbeat file named in ``argv`` is younger than the given age."""
    if len(argv) != 2:
        print("usage: python -m recsys_platform.schedules HEARTBEAT_FILE MAX_AGE_SECONDS", file=sys.stderr)
        return 2
    path, max_age_s = argv[0], float(argv[1])
    age_s = heartbeat_age_s(path)
    if age_s is None:
        print(f"unhealthy: {path} does not exist", file=sys.stderr)
        return 1
    if age_s > max_age_s:
        print(f"unhealthy: {path} is {age_s:.0f} s old, over {max_age_s:.0f} s", file=sys.stderr)
        return 1
    print(f"healthy: {path} is {age_s:.0f} s old")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
