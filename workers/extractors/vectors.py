"""Validation of embedding vectors before they are stored or fused."""

import numpy as np

from workers.extractors.errors import ModalityUnavailable


def check_vector(vector, dim: int, *, modality: str) -> np.ndarray:
    """Validate one embedding and return it as a new contiguous float32 array.

    Raises ModalityUnavailable('invalid_vector') when the vector is not one-dimensional
    with `dim` entries, contains NaN or infinity, or has an L2 norm that is zero or
    overflows float32: such a vector has no usable direction, so cosine similarity
    with it is undefined.
    """
    array = np.array(vector, dtype=np.float32, copy=True)

    if array.ndim != 1 or array.shape[0] != dim:
        raise ModalityUnavailable(
            "invalid_vector",
            f"The {modality} embedding must have shape ({dim},); got {array.shape}.",
        )

    non_finite = int(np.count_nonzero(~np.isfinite(array)))
    if non_finite:
        raise ModalityUnavailable(
            "invalid_vector",
            f"The {modality} embedding contains {non_finite} NaN or infinite values out of {dim}.",
        )

    with np.errstate(over="ignore"):
        norm = float(np.linalg.norm(array))
    if not (0.0 < norm < np.inf):
        raise ModalityUnavailable(
            "invalid_vector",
            f"The {modality} embedding has L2 norm {norm}, so it cannot be normalised; "
            "a usable embedding has a finite, non-zero norm.",
        )

    return np.ascontiguousarray(array)
