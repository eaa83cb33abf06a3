"""Plot helpers: interval records drawn as bands and error bars."""

import matplotlib.pyplot as plt
import numpy as np

from icl_toy.runs.plotting import interval_band, interval_errors


def test_interval_errors_are_distances_from_the_mean():
    records = [
        {"mean": 1.0, "low": 0.5, "high": 2.0, "method": "t", "n": 3},
        {"mean": 0.0, "low": None, "high": None, "method": "t", "n": 3},  # saved NaN
    ]
    errors = interval_errors(records)
    np.testing.assert_array_equal(errors[:, 0], [0.5, 1.0])
    assert errors.shape == (2, 2) and np.isnan(errors[:, 1]).all()


def test_interval_band_draws_the_mean_and_fills_low_to_high():
    curve = {"mean": [1.0, 2.0, None], "low": [0.5, 1.5, None], "high": [1.5, 2.5, None]}
    fig, ax = plt.subplots()
    interval_band(ax, [1, 2, 3], curve, "a curve")
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata()[:2], [1.0, 2.0])
    (band,) = ax.collections
    vertices = np.concatenate([p.vertices for p in band.get_paths()])
    assert vertices[:, 1].min() == 0.5 and vertices[:, 1].max() == 2.5
    plt.close(fig)
