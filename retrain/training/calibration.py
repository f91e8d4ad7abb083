"""Temperature scaling: make a score of 0.8 mean right about 80% of the time (``--calibrate``).

After training, one number T is fitted on the whole validation set: the one
that minimises the negative log-likelihood of ``softmax(logits / T)``
(Guo et al. 2017). Dividing every logit by the same positive T never changes
which class is highest, so top-1 answers stay; only the confidence moves.
It is a one-dimensional, smooth problem, solved by golden-section search on
log T: deterministic, seconds on cached features.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import Log, option_name
from ..metrics import expected_calibration_error
from .head import Head

# The search range of T. A validation set the head gets entirely right pushes T towards 0 (ever more
# confident); the bound stops it at 50x sharper logits.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.02, 50.0
_SEARCH_STEPS = 80  # golden-section steps on log T: the bracket shrinks to 0.618^80 of its width, below 1e-16


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, truths: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(logits / temperature)[truth]`` over the rows, in float64.

    Args:
        logits: ``[N, classes]`` logits before any temperature.
        truths: ``[N]`` the true class of each row.
        temperature: what the logits are divided by.

    Returns:
        The mean negative log-likelihood (the cross-entropy the head was trained on).
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    log_partition = np.log(np.exp(scaled).sum(axis=1))
    return float((log_partition - scaled[np.arange(len(scaled)), np.asarray(truths)]).mean())


def fit_temperature(logits: np.ndarray, truths: np.ndarray) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] with the lowest ``negative_log_likelihood``.

    The NLL is convex in 1/T, so it has one minimum in the range (or sits at a bound), which golden-section
    search on log T finds without derivatives; the same inputs always give the same T.

    Args:
        logits: ``[N, classes]`` logits of the validation images, before any temperature.
        truths: ``[N]`` their true classes.

    Returns:
        The fitted temperature.
    """
    ratio = (math.sqrt(5) - 1) / 2
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)

    def loss(log_temperature: float) -> float:
        return negative_log_likelihood(logits, truths, math.exp(log_temperature))

    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_loss, right_loss = loss(left), loss(right)
    for _ in range(_SEARCH_STEPS):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = loss(right)
    return math.exp((low + high) / 2)


def calibrate_head(head: Head, features: np.ndarray, truths: np.ndarray, log: Log) -> Head:
    """``head`` with the temperature fitted on the validation ``features``; ``head`` itself without validation.

    Args:
        head: the trained head (its own temperature is ignored: the fit starts from the raw logits).
        features: ``[N, D]`` the whole validation set's bottlenecks, as the head sees them.
        truths: ``[N]`` their classes.
        log: where the fit is reported.

    Returns:
        The calibrated head, its layers shared with ``head``.
    """
    if not len(truths):
        log(f"No validation images: {option_name('calibrate')} left the softmax as trained")
        return head
    logits = head.logits_of(features)
    temperature = fit_temperature(logits, truths)
    log(f"Calibrated: temperature {temperature:.3f} fitted on {len(truths)} validation images (validation NLL "
        f"{negative_log_likelihood(logits, truths):.4f} -> {negative_log_likelihood(logits, truths, temperature):.4f})")
    return dataclasses.replace(head, temperature=temperature)


def calibration_line(head: Head, features: np.ndarray, truths: np.ndarray) -> str:
    """The test report's ECE line: ``ECE = 0.0xx``, with before and after when ``head`` is calibrated.

    Args:
        head: the head the report is on.
        features: ``[N, D]`` the test rows' bottlenecks.
        truths: ``[N]`` their classes.

    Returns:
        One line of text.
    """
    after = expected_calibration_error(head.predict_proba(features), truths)
    if head.temperature == 1.0:
        return f"ECE = {after:.3f}"
    before = expected_calibration_error(dataclasses.replace(head, temperature=1.0).predict_proba(features), truths)
    return f"ECE = {before:.3f} before calibration, {after:.3f} after (temperature {head.temperature:.3f})"
