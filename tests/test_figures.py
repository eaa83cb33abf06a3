"""Every committed study's figures, redrawn from its saved results in the paper style: a main
figure PAPER_WIDTH wide and a supplement, with no text that overlaps other text or leaves the
canvas."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from icl_toy.runs import hypotheses
from icl_toy.runs.plotting import PAPER_WIDTH, drawn_figures, paper_figure, text_collisions
from icl_toy.runs.results import load_results
from icl_toy.runs.runner import EXPERIMENTS, get_experiment

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_committed_figures_are_paper_sized_and_no_text_collides(name):
    module = get_experiment(name)
    with drawn_figures(module.figures, load_results(FIGURES, name)) as figures:
        assert set(figures) == {name, f"{name}_supplement"}
        assert figures[name].get_figwidth() == pytest.approx(PAPER_WIDTH)
        for figure_name, fig in figures.items():
            assert not text_collisions(fig), (figure_name, text_collisions(fig))


def test_the_collision_check_finds_overlapping_and_clipped_text():
    with plt.style.context({}):
        fig, ((ax,),) = paper_figure(1)
        ax.plot([0, 1], [0, 1])
        assert text_collisions(fig) == []
        ax.text(0.5, 0.5, "first label")
        ax.text(0.5, 0.5, "second label")
        ax.set_title("a title that runs past the right edge " * 6, loc="left")
        problems = text_collisions(fig)
        plt.close(fig)
    assert any(" text overlaps " in p for p in problems), problems
    assert any("leaves the canvas" in p for p in problems), problems


def test_committed_hypotheses_forest_plot_is_paper_sized_and_no_text_collides():
    entries = json.loads((FIGURES / "hypotheses.json").read_text())["hypotheses"]
    with drawn_figures(hypotheses.figures, entries) as figures:
        (fig,) = figures.values()
        assert fig.get_figwidth() == pytest.approx(PAPER_WIDTH)
        assert len(fig.axes) == 2 * sum(len(e["criteria"]) for e in entries.values())
        assert not text_collisions(fig), text_collisions(fig)
