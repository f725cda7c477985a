"""What every weight-file reader returns: tensors by name, each with its shape known up front
and its values read on demand (checking a file against an architecture reads no values)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class WeightsFileError(ValueError):
    """A weights file that cannot be read, or that does not fit the architecture asked for."""


@dataclass(frozen=True)
class StoredTensor:
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]

    def load(self) -> np.ndarray:
        array = np.asarray(self.read())
        if tuple(array.shape) != self.shape:  # a reader's bug, never silently reshaped
            raise WeightsFileError(f"read a tensor of shape {array.shape}, expected {self.shape}")
        return array


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 → float32 (exact: bfloat16 is float32's upper half)."""
    return (bits.astype("<u4") << 16).view("<f4").astype(np.float32)
