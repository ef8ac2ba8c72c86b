"""Bradley-Terry scoring: the fit, its standard errors, SSR and ranks."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from huleedu.cj_assessment.scoring import fit_bradley_terry, ranks_descending, scale_separation_reliability


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
