"""Vectors on the wire: the tensor object `{"__type__": "Tensor", "shape", "dtype", "b64"}`.

Writers use `as_vector` + `tensor_json`; ingest decodes whole columns of them in DuckDB
(`dmn.lake.parse.decode_tensors`). Nothing here imports torch: a torch tensor is recognised by its
`detach`/`cpu`/`numpy` methods.
"""

from __future__ import annotations

import binascii
import math
from typing import Any

import numpy as np


def as_vector(value: Any, name: str = "vector") -> np.ndarray:
    """A 1-D float32 array from a numpy array, a torch tensor, or a sequence of numbers.

    Raises ValueError for anything else, an empty vector, or NaN/Inf values, so that a bad
    latent fails where it is made rather than in tomorrow's quarantine.
    """
    array = as_numbers(value, name)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim > 1 and array.size else array
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty vector, got shape {np.shape(value)}")
    return array


def as_numbers(value: Any, name: str, dtype: type = np.float32) -> np.ndarray:
    """A finite array of `dtype` (float32, as vectors are stored; or float64) from a numpy array, a torch
    tensor, or (nested) sequences of numbers; ValueError for anything else or NaN/Inf values."""
    if not isinstance(value, np.ndarray) and hasattr(value, "detach"):  # torch.Tensor, without importing torch
        try:
            value = value.numpy(force=True)  # detached, on the CPU
        except TypeError:  # bfloat16 has no numpy twin
            value = value.detach().cpu().float().numpy()
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {type(value).__name__}") from None
    if not _finite(array):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def _finite(array: np.ndarray) -> bool:
    """Whether every value is finite. For a latent, its dot product with itself says so in half the time
    (it is finite unless a value is NaN or Inf, or so large that the squares overflow: then value by value);
    a large array is checked value by value, where BLAS would start threads."""
    return (array.size <= 4096 and math.isfinite(np.vdot(array, array))) or bool(np.isfinite(array).all())


def tensor_json(array: np.ndarray) -> tuple[bytes, bytes, bytes]:
    """The tensor object for a float32 vector as JSON text in three pieces, to be joined by the writer.

    Built by hand: base64 needs no escaping (json.dumps would scan every character of it), and
    leaving the pieces unjoined saves copying 4 KiB strings on the agent's hot path.
    """
    data = np.ascontiguousarray(array, dtype="<f4")
    return (b'{"__type__":"Tensor","shape":[%d],"dtype":"float32","b64":"' % data.size,
            binascii.b2a_base64(data, newline=False), b'"}')  # straight from the array's buffer, no copy
