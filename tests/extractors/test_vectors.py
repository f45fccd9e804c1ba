import numpy as np
import pytest

from workers.extractors.errors import ModalityUnavailable
from workers.extractors.vectors import check_vector


def test_check_vector_returns_float32_copy():
    source = np.array([1.0, 2.0, 3.0], dtype=np.float64)

    vector = check_vector(source, 3, modality="text")
    source[0] = 10.0

    assert vector.dtype == np.float32
    assert vector[0] == 1.0


def test_check_vector_accepts_list():
    assert check_vector([0.0, 1.0], 2, modality="audio").shape == (2,)


@pytest.mark.parametrize(
    ("vector", "problem"),
    [
        (np.ones(4), "shape"),
        (np.ones((1, 3)), "shape"),
        (np.array([1.0, np.nan, 0.0]), "NaN"),
        (np.array([1.0, -np.inf, 0.0]), "NaN or infinite"),
        (np.zeros(3), "norm 0.0"),
        (np.array([1e30, 1e30, 1e30]), "norm inf"),
    ],
    ids=["too-long", "two-dimensional", "nan", "infinity", "zero", "overflowing-norm"],
)
def test_check_vector_rejects(vector, problem):
    with pytest.raises(ModalityUnavailable) as raised:
        check_vector(vector, 3, modality="visual")

    assert raised.value.code == "invalid_vector"
    assert "visual" in raised.value.message
    assert problem in raised.value.message
