"""Bradley-Terry scoring: the fit, its standard errors, SSR and ranks."""

import math

import choix
import numpy as np
import pytest
from scipy.stats import spearmanr

from huleedu.cj_assessment.run import expected_rank_correlation
from huleedu.cj_assessment.scoring import (
    NO_ITEM,
    fit_bradley_terry,
    fit_plackett_luce,
    ranks_descending,
    scale_separation_reliability,
)


def _simulate(
    qualities: np.ndarray, comparisons: int, seed: int, position_bias: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(qualities)
    first = rng.integers(0, n, comparisons)
    second = (first + rng.integers(1, n, comparisons)) % n  # never an essay against itself
    p_first = 1.0 / (1.0 + np.exp(-(qualities[first] - qualities[second] + position_bias)))
    return first, second, rng.random(comparisons) < p_first


def test_two_essays_fit_the_closed_form_log_odds_and_its_standard_error() -> None:
    # essay 0 wins three of four (twice shown first, once second); the MLE of the gap is ln 3
    first, second = np.array([0, 0, 0, 1]), np.array([1, 1, 1, 0])
    first_won = np.array([True, True, False, False])

    fit = fit_bradley_terry(2, first, second, first_won, prior_sd=1e4)

    gap = math.log(3.0)
    gap_se = 1.0 / math.sqrt(4 * 0.75 * 0.25)  # Fisher information of the gap: n p (1 - p)
    assert fit.scores == pytest.approx([gap / 2, -gap / 2], abs=1e-6)
    assert fit.ses == pytest.approx([gap_se / 2, gap_se / 2], abs=1e-6)


def test_the_fit_recovers_known_qualities_from_simulated_comparisons() -> None:
    qualities = np.linspace(-2.0, 2.0, 12)
    first, second, first_won = _simulate(qualities, comparisons=12 * 40, seed=11)

    fit = fit_bradley_terry(12, first, second, first_won)

    error = fit.scores - (qualities - qualities.mean())
    assert np.all(np.abs(error) < 3.0 * fit.ses)
    assert float(np.sqrt(np.mean(error**2))) < 0.35
    assert spearmanr(fit.scores, qualities).statistic > 0.95


def test_standard_errors_shrink_with_more_comparisons() -> None:
    qualities = np.linspace(-1.5, 1.5, 10)
    first, second, first_won = _simulate(qualities, comparisons=10 * 20, seed=3)
    few = 10 * 5 // 2

    thin = fit_bradley_terry(10, first[:few], second[:few], first_won[:few])
    thick = fit_bradley_terry(10, first, second, first_won)

    assert np.all(thick.ses < thin.ses)


def test_ssr_matches_a_hand_computed_example() -> None:
    scores = np.array([-1.5, -0.5, 0.5, 1.5])
    ses = np.array([0.5, 0.5, 0.5, 0.5])
    # sample variance (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 3 = 5/3; mean squared SE 0.25
    assert scale_separation_reliability(scores, ses) == pytest.approx((5 / 3 - 0.25) / (5 / 3))


def test_ssr_of_a_small_fixed_fit_matches_the_formula_computed_by_hand() -> None:
    first = np.array([0, 1, 2, 0, 1, 2, 0, 3])
    second = np.array([1, 2, 3, 2, 3, 0, 3, 1])
    first_won = np.array([True, True, True, True, False, False, True, False])
    fit = fit_bradley_terry(4, first, second, first_won)

    mean = sum(fit.scores) / 4
    observed = sum((s - mean) ** 2 for s in fit.scores) / 3
    error = sum(se**2 for se in fit.ses) / 4
    assert scale_separation_reliability(fit.scores, fit.ses) == pytest.approx((observed - error) / observed)


def test_ssr_is_zero_when_the_error_swamps_the_spread() -> None:
    assert scale_separation_reliability(np.array([-0.1, 0.1]), np.array([1.0, 1.0])) == 0.0
    assert scale_separation_reliability(np.array([0.3]), np.array([0.1])) == 0.0


def test_scores_are_centred_on_the_chosen_set_and_their_ses_count_the_centre() -> None:
    qualities = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
    first, second, first_won = _simulate(qualities, comparisons=200, seed=5)
    students = np.array([True, True, True, False, False])

    fit = fit_bradley_terry(5, first, second, first_won, centre_on=students)

    assert float(fit.scores[students].mean()) == pytest.approx(0.0, abs=1e-9)
    assert float(fit.covariance[students][:, students].sum()) == pytest.approx(0.0, abs=1e-9)


def test_an_essay_that_wins_everything_keeps_a_finite_score() -> None:
    first, second = np.array([0, 0, 0, 1, 2]), np.array([1, 2, 1, 2, 1])
    fit = fit_bradley_terry(3, first, second, np.array([True, True, True, True, False]))

    assert np.all(np.isfinite(fit.scores))
    assert np.all(np.isfinite(fit.ses))
    assert fit.scores[0] == fit.scores.max()


def test_a_position_effect_is_estimated_and_kept_out_of_the_scores() -> None:
    qualities = np.linspace(-1.0, 1.0, 8)
    first, second, first_won = _simulate(qualities, comparisons=3000, seed=9, position_bias=0.6)

    fit = fit_bradley_terry(8, first, second, first_won, estimate_position_effect=True)

    assert fit.position_effect == pytest.approx(0.6, abs=0.15)
    assert spearmanr(fit.scores, qualities).statistic > 0.95


def test_ranks_are_one_based_from_the_highest_score() -> None:
    assert ranks_descending(np.array([0.2, 1.5, -0.3, 0.9])).tolist() == [3, 1, 4, 2]


def test_inconsistent_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        fit_bradley_terry(3, np.array([0, 1]), np.array([1]), np.array([True, False]))


# --- checked against an independent implementation (choix) ---


def _random_rankings(n: int, judgements: int, size: int, seed: int) -> np.ndarray:
    """Plackett-Luce rankings of `size` distinct items drawn from random qualities (Gumbel trick)."""
    rng = np.random.default_rng(seed)
    qualities = rng.normal(0.0, 1.5, n)
    rows = []
    for _ in range(judgements):
        shown = rng.choice(n, size, replace=False)
        noisy = qualities[shown] + rng.gumbel(size=size)
        rows.append(shown[np.argsort(-noisy)])
    return np.array(rows, dtype=np.intp)


@pytest.mark.parametrize(("prior_sd", "seed"), [(3.0, 1), (1.0, 2), (0.5, 3)])
def test_bradley_terry_map_scores_match_choix(prior_sd: float, seed: int) -> None:
    n = 12
    pairs = _random_rankings(n, judgements=150, size=2, seed=seed)
    shown_first = np.random.default_rng(seed).random(len(pairs)) < 0.5
    first = np.where(shown_first, pairs[:, 0], pairs[:, 1])
    second = np.where(shown_first, pairs[:, 1], pairs[:, 0])

    fit = fit_bradley_terry(n, first, second, shown_first, prior_sd=prior_sd)
    reference = choix.opt_pairwise(
        n, [tuple(pair) for pair in pairs.tolist()], alpha=1.0 / (2.0 * prior_sd**2), tol=1e-12
    )

    # an isotropic prior centres the MAP on zero, as the fit centres its scores
    assert fit.scores == pytest.approx(reference - reference.mean(), abs=1e-5)


@pytest.mark.parametrize(("size", "prior_sd", "seed"), [(3, 3.0, 4), (4, 1.0, 5), (6, 2.0, 6)])
def test_plackett_luce_map_scores_match_choix(size: int, prior_sd: float, seed: int) -> None:
    n = 15
    rankings = _random_rankings(n, judgements=60, size=size, seed=seed)
    slots = np.array([np.random.default_rng(seed + r).permutation(size) for r in range(len(rankings))])

    fit = fit_plackett_luce(n, rankings, slots, prior_sd=prior_sd)
    reference = choix.opt_rankings(n, rankings.tolist(), alpha=1.0 / (2.0 * prior_sd**2), tol=1e-12)

    assert fit.scores == pytest.approx(reference - reference.mean(), abs=1e-5)


def test_a_ranking_of_two_is_the_pair_it_names() -> None:
    rankings = _random_rankings(8, judgements=80, size=2, seed=7)
    slots = np.tile([1, 0], (len(rankings), 1))  # the winner was always shown second

    as_rankings = fit_plackett_luce(8, rankings, slots, estimate_position_effect=True)
    as_pairs = fit_bradley_terry(
        8, rankings[:, 1], rankings[:, 0], np.zeros(len(rankings), dtype=bool), estimate_position_effect=True
    )

    assert as_rankings.scores == pytest.approx(as_pairs.scores, abs=1e-9)
    assert as_rankings.position_effect == pytest.approx(as_pairs.position_effect, abs=1e-9)


def test_rankings_of_mixed_sizes_fit_together_with_a_position_effect_per_slot() -> None:
    rng = np.random.default_rng(8)
    qualities = np.linspace(-1.5, 1.5, 10)
    bias = np.array([0.8, 0.3, 0.0])  # per shown slot; the last slot of the longest judgement: 0
    rows, slot_rows = [], []
    for r in range(3000):
        size = 3 if r % 2 else 2
        shown = rng.choice(10, size, replace=False)
        noisy = qualities[shown] + bias[:size] + rng.gumbel(size=size)
        ranked = np.argsort(-noisy)
        rows.append(np.pad(shown[ranked], (0, 3 - size), constant_values=NO_ITEM))
        slot_rows.append(np.pad(ranked, (0, 3 - size)))

    fit = fit_plackett_luce(10, np.array(rows), np.array(slot_rows), estimate_position_effect=True)

    assert fit.position_effects is not None
    assert fit.position_effects == pytest.approx((0.8, 0.3), abs=0.15)
    assert spearmanr(fit.scores, qualities).statistic > 0.95


def test_the_expected_rank_correlation_follows_the_posterior_it_is_given() -> None:
    scores = np.linspace(-2.0, 2.0, 20)
    rng = np.random.default_rng(4)

    sure = expected_rank_correlation(scores, scores, 1e-6 * np.eye(20), rng)
    lost = expected_rank_correlation(scores, scores, 1e4 * np.eye(20), rng)
    reversed_ = expected_rank_correlation(scores, -scores, 1e-6 * np.eye(20), rng)

    assert sure == pytest.approx(1.0, abs=1e-9)
    assert abs(lost) < 0.1
    assert reversed_ == pytest.approx(-1.0, abs=1e-9)
    # in between: the mean Spearman correlation of the scores with draws around them
    noisy = expected_rank_correlation(scores, scores, 0.5 * np.eye(20), np.random.default_rng(5))
    draws = scores + np.random.default_rng(6).normal(0.0, np.sqrt(0.5), (2000, 20))
    direct = np.mean([spearmanr(scores, draw).statistic for draw in draws])
    assert noisy == pytest.approx(direct, abs=0.02)
