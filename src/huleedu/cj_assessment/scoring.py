"""Bradley-Terry scores from comparisons: MAP fit with a weak Gaussian prior, SEs and reliability.

The model: P(i beats j) = sigmoid(theta_i - theta_j [+ delta if i was shown first]). The prior
N(0, prior_sd^2) on every theta keeps the fit finite when an essay wins or loses everything and is
weak enough not to matter once an essay has a handful of comparisons. The fit is Newton's method on
the log posterior (strictly concave thanks to the prior), so a warm start converges in a few steps.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import expit, log_expit

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_PRIOR_SD = 3.0  # logits; real essay scales span a few logits, so this barely pulls


@dataclass(frozen=True)
class BTFit:
    """A fitted scale. `scores` are centred on the mean of the centring set (students, normally);
    `covariance` is the posterior covariance of those centred scores, so `ses` already count the
    uncertainty of the centre."""

    scores: FloatArray
    ses: FloatArray
    covariance: FloatArray
    raw: FloatArray  # uncentred parameters (warm start for the next fit); position effect last
    position_effect: float | None
    iterations: int


def fit_bradley_terry(
    n_items: int,
    a: IntArray,
    b: IntArray,
    a_won: BoolArray,
    *,
    prior_sd: float | FloatArray = DEFAULT_PRIOR_SD,
    estimate_position_effect: bool = False,
    centre_on: BoolArray | None = None,
    start: FloatArray | None = None,
    tolerance: float = 1e-7,
    max_iterations: int = 100,
) -> BTFit:
    """Fit item scores to comparisons (`a[k]` shown first against `b[k]`, `a_won[k]` its outcome).

    `prior_sd` is one SD for every item or one per item (the position effect always gets the weak
    default).
    With `estimate_position_effect` a shared first-position advantage (logits) is fitted too and
    taken out of the item scores. Raises ValueError on inconsistent input.
    """
    if n_items < 1:
        raise ValueError("need at least one item")
    if not (len(a) == len(b) == len(a_won)):
        raise ValueError("a, b and a_won must have the same length")
    size = n_items + (1 if estimate_position_effect else 0)
    winner = np.where(a_won, a, b).astype(np.intp)
    loser = np.where(a_won, b, a).astype(np.intp)
    sign = np.where(a_won, 1.0, -1.0)  # d(logit of the observed outcome) / d(position effect)
    precision = np.full(size, 1.0 / DEFAULT_PRIOR_SD**2)
    precision[:n_items] = 1.0 / np.square(np.broadcast_to(np.asarray(prior_sd, dtype=np.float64), (n_items,)))
    theta = np.zeros(size) if start is None or len(start) != size else start.astype(np.float64).copy()

    def log_posterior(values: FloatArray) -> float:
        logits = _logits(values, winner, loser, sign, n_items, estimate_position_effect)
        return float(np.sum(log_expit(logits)) - 0.5 * float(precision @ np.square(values)))

    current = log_posterior(theta)
    iterations = 0
    information = _information(theta, winner, loser, sign, n_items, estimate_position_effect, precision)
    while iterations < max_iterations:
        iterations += 1
        logits = _logits(theta, winner, loser, sign, n_items, estimate_position_effect)
        residual = np.asarray(1.0 - expit(logits), dtype=np.float64)
        gradient = _signed_sums(winner, loser, residual, size)
        if estimate_position_effect:
            gradient[n_items] = float(residual @ sign)
        gradient = gradient - precision * theta
        step = np.linalg.solve(information, gradient)
        scale = 1.0
        while True:  # step halving: Newton may overshoot far from the optimum
            candidate = theta + scale * step
            value = log_posterior(candidate)
            if value >= current - 1e-12 or scale < 1e-6:
                break
            scale /= 2.0
        theta, current = candidate, value
        information = _information(theta, winner, loser, sign, n_items, estimate_position_effect, precision)
        if float(np.max(np.abs(scale * step), initial=0.0)) < tolerance:
            break

    covariance_all = np.linalg.inv(information)[:n_items, :n_items]
    mask = np.ones(n_items, dtype=bool) if centre_on is None else centre_on
    if not mask.any():
        raise ValueError("the centring set is empty")
    weights = mask / mask.sum()
    projector = np.eye(n_items) - np.outer(np.ones(n_items), weights)  # x -> x - mean over the set
    items = theta[:n_items]
    covariance = projector @ covariance_all @ projector.T
    return BTFit(
        scores=items - float(weights @ items),
        ses=np.sqrt(np.clip(np.diag(covariance), 0.0, None)),
        covariance=covariance,
        raw=theta,
        position_effect=float(theta[n_items]) if estimate_position_effect else None,
        iterations=iterations,
    )


def scale_separation_reliability(scores: FloatArray, ses: FloatArray) -> float:
    """(observed variance - mean squared SE) / observed variance, floored at 0.

    The observed variance is the sample variance (ddof=1) of `scores`. Undefined (0.0) for fewer
    than two items or a zero spread.
    """
    if len(scores) < 2:
        return 0.0
    observed = float(np.var(scores, ddof=1))
    if observed <= 0.0:
        return 0.0
    error = float(np.mean(np.square(ses)))
    return max(0.0, (observed - error) / observed)


def ranks_descending(scores: FloatArray) -> IntArray:
    """1-based ranks, 1 for the highest score; equal scores keep their input order."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.intp)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def _logits(
    theta: FloatArray, winner: IntArray, loser: IntArray, sign: FloatArray, n_items: int, position: bool
) -> FloatArray:
    logits = theta[winner] - theta[loser]
    if position:
        logits = logits + theta[n_items] * sign
    return logits


def _signed_sums(
    winner: IntArray, loser: IntArray, values: FloatArray, size: int, loser_sign: float = -1.0
) -> FloatArray:
    """Per item: the sum of `values` over its wins plus `loser_sign` times the sum over its losses."""
    wins = np.bincount(winner, values, minlength=size)
    losses = np.bincount(loser, values, minlength=size)
    return np.asarray(wins + loser_sign * losses, dtype=np.float64)


def _information(
    theta: FloatArray,
    winner: IntArray,
    loser: IntArray,
    sign: FloatArray,
    n_items: int,
    position: bool,
    precision: FloatArray,
) -> FloatArray:
    """Negative Hessian of the log posterior (observed = expected information for this model)."""
    size = len(theta)
    p = np.asarray(expit(_logits(theta, winner, loser, sign, n_items, position)), dtype=np.float64)
    weight = p * (1.0 - p)
    information = np.zeros((size, size))
    np.add.at(information, (winner, loser), -weight)
    np.add.at(information, (loser, winner), -weight)
    diagonal = _signed_sums(winner, loser, weight, size, loser_sign=1.0)
    if position:
        column = _signed_sums(winner, loser, weight * sign, size)
        information[:n_items, n_items] = column[:n_items]
        information[n_items, :n_items] = column[:n_items]
        diagonal[n_items] = float(weight.sum())
    information[np.diag_indices(size)] = diagonal + precision
    return information
