"""Per-token uncertainty: hand-computed values, stability, and the min-entropy <= Shannon property."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgevlm.models.uncertainty import token_uncertainty


def test_uniform_distribution_hand_values():
    mn, sh, mg = token_uncertainty(np.zeros((1, 8)))
    assert mn[0] == pytest.approx(3.0)          # -log2(1/8)
    assert sh[0] == pytest.approx(3.0)
    assert mg[0] == pytest.approx(0.0)


def test_two_point_distribution_hand_values():
    # p = (0.75, 0.25): logits log(3), 0
    mn, sh, mg = token_uncertainty(np.array([[math.log(3.0), 0.0]]))
    assert mn[0] == pytest.approx(-math.log2(0.75))
    assert sh[0] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert mg[0] == pytest.approx(0.5)


def test_three_way_hand_values_and_row_per_step():
    p = np.array([0.5, 0.3, 0.2])
    logits = np.stack([np.log(p) + 7.0, np.zeros(3)])  # shift does not matter
    mn, sh, mg = token_uncertainty(logits)
    assert mn.shape == sh.shape == mg.shape == (2,)
    assert mn[0] == pytest.approx(1.0)
    assert sh[0] == pytest.approx(-(p * np.log2(p)).sum())
    assert mg[0] == pytest.approx(0.2)
    assert mn[1] == pytest.approx(math.log2(3))


def test_huge_and_masked_logits_are_stable():
    logits = np.array([[1e4, 1e4 - 1.0, -np.inf, -np.inf]])
    mn, sh, mg = token_uncertainty(logits)
    assert np.isfinite([mn[0], sh[0], mg[0]]).all()
    p1 = 1 / (1 + math.exp(-1))
    assert mg[0] == pytest.approx(p1 - (1 - p1))
    assert mn[0] == pytest.approx(-math.log2(p1))


def test_certain_token_has_zero_entropy_and_margin_one():
    mn, sh, mg = token_uncertainty(np.array([[0.0, -1e6, -1e6]]))
    assert mn[0] == pytest.approx(0.0, abs=1e-12)
    assert sh[0] == pytest.approx(0.0, abs=1e-9)
    assert mg[0] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [np.array([[np.nan, 0.0]]), np.array([[-np.inf, -np.inf]]), np.zeros((2, 1))])
def test_bad_logits_raise(bad):
    with pytest.raises(ValueError):
        token_uncertainty(bad)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 60)),
              elements=st.floats(-50, 50, allow_nan=False, allow_subnormal=False)))
def test_min_entropy_le_shannon_and_margin_in_unit_interval(logits):
    mn, sh, mg = token_uncertainty(logits)
    assert (mn <= sh + 1e-9).all()
    assert (mn >= 0).all() and (sh <= math.log2(logits.shape[1]) + 1e-9).all()
    assert ((mg >= 0) & (mg <= 1)).all()
