"""A reliability diagram as a small inline SVG: accuracy against confidence, per equal-width bin.

Bars on the diagonal mean a score of 0.8 is right 80% of the time; bars below it, an over-confident model.
Inline SVG, so the HTML report stays one page with no plotting library at view time.
"""
from __future__ import annotations

from ..metrics import ReliabilityBins

_SIDE = 220  # plot area, pixels
_MARGIN = 36  # room for the axis labels


def reliability_svg(bins: ReliabilityBins) -> str:
    """The diagram of ``bins``: one bar per non-empty bin (its accuracy), the diagonal, the ECE in the caption.

    Args:
        bins: from ``retrain.metrics.reliability_bins``.

    Returns:
        An ``<svg>`` element, to be placed in an HTML page.
    """
    width = _SIDE / len(bins.counts)
    bars = "".join(
        f"<rect x='{_MARGIN + number * width:.1f}' y='{_SIDE * (1 - accuracy):.1f}' width='{width - 1:.1f}' "
        f"height='{_SIDE * accuracy:.1f}' fill='#4c78a8'><title>confidence {confidence:.2f}: {accuracy:.0%} right "
        f"of {count}</title></rect>"
        for number, (count, confidence, accuracy) in enumerate(zip(bins.counts, bins.confidence, bins.accuracy))
        if count)
    bottom, right = _SIDE, _MARGIN + _SIDE
    return (f"<svg class='reliability' width='{right + 8}' height='{bottom + _MARGIN}' role='img' "
            f"aria-label='reliability diagram'>{bars}"
            f"<line x1='{_MARGIN}' y1='{bottom}' x2='{right}' y2='0' stroke='#d62728' stroke-dasharray='4 3'/>"
            f"<rect x='{_MARGIN}' y='0' width='{_SIDE}' height='{_SIDE}' fill='none' stroke='#888'/>"
            f"<text x='{_MARGIN + _SIDE / 2}' y='{bottom + 28}' text-anchor='middle'>confidence (top-1 score)</text>"
            f"<text x='12' y='{_SIDE / 2}' text-anchor='middle' transform='rotate(-90 12 {_SIDE / 2})'>accuracy</text>"
            f"<text x='{_MARGIN - 4}' y='{bottom}' text-anchor='end'>0</text>"
            f"<text x='{_MARGIN - 4}' y='12' text-anchor='end'>1</text>"
            f"<text x='{right}' y='{bottom + 14}' text-anchor='end'>1</text></svg>")
