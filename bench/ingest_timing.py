"""Ingestion benchmark: extraction time of each real clip against decoding it alone.

The product goal is all three modalities of a clip in at most twice the time it
takes just to decode that clip. For each clip of clips.csv this script times two
things. `decode_all` decodes every video and audio frame and nothing else.
`extract_video` probes the file, runs sampled frames through EfficientNet-Lite0,
embeds the text and computes librosa features of the decoded audio. Each time is
the fastest of --repeats runs, with the models loaded and warmed up first. The
script prints one row per clip, then the totals and the per-clip means.

Usage (from the repository root):
    .venv/bin/python bench/ingest_timing.py [--data-dir ../shared/data] [--repeats 3] [--threads 1]

Timings depend on the machine and on its other load. The script prints the load
average before and after, so that a run on a busy machine can be recognised.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from workers.extractors.media import decode_all  # noqa: E402
from workers.extractors.pipeline import ExtractionLimits, extract_video, get_embedders  # noqa: E402


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", REPO_ROOT.parent / "shared" / "data")),
        help="folder that contains clips/clips.csv (default: $RECSYS_DATA_DIR or ../shared/data)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per clip and step; the fastest counts (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the models (default 1)")
    parser.add_argument("--frame-count", type=int, default=8, help="frames sampled per clip (default 8)")
    parser.add_argument("--frame-size", type=int, default=224, help="side of the sampled square frames in pixels")
    parser.add_argument("--max-audio-seconds", type=float, default=60.0, help="audio decoded per clip, in seconds")
    parser.add_argument("--json", type=Path, help="also write the rows and totals to this JSON file")
    return parser.parse_args()


def time_clip(row: dict, clips_dir: Path, limits: ExtractionLimits, embedders, repeats: int) -> dict:
    """Time one clip and return its fastest decode-only and extraction times, with the step times."""
    path = clips_dir / row["file"]
    decode_s = min(decode_all(path) for _ in range(repeats))

    best = None
    for _ in range(repeats):
        result = extract_video(path, title=row["title"], description=None, tags=None, limits=limits, embedders=embedders)
        if best is None or result.timings["total"] < best.timings["total"]:
            best = result

    return {
        "clip_id": row["clip_id"],
        "video": row["video"],
        "audio": row["audio"],
        "duration_s": best.media.duration_s,
        "decode_s": decode_s,
        "extract_s": best.timings["total"],
        "ratio": best.timings["total"] / decode_s,
        "steps": best.timings,
        "missing": best.missing,
    }


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'clip':26} {'video':16} {'dur s':>6} {'decode s':>9} {'extract s':>9} {'ratio':>6} "
        f"{'wait':>6} {'visual':>7} {'text':>6} {'audio':>6} {'feat':>6}  missing"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        steps = row["steps"]
        missing = ",".join(f"{modality}={code}" for modality, code in sorted(row["missing"].items()))
        print(
            f"{row['clip_id'][:26]:26} {row['video'][:16]:16} {row['duration_s']:6.1f} {row['decode_s']:9.3f} "
            f"{row['extract_s']:9.3f} {row['ratio']:6.2f} {steps.get('visual_decode_wait', 0):6.3f} "
            f"{steps.get('visual_model', 0):7.3f} {steps.get('text_model', 0):6.3f} "
            f"{steps.get('audio_decode', 0):6.3f} {steps.get('audio_features', 0):6.3f}  {missing}"
        )


def summarise(rows: list[dict]) -> dict:
    decode_total = sum(row["decode_s"] for row in rows)
    extract_total = sum(row["extract_s"] for row in rows)
    ratios = [row["ratio"] for row in rows]
    return {
        "clips": len(rows),
        "decode_total_s": decode_total,
        "extract_total_s": extract_total,
        "total_ratio": extract_total / decode_total,
        "decode_mean_s": decode_total / len(rows),
        "extract_mean_s": extract_total / len(rows),
        "ratio_median": statistics.median(ratios),
        "clips_within_2x": sum(ratio <= 2.0 for ratio in ratios),
    }


def main() -> None:
    arguments = parse_arguments()
    clips_dir = arguments.data_dir / "clips"
    with (clips_dir / "clips.csv").open(newline="", encoding="utf-8") as file:
        manifest = list(csv.DictReader(file))

    limits = ExtractionLimits(
        frame_count=arguments.frame_count,
        frame_size=arguments.frame_size,
        max_audio_seconds=arguments.max_audio_seconds,
    )
    embedders = get_embedders(num_threads=arguments.threads)
    started = time.perf_counter()
    embedders.warm_up()
    print(f"models loaded and warmed up in {time.perf_counter() - started:.1f} s")
    print(f"load average before: {os.getloadavg()[0]:.2f}; cpus: {os.cpu_count()}; torch threads: {arguments.threads}")

    rows = [time_clip(row, clips_dir, limits, embedders, arguments.repeats) for row in manifest]
    print_table(rows)
    summary = summarise(rows)

    print()
    print(
        f"{summary['clips']} clips: decode-only {summary['decode_total_s']:.2f} s in total "
        f"({summary['decode_mean_s']:.3f} s per clip); extraction {summary['extract_total_s']:.2f} s "
        f"({summary['extract_mean_s']:.3f} s per clip)"
    )
    print(
        f"total ratio {summary['total_ratio']:.2f}; median per-clip ratio {summary['ratio_median']:.2f}; "
        f"{summary['clips_within_2x']} of {summary['clips']} clips within 2x"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    if arguments.json:
        arguments.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
