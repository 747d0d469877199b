"""The One Euro filter (Casiez, Roussel & Vogel 2012): smoothing whose cut-off rises with speed, so slow
jitter is removed and fast motion is not lagged. Works on arrays of any shape, one filter per element."""

from __future__ import annotations

import numpy as np


class OneEuroFilter:
    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 0.05, derivative_cutoff: float = 1.0):
        self.period = 1.0 / fps
        self.min_cutoff, self.beta, self.derivative_cutoff = min_cutoff, beta, derivative_cutoff
        self._value: np.ndarray | None = None
        self._derivative: np.ndarray | None = None

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / self.period)

    def reset(self) -> None:
        self._value = self._derivative = None

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None:
            self._value, self._derivative = value.copy(), np.zeros_like(value)
            return value.copy()
        derivative = (value - self._value) / self.period
        a_d = self._alpha(self.derivative_cutoff)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative)
        a = self._alpha(cutoff)
        self._value = a * value + (1 - a) * self._value
        return self._value.copy()
