"""Scores from judgements: the Plackett-Luce MAP fit with a weak Gaussian prior, SEs and reliability.

A judgement orders k essays (k = 2: a pair). The model: the judge picks the best of the k with
probability proportional to exp(theta), then the best of the rest, and so on, so a ranking of k
contributes its k-1 sequential choices; for k = 2 that is Bradley-Terry, P(i beats j) =
sigmoid(theta_i - theta_j). Optionally every shown slot but the last carries a shared position
effect (logits added to the essay shown there; for pairs: the first-shown advantage), fitted and
kept out of the scores. The prior N(0, prior_sd^2) on every theta keeps the fit finite when an
essay wins or loses everything and is weak enough not to matter once an essay has a handful of
judgements. The fit is Newton's method on the log posterior (strictly concave thanks to the prior),
so a warm start converges in a few steps.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_PRIOR_SD = 3.0  # logits; real essay scales span a few logits, so this barely pulls
NO_ITEM = -1  # padding of a ranking shorter than the longest one


@dataclass(frozen=True)
class BTFit:
    """A fitted scale (Plackett-Luce; Bradley-Terry for pairs). `scores` are centred on the mean of
    the centring set (students, normally); `covariance` is the posterior covariance of those
    centred scores, so `ses` already count the uncertainty of the centre."""

    scores: FloatArray
    ses: FloatArray
    covariance: FloatArray
    raw: FloatArray  # uncentred parameters (warm start for the next fit); position effects last
    position_effects: tuple[float, ...] | None  # per shown slot but the last, when estimated
    iterations: int

    @property
    def position_effect(self) -> float | None:
        """The first shown slot's effect (for pairs: the first-shown advantage)."""
        return self.position_effects[0] if self.position_effects else None


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
) -> BTFit:
    """Fit item scores to pairs (`a[k]` shown first against `b[k]`, `a_won[k]` its outcome): the
    k = 2 case of `fit_plackett_luce`, with its options. Raises ValueError on inconsistent input."""
    if not (len(a) == len(b) == len(a_won)):
        raise ValueError("a, b and a_won must have the same length")
    first, second = np.asarray(a, dtype=np.intp), np.asarray(b, dtype=np.intp)
    won = np.asarray(a_won, dtype=np.bool_)
    order = np.column_stack([np.where(won, first, second), np.where(won, second, first)]).reshape(-1, 2)
    slots = np.column_stack([np.where(won, 0, 1), np.where(won, 1, 0)]).reshape(-1, 2)
    return fit_plackett_luce(
        n_items,
        order,
        slots,
        prior_sd=prior_sd,
        estimate_position_effect=estimate_position_effect,
        centre_on=centre_on,
        start=start,
    )


def fit_plackett_luce(
    n_items: int,
    order: IntArray,
    slots: IntArray,
    *,
    prior_sd: float | FloatArray = DEFAULT_PRIOR_SD,
    estimate_position_effect: bool = False,
    centre_on: BoolArray | None = None,
    start: FloatArray | None = None,
    tolerance: float = 1e-7,
    max_iterations: int = 100,
) -> BTFit:
    """Fit item scores to rankings: row r of `order` holds the items of judgement r from judged
    best to worst (padded with NO_ITEM after its last), `slots[r]` the shown slot of each (0:
    shown first).

    `prior_sd` is one SD for every item or one per item (position effects always get the weak
    default). With `estimate_position_effect` a shared effect per shown slot but the last is
    fitted too and taken out of the item scores. Raises ValueError on inconsistent input.
    """
    if n_items < 1:
        raise ValueError("need at least one item")
    order, slots = np.asarray(order, dtype=np.intp), np.asarray(slots, dtype=np.intp)
    if order.ndim != 2 or slots.ndim != 2:
        raise ValueError("order and slots must be two-dimensional")
    if order.shape != slots.shape:
        raise ValueError("order and slots must have the same shape")
    width = order.shape[1]
    if width and (order.max(initial=NO_ITEM) >= n_items or (order < NO_ITEM).any()):
        raise ValueError("an item index is out of range")
    n_effects = max(width - 1, 1) if estimate_position_effect else 0
    size = n_items + n_effects
    choices = _Choices.of(order, slots, n_items, n_effects)
    precision = np.full(size, 1.0 / DEFAULT_PRIOR_SD**2)
    precision[:n_items] = 1.0 / np.square(np.broadcast_to(np.asarray(prior_sd, dtype=np.float64), (n_items,)))
    theta = np.zeros(size) if start is None or len(start) != size else start.astype(np.float64).copy()

    def log_posterior(values: FloatArray) -> float:
        return choices.log_likelihood(values) - 0.5 * float(precision @ np.square(values))

    current = log_posterior(theta)
    iterations = 0
    gradient, information = choices.derivatives(theta, size)
    while iterations < max_iterations:
        iterations += 1
        step = np.linalg.solve(information + np.diag(precision), gradient - precision * theta)
        scale = 1.0
        while True:  # step halving: Newton may overshoot far from the optimum
            candidate = theta + scale * step
            value = log_posterior(candidate)
            if value >= current - 1e-12 or scale < 1e-6:
                break
            scale /= 2.0
        theta, current = candidate, value
        gradient, information = choices.derivatives(theta, size)
        if float(np.max(np.abs(scale * step), initial=0.0)) < tolerance:
            break

    covariance_all = np.linalg.inv(information + np.diag(precision))[:n_items, :n_items]
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
        position_effects=tuple(float(x) for x in theta[n_items:]) if n_effects else None,
        iterations=iterations,
    )


@dataclass(frozen=True)
class _Choices:
    """Every sequential choice of every ranking, padded to one width: row c is the set the judge
    chose from (the chosen one in column 0), as item and parameter indices."""

    items: IntArray  # choices x width: item indices, 0 where padded
    effects: IntArray  # choices x width: position-effect parameter index, or -1 (none)
    present: BoolArray  # choices x width

    @classmethod
    def of(cls, order: IntArray, slots: IntArray, n_items: int, n_effects: int) -> "_Choices":
        width = order.shape[1]
        rows_items, rows_slots, rows_present = [], [], []
        for step in range(max(width - 1, 0)):  # choice `step`: the best of order[:, step:]
            remaining = order[:, step:]
            real = remaining != NO_ITEM
            chooses = real[:, 1:].any(axis=1)  # at least two left: a choice is made
            pad = width - remaining.shape[1]
            rows_items.append(np.pad(remaining[chooses], ((0, 0), (0, pad)), constant_values=NO_ITEM))
            rows_slots.append(np.pad(slots[chooses, step:], ((0, 0), (0, pad)), constant_values=0))
            rows_present.append(np.pad(real[chooses], ((0, 0), (0, pad)), constant_values=False))
        if rows_items:
            items, slot, present = np.vstack(rows_items), np.vstack(rows_slots), np.vstack(rows_present)
        else:
            items = np.zeros((0, 1), dtype=np.intp)
            slot, present = items.copy(), np.zeros((0, 1), dtype=bool)
        effects = (
            np.where(present & (slot < n_effects), n_items + slot, -1)
            if n_effects
            else np.full_like(items, -1)
        )
        return cls(np.where(present, items, 0).astype(np.intp), effects.astype(np.intp), present)

    def _utilities(self, theta: FloatArray) -> FloatArray:
        utility = theta[self.items] + np.where(self.effects >= 0, theta[np.maximum(self.effects, 0)], 0.0)
        return np.asarray(np.where(self.present, utility, -np.inf), dtype=np.float64)

    def log_likelihood(self, theta: FloatArray) -> float:
        if not len(self.items):
            return 0.0
        utility = self._utilities(theta)
        return float(np.sum(utility[:, 0] - _row_logsumexp(utility)[:, 0]))

    def derivatives(self, theta: FloatArray, size: int) -> tuple[FloatArray, FloatArray]:
        """The log likelihood's gradient and information (its negative Hessian)."""
        gradient = np.zeros(size)
        information = np.zeros((size, size))
        if not len(self.items):
            return gradient, information
        utility = self._utilities(theta)
        p = np.exp(utility - _row_logsumexp(utility))  # 0 where padded
        chosen = np.zeros_like(p)
        chosen[:, 0] = 1.0
        residual = chosen - p
        block = p[:, :, None] * np.eye(p.shape[1])[None] - p[:, :, None] * p[:, None, :]
        indices = [self.items] + ([self.effects] if (self.effects >= 0).any() else [])
        for left in indices:
            valid = self.present & (left >= 0)
            gradient += np.bincount(left[valid], residual[valid], minlength=size)
            for right in indices:
                pairs = valid[:, :, None] & self.present[:, None, :] & (right >= 0)[:, None, :]
                flat = left[:, :, None] * size + right[:, None, :]
                information += np.bincount(flat[pairs], block[pairs], minlength=size * size).reshape(
                    size, size
                )
        return gradient, information


def _row_logsumexp(values: FloatArray) -> FloatArray:
    """log(sum(exp)) of each row, as a column (every row has a finite entry)."""
    top = np.max(values, axis=1, keepdims=True)
    return np.asarray(top + np.log(np.sum(np.exp(values - top), axis=1, keepdims=True)), dtype=np.float64)


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
