from __future__ import annotations

import pytest

from tuner.config import TunerSettings
from tuner.propensity import PowerLawPropensity, clipped_inverse_propensity, from_settings


def test_power_law_is_one_at_the_top_and_falls_with_rank() -> None:
    p = PowerLawPropensity(eta=1.0)
    assert p(0) == 1.0
    assert p(1) == pytest.approx(0.5)
    assert p(9) == pytest.approx(0.1)


def test_eta_zero_means_no_position_bias() -> None:
    p = PowerLawPropensity(eta=0.0)
    assert [p(k) for k in range(5)] == [1.0] * 5


def test_eta_sharpens_the_decay() -> None:
    assert PowerLawPropensity(eta=2.0)(1) == pytest.approx(0.25)


def test_inverse_propensity_is_clipped() -> None:
    p = PowerLawPropensity(eta=1.0)
    assert clipped_inverse_propensity(p, 0, max_ipw=10.0) == 1.0
    assert clipped_inverse_propensity(p, 3, max_ipw=10.0) == pytest.approx(4.0)
    assert clipped_inverse_propensity(p, 50, max_ipw=10.0) == 10.0


def test_negative_rank_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="-1"):
        PowerLawPropensity()(-1)


def test_settings_choose_eta() -> None:
    p = from_settings(TunerSettings(propensity_eta=0.5))
    assert p(3) == pytest.approx(0.5)
