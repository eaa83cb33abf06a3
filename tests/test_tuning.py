"""Fitting explicit learners' scalars, and the deep-model readouts built on them."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import metrics
from icl_toy.core import learners
from icl_toy.core.constructions import gd_weights, gdpp_weights
from icl_toy.core.learners import gd, gdpp, optimal_gd_eta
from icl_toy.core.losses import half_mse
from icl_toy.core.models import LSATransformer, attention_products, iterate_layer
from icl_toy.core.predictors import batch_half_mse
from icl_toy.core.tasks import (
    TaskConfig,
    anisotropic_task,
    prompt_tokens,
    sample_batch,
    von_oswald_preset,
)
from icl_toy.training import tuning


def test_fit_learner_recovers_the_closed_form_step():
    """Adam on the 1-step GD loss, its rate decayed along a cosine, lands on η* = 200/33
    (docs/theory.md §10b) to 0.5% in each seed; at a constant rate the first of these 2
    seeds ends 1.2% off, in the noise ball the rate leaves."""
    task = von_oswald_preset()
    fit = tuning.fit_learner(
        tuning.gd_learner,
        {"eta": tuning.initial_steps(1.0, 1)},
        task,
        key=jax.random.key(0),
        steps=600,
        batch_size=1024,
        learning_rate=0.05,
        num_seeds=2,
        schedule="cosine",
    )
    assert fit.theta["eta"].shape == (2, 1)
    assert fit.loss.shape == (2, 600)
    np.testing.assert_allclose(fit.theta["eta"], optimal_gd_eta(task), rtol=0.005)


def test_fit_config_schedules_and_bad_input():
    cosine = tuning.FitConfig(steps=100, schedule="cosine", final_lr_fraction=0.1)
    rate = cosine.rate()
    assert rate.shape == (100,)
    np.testing.assert_allclose(rate[0], 0.05, rtol=1e-6)
    np.testing.assert_allclose(rate[99], 0.005 + 0.045 * (1 + np.cos(np.pi * 0.99)) / 2, rtol=1e-5)
    np.testing.assert_array_equal(tuning.FitConfig(steps=10).rate(), np.full(10, 0.05, "f4"))
    both = tuning.FitConfig(also_schedules=("cosine",))
    assert both.selection_schedules() == ("constant", "cosine")
    assert tuning.FitConfig().selection_schedules() == ("constant",)
    with pytest.raises(ValueError, match="schedule must be 'constant' or 'cosine'"):
        tuning.FitConfig(schedule="warmup_cosine")
    with pytest.raises(ValueError, match=r"final_lr_fraction must be in \[0, 1\]"):
        tuning.FitConfig(final_lr_fraction=1.5)
    for bad in (("constant",), ("cosine", "cosine"), ("linear",)):
        with pytest.raises(ValueError, match="also_schedules must hold distinct schedules"):
            tuning.FitConfig(also_schedules=bad)


def test_selection_over_schedules_keeps_the_best_of_both():
    """Held-out selection that fits every start under the constant and the cosine rate
    keeps the better of the two: at K = 1 (the same starts, and each start the same data,
    under every config) its loss and θ are those of the better schedule alone, and its
    label names that schedule. Here GD++ is won by the cosine (1e-4 below the constant)."""
    task = TaskConfig(d=3, n_context=6)
    held_out = sample_batch(jax.random.key(21), task, 2048)
    key = jax.random.key(22)
    base = tuning.FitConfig(steps=150, batch_size=128, learning_rate=0.05)
    configs = {
        "constant": base,
        "cosine": dataclasses.replace(base, schedule="cosine"),
        "both": dataclasses.replace(base, also_schedules=("cosine",)),
    }
    rung = {
        name: tuning.fit_gd_and_gdpp_ladder(task, 1, "per_layer", key, fit, held_out)[0]
        for name, fit in configs.items()
    }
    winners = []
    for learner in ("gd", "gdpp"):
        alone = {c: rung[c][learner] for c in ("constant", "cosine")}
        best = min(alone, key=lambda c: alone[c]["held_out_loss"])
        both = rung["both"][learner]
        np.testing.assert_allclose(both["held_out_loss"], alone[best]["held_out_loss"], rtol=1e-6)
        np.testing.assert_allclose(both["eta"], alone[best]["eta"], rtol=1e-6)
        if alone[best]["chosen"].startswith("fit"):
            assert both["chosen"] == f"{best} {alone[best]['chosen']}", (learner, both["chosen"])
            winners.append(best)
    assert "cosine" in winners, winners


def test_ladders_of_several_fit_configs_keep_the_best_rung_of_each(monkeypatch):
    """`fit_ladders` with several fit configs runs each config's ladders with the same key
    (so the same data) and keeps, rung by rung and learner by learner, the lowest held-out
    loss, labelled with its ladder. The ladders here are stand-ins whose losses make each
    config win some rung, so returning any one ladder fails."""
    # held-out loss of (fit config, kind, K, learner): config 1 wins K = 2 and recurrent GD++.
    losses = {
        0: {"per_layer": [(0.5, 0.4), (0.3, 0.2)], "recurrent": [(0.5, 0.4), (0.4, 0.3)]},
        1: {"per_layer": [(0.6, 0.4), (0.25, 0.1)], "recurrent": [(0.5, 0.35), (0.45, 0.3)]},
    }
    calls = []

    def ladders_of_one_fit(task, max_steps, kinds, key, fit, held_out, eta_scales, prepend):
        calls.append((fit, key, prepend))
        j = int(fit.steps == 20)
        return {
            kind: [
                {
                    name: {"eta": np.full(k + 1, 10.0 * j + k), "held_out_loss": loss,
                           "chosen": f"start {k}"}
                    for name, loss in zip(("gd", "gdpp"), losses[j][kind][k], strict=True)
                }
                for k in range(max_steps)
            ]
            for kind in kinds
        }  # fmt: skip

    monkeypatch.setattr(tuning, "_ladders_of_one_fit", ladders_of_one_fit)
    fits = (tuning.FitConfig(steps=10), tuning.FitConfig(steps=20))
    task, key = TaskConfig(d=3, n_context=6), jax.random.key(0)
    best = tuning.fit_ladders(task, 2, ("per_layer", "recurrent"), key, fits, None,
                              prepend_starts=True)  # fmt: skip
    assert [fit for fit, _, _ in calls] == list(fits) and calls[0][1] is calls[1][1] is key
    assert all(prepend for _, _, prepend in calls)
    for kind, ladder in best.items():
        for k, rung in enumerate(ladder):
            for i, name in enumerate(("gd", "gdpp")):
                j = min((0, 1), key=lambda j: losses[j][kind][k][i])  # ties: the first
                assert rung[name]["held_out_loss"] == losses[j][kind][k][i]
                np.testing.assert_array_equal(rung[name]["eta"], np.full(k + 1, 10.0 * j + k))
                assert rung[name]["chosen"] == f"ladder {j}: start {k}"
    assert best["per_layer"][1]["gd"]["chosen"].startswith("ladder 1")
    # One config is the plain ladder, labels untouched.
    calls.clear()
    one = tuning.fit_ladders(task, 2, ("recurrent",), key, fits[0], None)
    assert one["recurrent"][0]["gd"]["chosen"] == "start 0" and len(calls) == 1
    with pytest.raises(ValueError, match="at least one FitConfig"):
        tuning.fit_ladders(task, 2, ("recurrent",), key, (), None)


def test_constant_step_and_normalized_gamma_learners():
    task = von_oswald_preset()
    prompt = jax.tree.map(lambda a: a[0], sample_batch(jax.random.key(1), task, 1))
    theta = {"eta": jnp.asarray(2.0), "gamma": jnp.asarray(0.1)}
    got = tuning.constant_step_learner(tuning.gdpp_learner, 3)(theta, prompt)
    want = gdpp(jnp.full(3, 2.0), jnp.full(3, 0.1))(prompt)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    normalized = tuning.normalized_gamma(tuning.constant_step_learner(tuning.gdpp_learner, 3))
    theta_hat = theta | {"gamma": 0.1 * task.n_context}  # γ̂ = Nγ
    np.testing.assert_allclose(normalized(theta_hat, prompt), want, rtol=1e-6)
    with pytest.raises(ValueError, match="num_steps"):
        tuning.constant_step_learner(tuning.gd_learner, 0)


def test_constructed_gdpp_model_gives_the_fitted_explicit_loss(x64):
    """The must-show of issue 5: GD++ weights with fitted (η_k, γ_k) reproduce the explicit
    learner's loss to float64 round-off."""
    task = von_oswald_preset()
    k = 3
    fit = tuning.fit_learner(
        tuning.gdpp_learner,
        {"eta": tuning.initial_steps(optimal_gd_eta(task), k), "gamma": jnp.zeros(k)},
        task,
        key=jax.random.key(2),
        steps=40,
        batch_size=256,
        learning_rate=0.02,
    )
    theta = {name: value[0] for name, value in fit.theta.items()}
    assert theta["eta"].dtype == np.float64
    assert np.any(theta["gamma"] != 0)  # the fit moved γ, so the check is not GD
    prompts = sample_batch(jax.random.key(3), task, 512)
    explicit = tuning.learner_half_mse(tuning.gdpp_learner, theta, prompts)
    model = LSATransformer(d=task.d, num_layers=k)
    params = gdpp_weights(model, theta["eta"], theta["gamma"], task.n_context)
    tokens = jax.vmap(prompt_tokens)(prompts)
    pred = jax.vmap(model.apply, in_axes=(None, 0))(params, tokens)
    constructed = half_mse(pred, prompts.y_q)
    assert abs(float(constructed) - float(explicit)) <= 1e-12 * float(explicit)


def test_fit_learner_reports_divergence():
    def scaled_gd(theta, prompt):
        # exp overflows to inf once Adam takes a step of ~1e6 on the log scale.
        return jnp.exp(theta["log_eta"]) * gd(jnp.ones(1))(prompt)

    task = von_oswald_preset()
    with pytest.raises(FloatingPointError, match="diverged"):
        tuning.fit_learner(
            scaled_gd,
            {"log_eta": jnp.asarray(0.0)},
            task,
            key=jax.random.key(0),
            steps=30,  # the update is skipped 10 times in a row (apply_if_finite), then taken
            batch_size=16,
            learning_rate=1e6,
        )
    with pytest.raises(ValueError, match="steps"):
        tuning.fit_learner(tuning.gd_learner, {"eta": 1.0}, task, key=jax.random.key(0), steps=0)
    # With halvings the fit is rerun at half the learning rate until θ stays finite: a first
    # Adam step of ~100 on the log scale overflows float32, one of ~25 does not.
    fit = tuning.fit_learner(
        scaled_gd,
        {"log_eta": jnp.asarray(0.0)},
        task,
        key=jax.random.key(0),
        steps=30,
        batch_size=16,
        learning_rate=100.0,
        halvings=4,
    )
    assert fit.learning_rate < 100.0
    assert np.isfinite(fit.theta["log_eta"]).all()


def test_layer_predictions_follow_gd_step_by_step(x64):
    """Readout after layer l of the K-step GD construction = W_l x_q of explicit GD."""
    task = von_oswald_preset()
    etas = np.array([3.0, 5.0, 2.0, 7.0])
    model = LSATransformer(d=task.d, num_layers=len(etas))
    params = gd_weights(model, etas, task.n_context)
    p = jax.tree.map(lambda a: a[0], sample_batch(jax.random.key(4), task, 1))
    got = model.apply(params, prompt_tokens(p), method="layer_predictions")
    want = [gd(etas[:l])(p) for l in range(1, len(etas) + 1)]
    np.testing.assert_allclose(got[0], 0.0, atol=1e-15)
    np.testing.assert_allclose(got[1:], np.stack(want), rtol=0, atol=1e-12)


def test_damped_iteration_of_a_gdpp_layer_is_gdpp_with_scaled_scalars(x64):
    """Iterating one GD++ layer L times with update × λ is GD++ with (λη, λγ) (§1, item 6)."""
    task = von_oswald_preset()
    eta, gamma, lam, steps = 6.0, 0.2, 0.75, 7
    model = LSATransformer(d=task.d, shared_weights=True)
    params = gdpp_weights(model, eta, gamma, task.n_context)
    w_kq, w_pv = attention_products(params["params"])
    p = jax.tree.map(lambda a: a[0], sample_batch(jax.random.key(5), task, 1))
    traj = iterate_layer(w_kq, w_pv, prompt_tokens(p), steps, damping=lam)
    assert traj.shape == (steps + 1, task.n_context + 1, task.token_dim)
    want = gdpp(jnp.full(steps, lam * eta), jnp.full(steps, lam * gamma))(p)
    np.testing.assert_allclose(-traj[-1, -1, -1:], want, rtol=0, atol=1e-12)


def test_implied_gamma_reads_the_gdpp_construction_in_any_gauge():
    model = LSATransformer(d=4)
    params = gdpp_weights(model, 3.0, 0.37, 10)
    w_kq, w_pv = (m[0] for m in attention_products(params["params"]))
    np.testing.assert_allclose(metrics.implied_gamma(w_kq, w_pv, 4), 0.37, rtol=1e-6)
    np.testing.assert_allclose(metrics.implied_gamma(w_kq / 5.0, w_pv * 5.0, 4), 0.37, rtol=1e-6)


def test_fit_gd_and_gdpp_on_anisotropic_inputs():
    """No closed-form η* for anisotropic Σ: both fits start from the line-searched one-step η
    and improve on 2 steps of it, on held-out tasks."""
    task = anisotropic_task()
    with pytest.raises(ValueError, match="isotropic"):
        optimal_gd_eta(task)
    key = jax.random.key(6)
    fit = tuning.FitConfig(steps=150, batch_size=256, learning_rate=0.02)
    fitted = tuning.fit_gd_and_gdpp(task, 2, "per_layer", key, fit)
    eta_start = learners.line_search_eta(task, key=jax.random.fold_in(key, 2))[0]
    prompts = sample_batch(jax.random.key(7), task, 4096)
    start = float(batch_half_mse(gd(np.full(2, eta_start)), prompts))
    for name in ("gd", "gdpp"):
        assert fitted[name]["eta"].shape == (2,) and np.isfinite(fitted[name]["eta"]).all()
    assert np.any(fitted["gdpp"]["gamma"] != 0)
    fitted_gd = float(batch_half_mse(gd(fitted["gd"]["eta"]), prompts))
    fitted_gdpp = batch_half_mse(gdpp(fitted["gdpp"]["eta"], fitted["gdpp"]["gamma"]), prompts)
    assert fitted_gd < start and float(fitted_gdpp) < start, (start, fitted_gd, fitted_gdpp)


@pytest.mark.long
def test_tuned_gd_and_gdpp_never_get_worse_with_more_steps_up_to_ten():
    """Baselines at their optimum: per-step GD and GD++ for K = 1..10, each warm-started
    from K − 1 (the new step last, and first) and from several η*, chosen on held-out
    tasks, are non-increasing in K; the held-out losses are those of the returned scalars
    (recomputed here), GD++ is no worse than GD at each K, and K = 10 beats one step
    clearly."""
    task = TaskConfig(d=3, n_context=6)
    held_out = sample_batch(jax.random.key(11), task, 2048)
    fit = tuning.FitConfig(steps=100, batch_size=128, learning_rate=0.05)
    ladder = tuning.fit_gd_and_gdpp_ladder(
        task, 10, "per_layer", jax.random.key(12), fit, held_out, (1.0,), prepend_starts=True
    )
    assert len(ladder) == 10
    for name, learner in (
        ("gd", lambda t: gd(t["eta"])),
        ("gdpp", lambda t: gdpp(t["eta"], t["gamma"])),
    ):
        losses = [rung[name]["held_out_loss"] for rung in ladder]
        assert all(b <= a for a, b in itertools.pairwise(losses)), (name, losses)
        for k, rung in enumerate(ladder, start=1):
            assert rung[name]["eta"].shape == (k,)
            if k not in (1, 2, 5, 10):  # each K compiles its own learner: a few suffice
                continue
            recomputed = float(batch_half_mse(learner(rung[name]), held_out))
            # The same float32 mean over 2048 tasks, reduced in another order: round-off.
            np.testing.assert_allclose(recomputed, rung[name]["held_out_loss"], rtol=1e-4)
        assert losses[-1] < 0.8 * losses[0], (name, losses)
    for rung in ladder:
        assert rung["gdpp"]["held_out_loss"] <= rung["gd"]["held_out_loss"] * (1 + 1e-6)


def test_prepended_zero_step_is_the_shorter_learner(x64):
    """A per-step K − 1 solution with a zero step put first (η_1 = γ_1 = 0) is exactly the
    K − 1 learner, so as a start of the K fit (`prepend_starts`) it cannot raise the loss;
    the K <= 10 ladder test runs the ladder with these starts."""
    task = TaskConfig(d=3, n_context=6)
    prompts = sample_batch(jax.random.key(3), task, 64)
    eta, gamma = jnp.array([0.7, 1.3]), jnp.array([0.05, 0.02])
    shorter = jax.vmap(gdpp(eta, gamma))(prompts)
    prepended = jax.vmap(gdpp(jnp.insert(eta, 0, 0.0), jnp.insert(gamma, 0, 0.0)))(prompts)
    np.testing.assert_allclose(prepended, shorter, rtol=0, atol=1e-12)
