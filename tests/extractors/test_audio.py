import numpy as np
import pytest

from workers.extractors.audio import (
    AUDIO_DIM,
    MIN_AUDIO_SECONDS,
    SILENCE_RMS,
    audio_embedding,
    check_audio_samples,
)
from workers.extractors.errors import ModalityUnavailable
from workers.extractors.vectors import check_vector

RATE = 22050


def _tone(frequency: float, seconds: float = 2.0, amplitude: float = 0.3) -> np.ndarray:
    times = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * times)).astype(np.float32)


def _noise(seconds: float = 2.0, amplitude: float = 0.3, seed: int = 1) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def _cosine(first: np.ndarray, second: np.ndarray) -> float:
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def test_check_samples_returns_float32():
    samples = check_audio_samples(_tone(440.0).astype(np.float64), RATE)

    assert samples.dtype == np.float32


@pytest.mark.parametrize(
    ("samples", "code"),
    [
        (np.zeros(RATE, dtype=np.float32), "silent_audio"),
        (np.full(RATE, SILENCE_RMS / 2, dtype=np.float32), "silent_audio"),
        (_tone(440.0, seconds=MIN_AUDIO_SECONDS * 0.9), "too_few_samples"),
        (np.zeros(0, dtype=np.float32), "too_few_samples"),
        (np.where(np.arange(RATE) == 5, np.nan, 0.3).astype(np.float32), "non_finite_audio"),
        (np.where(np.arange(RATE) == 5, np.inf, 0.3).astype(np.float32), "non_finite_audio"),
    ],
    ids=["zeros", "below-threshold", "too-short", "empty", "nan", "inf"],
)
def test_check_samples_rejects(samples, code):
    with pytest.raises(ModalityUnavailable) as raised:
        check_audio_samples(samples, RATE)

    assert raised.value.code == code


def test_check_samples_rejects_stereo_array():
    with pytest.raises(ValueError, match="mono"):
        check_audio_samples(np.zeros((2, RATE), dtype=np.float32), RATE)


def test_embedding_is_unit_float32():
    vector = audio_embedding(_tone(440.0), RATE)

    assert vector.shape == (AUDIO_DIM,)
    assert vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_embedding_passes_vector_check():
    vector = audio_embedding(_noise(), RATE)

    check_vector(vector, AUDIO_DIM, modality="audio")


def test_embedding_is_deterministic():
    np.testing.assert_array_equal(audio_embedding(_noise(), RATE), audio_embedding(_noise(), RATE))


def test_embedding_barely_moves_with_gain():
    # A 20 dB gain change shifts every log-mel band equally, which the z-scores
    # remove; only the RMS level in the descriptor block moves.
    signal = _tone(440.0) + _noise(amplitude=0.01)

    loud = audio_embedding(signal, RATE)
    quiet = audio_embedding(signal * 0.1, RATE)

    assert _cosine(loud, quiet) > 0.98


def test_embedding_separates_tone_from_noise():
    tone = audio_embedding(_tone(440.0), RATE)
    other_tone = audio_embedding(_tone(466.0), RATE)
    noise = audio_embedding(_noise(), RATE)

    assert _cosine(tone, other_tone) > _cosine(tone, noise)


def test_embedding_accepts_other_sample_rate():
    samples = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(16000) / 16000)).astype(np.float32)

    vector = audio_embedding(samples, 16000)

    assert vector.shape == (AUDIO_DIM,)
    assert np.isfinite(vector).all()


def test_embedding_of_mostly_silent_clip_is_finite():
    # Silent frames have a centroid of 0 Hz; the log-frequency floor keeps them finite.
    samples = np.zeros(2 * RATE, dtype=np.float32)
    samples[:2000] = _tone(440.0)[:2000]

    vector = audio_embedding(samples, RATE)

    assert np.isfinite(vector).all()


def test_embedding_rejects_silence():
    with pytest.raises(ModalityUnavailable) as raised:
        audio_embedding(np.zeros(RATE, dtype=np.float32), RATE)

    assert raised.value.code == "silent_audio"
