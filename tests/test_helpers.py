"""The shared test assertions can fail: a real config change is caught, a last-digit one is not."""

import dataclasses

import pytest
from helpers import assert_config_matches

SAVED = {
    "task": {"d": 5, "input_cov": [[1.9119866806777785, -0.0011411818268791038]]},
    "train": {"steps": 3000, "learning_rate": 0.001, "num_seeds": 5},
    "init": "gd_sparsity",
    "test_lengths": [10, 20],
    "shared_weights": False,
    "key_size": None,
}


def _with(section, key, value):
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in SAVED.items()}
    config[section][key] = value
    return config


def test_last_digit_float_differences_match():
    # One ulp-scale change in each float, as a fresh install's LAPACK may give.
    current = _with("task", "input_cov", [[1.9119866806777787, -0.0011411818268791040]])
    assert current != SAVED
    assert_config_matches(SAVED, current)


@pytest.mark.parametrize(
    ("current", "field"),
    [
        (_with("task", "input_cov", [[1.9119866806777785, -0.0011412]]), r"input_cov\[0\]\[1\]"),
        (_with("train", "learning_rate", 0.002), "train.learning_rate: saved 0.001, current 0.002"),
        (_with("train", "steps", 3001), "train.steps: saved 3000, current 3001"),
        ({**SAVED, "init": "zeros"}, "config.init: saved 'gd_sparsity', current 'zeros'"),
        ({**SAVED, "test_lengths": [10, 20, 40]}, "test_lengths: saved has 2 entries"),
        ({**SAVED, "shared_weights": 0}, "shared_weights: saved False, current 0"),
        ({**SAVED, "key_size": 0}, "key_size: saved None, current 0"),
        ({k: v for k, v in SAVED.items() if k != "init"}, "init: saved 'gd_sparsity', missing"),
        ({**SAVED, "eval_seed": 1}, "eval_seed: missing from the saved config, current 1"),
    ],
)
def test_real_differences_fail_and_name_the_field(current, field):
    with pytest.raises(AssertionError, match=field):
        assert_config_matches(SAVED, current)


@dataclasses.dataclass(frozen=True)
class _Fit:
    steps: int = 100
    schedule: str = "constant"  # a field added after SAVED_FIT was written


@dataclasses.dataclass(frozen=True)
class _Study:
    fit: _Fit = dataclasses.field(default_factory=_Fit)
    seeds: tuple[int, ...] = (0, 1)


SAVED_FIT = {"fit": {"steps": 100}, "seeds": [0, 1]}


def test_a_field_added_since_the_run_reads_as_its_class_default():
    assert_config_matches(SAVED_FIT, _Study())
    # Today's config sets the new field away from its default: the saved run is not of it.
    with pytest.raises(AssertionError, match=r"fit\.schedule: saved 'constant', current 'cosine'"):
        assert_config_matches(SAVED_FIT, _Study(fit=_Fit(schedule="cosine")))
    with pytest.raises(AssertionError, match=r"fit\.steps: saved 100, current 200"):
        assert_config_matches(SAVED_FIT, _Study(fit=_Fit(steps=200)))
    with pytest.raises(AssertionError, match=r"lr: saved 0\.1, missing from the current"):
        assert_config_matches({**SAVED_FIT, "lr": 0.1}, _Study())
