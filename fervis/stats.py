"""Small statistics several modules share: one implementation each.

The Wilson score interval (Wilson 1927, "Probable inference, the law of succession, and
statistical inference", JASA 22) is scipy's; this module only fixes how fervis calls it.
"""

from __future__ import annotations

__all__ = ["wilson"]


def wilson(count, n, confidence=0.95):
    """Wilson score interval of the proportion ``count / n``.

    Parameters
    ----------
    count : int or float
        Successes (a float, e.g. ``rate * n``, is rounded to the nearest int).
    n : int
        Trials.
    confidence : float, default 0.95

    Returns
    -------
    (low, high) : two floats
        NaN, NaN for ``n = 0`` (no interval without faces).

    Example
    -------
    >>> [round(v, 3) for v in wilson(7, 10)]
    [0.397, 0.892]
    """
    from scipy.stats import binomtest

    if n <= 0:
        return float("nan"), float("nan")
    ci = binomtest(int(round(count)), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
