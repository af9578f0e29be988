"""Small statistics several modules share, and how their tables are shown: one implementation each.

The Wilson score interval (Wilson 1927, "Probable inference, the law of succession, and
statistical inference", JASA 22) is scipy's; this module only fixes how fervis calls it.
"""

from __future__ import annotations

__all__ = ["wilson", "shown"]


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


def shown(table, decimals=2):
    """A table as a notebook shows it: rounded, an undefined value (NaN) as "—", never as NaN.

    Only the columns that hold one become text; the others keep their number format. The one
    way fervis's notebooks and :func:`fervis.monitoring.epoch_table` show a table that may hold
    undefined values (a class without faces, a map that is empty, a baseline without a p-value).

    Parameters
    ----------
    table : pandas.DataFrame
    decimals : int or dict, default 2
        As ``DataFrame.round`` takes it.

    Example
    -------
    >>> import pandas as pd
    >>> shown(pd.DataFrame({"a": [0.123, None], "b": [1.0, 2.0]})).to_dict("list")
    {'a': [0.12, '—'], 'b': [1.0, 2.0]}
    """
    rounded = table.round(decimals)
    holes = [c for c in rounded.columns if rounded[c].isna().any()]
    if not holes:
        return rounded
    out = rounded.copy()
    for column in holes:
        out[column] = rounded[column].astype(object).where(rounded[column].notna(), "—")
    return out
