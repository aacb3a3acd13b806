"""report.py's numbers: how each is written (every number in its text passes through number()) and the statistics
behind them, over the seeds' final evaluations (final.json's dicts) and eval tables."""
from typing import Optional

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95  # of the difference intervals and the trend test
LAST_EVALS = 5  # the periodic evals at the end of training that a curve's trend is fitted to


def number(x: Optional[float], digits: Optional[int] = 1, sign: bool = False, commas: bool = True) -> str:
    """x to `digits` decimals (None: as short as it is), thousands by commas; 'n/a' for a missing or non-finite x."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:{'+' if sign else ''}{',' if commas else ''}{'g' if digits is None else f'.{digits}f'}}"


def shown(value: object, commas: bool = True) -> str:
    """A config value in text, a number through number() (commas=False: as a command line takes it)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number(value, None, commas=commas) if is_number else str(value)


def score_text(scores: list) -> str:
    """'60.0 ± 2.0': mean ± sample std (ddof = 1) over seeds; no std over one seed; 'n/a' with none."""
    if not scores:
        return "n/a"
    return number(np.mean(scores)) + (f" ± {number(np.std(scores, ddof=1))}" if len(scores) > 1 else "")


def seeds_text(scores: list) -> str:
    return ", ".join(number(s) for s in scores) or "none"


def mean_and_variance(finals: list) -> tuple:
    """The seeds' mean score, its variance and the seed count; the seeds' variance (ddof = 1) is taken at least as
    large as their evaluations' own (episode variance / episodes): seeds that agree by chance prove nothing."""
    values = np.array([f["score_mean"] for f in finals])
    evaluation = np.mean([f["score_std"] ** 2 / f["episodes"] for f in finals])
    return values.mean(), max(values.var(ddof=1), evaluation) / len(values), len(values)


def difference(finals: list, base: list) -> Optional[tuple]:
    """(mean difference, half-width of its CONFIDENCE Welch interval), or None with under 2 seeds on a side."""
    if min(len(finals), len(base)) < 2:
        return None
    (mean_a, var_a, n_a), (mean_b, var_b, n_b) = mean_and_variance(finals), mean_and_variance(base)
    freedom = (var_a + var_b) ** 2 / (var_a ** 2 / (n_a - 1) + var_b ** 2 / (n_b - 1))
    return mean_a - mean_b, scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, freedom) * np.sqrt(var_a + var_b)


def shown_by_interval(found: Optional[tuple]) -> bool:
    return found is not None and abs(found[0]) > found[1]


def difference_text(found: Optional[tuple]) -> str:
    """'+4.1 ± 2.9': the difference ± its interval's half-width."""
    if found is None:
        return "n/a (one seed on a side: no interval)"
    return f"{number(found[0], sign=True)} ± {number(found[1])}"


def claim(found: Optional[tuple]) -> str:
    """The difference in words its interval supports: 'a difference of +4.1 ± 2.9' or 'no difference shown (...)'."""
    return (f"a difference of {difference_text(found)}" if shown_by_interval(found)
            else f"no difference shown ({difference_text(found)})")


def rising(tables: list) -> Optional[float]:
    """The least-squares slope (per 1,000 steps) of each seed's last LAST_EVALS evals (its eval table) where it is
    positive at one-sided p < 1 - CONFIDENCE; else None."""
    points = [p for t in tables if "score_mean" in t for p in list(zip(t["step"], t["score_mean"]))[-LAST_EVALS:]]
    if len({s for s, _ in points}) < 3:
        return None
    fit = scipy_stats.linregress(*np.array(points, dtype=float).T)
    return fit.slope * 1000 if fit.slope > 0 and fit.pvalue / 2 < 1 - CONFIDENCE else None


def trend_text(tables: list, steps: int) -> str:
    """'still rising at 20,000 steps (+1.2 per 1,000 steps)' or 'level'."""
    if (slope := rising(tables)) is None:
        return "level"
    return f"still rising at {number(steps, 0)} steps ({number(slope, sign=True)} per {number(1000, 0)} steps)"
