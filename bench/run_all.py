"""Run every benchmark, each in its own process with a time limit, then write docs/benchmarks.md.

Steps, in order: serving (bench/serving.py), the serving profile
(bench/profile_serving.py), retrieval (bench/retrieval.py, with the index rebuilt
once more with ef_construction 200 for comparison, and with --million also the
1,000,000-video case), ingestion (bench/ingestion.py), and the report
(bench/report.py). A step that fails or runs out of time is recorded in the report
and the next one still runs. Without --million the whole run takes about 30 minutes
on a 2-core machine, most of it the first build of the 100,000-video data set and the
ingestion timings.

Usage (from the repository root):
    .venv/bin/python bench/run_all.py [--million] [--only serving,retrieval] [--report-only]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, RESULTS_DIR, now_iso  # noqa: E402

# name -> (script, arguments, time limit in seconds)
STEPS = {
    "serving": ("bench/serving.py", [], 2400),
    "profile": ("bench/profile_serving.py", [], 600),
    "retrieval": ("bench/retrieval.py", ["--index-variant", "m = 32, ef_construction = 128"], 1800),
    "ingestion": ("bench/ingestion.py", [], 2700),
}
MILLION_TIME_LIMIT_S = 5400


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--million", action="store_true", help="also run the 1,000,000-video retrieval case")
    parser.add_argument("--only", default=",".join(STEPS), help="comma-separated steps to run")
    parser.add_argument("--report-only", action="store_true", help="only rewrite docs/benchmarks.md from the results")
    return parser.parse_args(argv)


def run_step(name: str, million: bool) -> dict:
    script, arguments, limit = STEPS[name]
    if name == "retrieval" and million:
        arguments, limit = [*arguments, "--million"], MILLION_TIME_LIMIT_S
    command = [sys.executable, str(REPO_ROOT / script), *arguments]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"[run_all] {name}: {' '.join([script, *arguments])} (limit {limit} s)", flush=True)
    with open(RESULTS_DIR / f"{name}.out", "w", encoding="utf-8") as output:
        try:
            completed = subprocess.run(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT,
                                       timeout=limit)
            outcome = "ok" if completed.returncode == 0 else f"failed with exit code {completed.returncode}"
        except subprocess.TimeoutExpired:
            outcome = f"stopped after its limit of {limit} s"
    elapsed = round(time.perf_counter() - started, 1)
    print(f"[run_all] {name}: {outcome} in {elapsed} s; output in {RESULTS_DIR / (name + '.out')}", flush=True)
    return {"outcome": outcome, "elapsed_s": elapsed}


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    steps = {}
    if not arguments.report_only:
        for name in arguments.only.split(","):
            if name not in STEPS:
                raise SystemExit(f"unknown step {name!r}; steps are {', '.join(STEPS)}")
            steps[name] = run_step(name, arguments.million)
        (RESULTS_DIR / "run_all.json").write_text(json.dumps({"date": now_iso(), "steps": steps}, indent=2))

    from bench import report

    path = report.write_report()
    print(f"[run_all] wrote {path}", flush=True)


if __name__ == "__main__":
    main()
