"""The dual form of in-context learning: implicit weight updates vs explicit fine-tuning.

Dai et al. (arXiv 2212.10559, docs/theory.md §2) read linear attention as a linear model whose
weights are updated by the context: F_ICL(q) = (W_ZSL + ΔW_ICL) q, against fine-tuning's
F_FT(q) = (W_ZSL + ΔW_FT) q. On regression prompts both sides are explicit:

- ICL. An LSA stack excludes the query from keys and values, so the context tokens never
  depend on the query and every layer maps the query token by a context-dependent linear
  map, e_q ← (I + Σ_h W_PV,h C W_KQ,h) e_q with C = Σ_i e_i e_iᵀ. The query token starts
  as (x_q, −W0 x_q), linear in x_q, so ŷ = W_ICL x_q exactly, for every depth and every
  set of weights (trained or constructed); `linearity_gap` checks it. The implicit weight
  is the query sensitivity W_ICL = dŷ/dx_q, and with no context the LSA predicts the
  zero-shot ŷ = W0 x_q, so ΔW_ICL = W_ICL − W0.
- FT. k explicit GD steps on the context loss L(W) = (1/2N) Σ_i ||W x_i − y_i||² from W0
  (1/N inside η, docs/theory.md §0), or Dai's baseline: one epoch of SGD, one example at a time in
  context order, each step −(η/N)(W x_i − y_i) x_iᵀ (so one epoch with W frozen would be
  one full-batch GD step).

For the GD construction (Proposition 1 of von Oswald et al., arXiv 2212.07677) ΔW_ICL is
exactly one GD step: ΔW_ICL = ΔW_FT(k = 1, η).

Toy versions of Dai's metrics (the LM quantities have no regression analogue, so these are
our definitions):
- Rec2FTP: a learner "gets a prompt right" when its squared error on the query is below
  (1 − margin) times the zero-shot error (margin = 0: any improvement over ZSL).
  Rec2FTP = #(FT right ∧ ICL right) / #(FT right).
- SimAOU: h is the query token after the model (the attention output plus the residual),
  stacked over P probe queries; for a linear model W it is (x_p, −W x_p), the token
  Proposition 1 writes, and for ZSL it is the input token (x_p, −W0 x_p).
  SimAOU = cos(vec(h_ICL − h_ZSL), vec(h_FT − h_ZSL)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from icl_toy.analysis.metrics import query_sensitivity
from icl_toy.core.constructions import gd_weights
from icl_toy.core.learners import gd_fit
from icl_toy.core.linalg import matmul
from icl_toy.core.models import LSATransformer, ModelConfig, make_model
from icl_toy.core.tasks import Prompt, TaskConfig, prompt_tokens, sample_batch


def _zero_w0(d: int, d_y: int, dtype) -> jax.Array:
    return jnp.zeros((d_y, d), dtype)


def implicit_weight(
    predict: Callable[[jax.Array], jax.Array], tokens_TxE: jax.Array, d: int, w0=None
) -> jax.Array:
    """W_ICL = dŷ/dx_q of one prompt, (Y, D), with the query's y-slot kept at −W0 x_q.

    `query_sensitivity` moves only the x-part of the query; when W0 ≠ 0 the y-slot −W0 x_q
    also depends on x_q, and the total derivative is the implicit linear model.
    """
    if w0 is None:
        return query_sensitivity(predict, tokens_TxE, d)

    def predict_with_query_slot(tokens):
        return predict(tokens.at[-1, d:].set(-matmul(w0, tokens[-1, :d])))

    return query_sensitivity(predict_with_query_slot, tokens_TxE, d)


def implicit_weight_update(
    predict: Callable[[jax.Array], jax.Array], tokens_TxE: jax.Array, d: int, w0=None
) -> jax.Array:
    """ΔW_ICL = dŷ/dx_q − W0 of one prompt, (Y, D) (Dai et al.'s dual form, docs/theory.md §2).

    W0 (default 0) is the zero-shot model: an LSA with no context predicts ŷ = W0 x_q.
    """
    w_icl = implicit_weight(predict, tokens_TxE, d, w0)
    return w_icl if w0 is None else w_icl - w0


def linearity_gap(
    predict: Callable[[jax.Array], jax.Array],
    tokens_TxE: jax.Array,
    d: int,
    probes_PxD: jax.Array,
    w0=None,
) -> jax.Array:
    """max_p |ŷ(x_p) − W_ICL x_p| over probe queries: 0 (round-off) iff ŷ is linear in x_q.

    Exact zero for any LSA stack (see the module docstring); softmax attention is not.
    """
    w_icl_YxD = implicit_weight(predict, tokens_TxE, d, w0)
    w0 = _zero_w0(d, w_icl_YxD.shape[0], tokens_TxE.dtype) if w0 is None else w0

    def one(x_p_D):
        tokens = tokens_TxE.at[-1, :d].set(x_p_D).at[-1, d:].set(-matmul(w0, x_p_D))
        return predict(tokens) - matmul(w_icl_YxD, x_p_D)

    return jnp.max(jnp.abs(jax.vmap(one)(probes_PxD)))


def finetune_update(
    x_NxD: jax.Array, y_NxY: jax.Array, eta: float, num_steps: int, w0=None
) -> jax.Array:
    """ΔW_FT = W_k − W0 after k full-batch GD steps of size η on the context, (Y, D)."""
    w0 = _zero_w0(x_NxD.shape[1], y_NxY.shape[1], x_NxD.dtype) if w0 is None else w0
    return gd_fit(x_NxD, y_NxY, jnp.full(num_steps, eta), w0) - w0


def sgd_finetune_update(x_NxD: jax.Array, y_NxY: jax.Array, eta: float, w0=None) -> jax.Array:
    """ΔW of one SGD epoch in context order (Dai et al.'s fine-tuning baseline), (Y, D).

    W ← W − (η/N)(W x_i − y_i) x_iᵀ for i = 1..N.
    """
    n = x_NxD.shape[0]
    w0 = _zero_w0(x_NxD.shape[1], y_NxY.shape[1], x_NxD.dtype) if w0 is None else w0

    def step(w_YxD, example):
        x_D, y_Y = example
        residual_Y = matmul(w_YxD, x_D) - y_Y
        return w_YxD - (eta / n) * residual_Y[:, None] * x_D[None, :], None

    w_YxD, _ = jax.lax.scan(step, w0, (x_NxD, y_NxY))
    return w_YxD - w0


def update_cosine(a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """cos(vec ΔW_a, vec ΔW_b) of one prompt (no ε: the 1e-12 checks need the exact value)."""
    a, b = a_YxD.reshape(-1), b_YxD.reshape(-1)
    return jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def norm_ratio(a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """||ΔW_a||_F / ||ΔW_b||_F of one prompt."""
    return jnp.linalg.norm(a_YxD.reshape(-1)) / jnp.linalg.norm(b_YxD.reshape(-1))


def relative_error(a_YxD: jax.Array, b_YxD: jax.Array) -> jax.Array:
    """||ΔW_a − ΔW_b||_F / ||ΔW_b||_F of one prompt."""
    return jnp.linalg.norm((a_YxD - b_YxD).reshape(-1)) / jnp.linalg.norm(b_YxD.reshape(-1))


def gets_right(err_B: jax.Array, err_zsl_B: jax.Array, margin: float = 0.0) -> jax.Array:
    """Toy "correct" for regression: query error below (1 − margin) × zero-shot error, (B,)."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    return err_B < (1.0 - margin) * err_zsl_B


def rec2ftp(
    err_icl_B: jax.Array, err_ft_B: jax.Array, err_zsl_B: jax.Array, margin: float = 0.0
) -> jax.Array:
    """Toy Rec2FTP = #(FT right ∧ ICL right) / #(FT right) over B prompts (Dai et al.).

    Errors are squared errors on each prompt's query; "right" is `gets_right`. NaN when FT
    gets no prompt right.
    """
    ft_right = gets_right(err_ft_B, err_zsl_B, margin)
    both = ft_right & gets_right(err_icl_B, err_zsl_B, margin)
    return jnp.sum(both) / jnp.sum(ft_right)


def linear_query_outputs(w_YxD: jax.Array, probes_PxD: jax.Array) -> jax.Array:
    """Query tokens (x_p, −W x_p) of a linear model W at P probe queries, (P, E)."""
    return jnp.concatenate([probes_PxD, -matmul(probes_PxD, w_YxD.T)], axis=-1)


def model_query_outputs(
    query_token: Callable[[jax.Array], jax.Array],
    tokens_TxE: jax.Array,
    d: int,
    probes_PxD: jax.Array,
    w0=None,
) -> jax.Array:
    """Query tokens after the model, (P, E), for one context and P probe queries x_p.

    `query_token` maps tokens (T, E) to the last token's output (E,); each probe enters
    as (x_p, −W0 x_p).
    """
    w0 = _zero_w0(d, tokens_TxE.shape[1] - d, tokens_TxE.dtype) if w0 is None else w0

    def one(x_p_D):
        return query_token(tokens_TxE.at[-1, :d].set(x_p_D).at[-1, d:].set(-matmul(w0, x_p_D)))

    return jax.vmap(one)(probes_PxD)


def simaou(h_icl_PxE: jax.Array, h_ft_PxE: jax.Array, h_zsl_PxE: jax.Array) -> jax.Array:
    """Toy SimAOU of one prompt: cos(vec(h_ICL − h_ZSL), vec(h_FT − h_ZSL)) (Dai et al.)."""
    return update_cosine(h_icl_PxE - h_zsl_PxE, h_ft_PxE - h_zsl_PxE)


def residual_update(
    predict: Callable[[jax.Array], jax.Array],
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`delta_w(x_NxD, r_NxY) -> (Y, D)`: ΔW_ICL of the prompt with context (x_i, r_i), x_q = 0.

    With residual labels r = y − W x this is the update `forward_only.stream_icl_fit` adds to
    the running linear model W.
    """

    def delta_w(x_NxD: jax.Array, r_NxY: jax.Array) -> jax.Array:
        d, d_y = x_NxD.shape[1], r_NxY.shape[1]
        prompt = Prompt(
            x=x_NxD,
            y=r_NxY,
            x_q=jnp.zeros(d, x_NxD.dtype),
            y_q=jnp.zeros(d_y, x_NxD.dtype),
            w=jnp.zeros((d_y, d), x_NxD.dtype),
        )
        return implicit_weight_update(predict, prompt_tokens(prompt), d)

    return delta_w


def _query_token(model, params) -> Callable[[jax.Array], jax.Array]:
    """tokens (T, E) -> the query token after the last layer of an `LSATransformer`, (E,)."""
    return lambda tokens: model.apply(params, tokens, method=LSATransformer.trajectory)[-1, -1]


def compare_with_finetuning(
    model,
    params,
    prompts: Prompt,
    probes_BxPxD: jax.Array,
    random_BxYxD: jax.Array,
    eta: float,
    steps: Sequence[int],
    margins: Sequence[float],
) -> dict[str, jax.Array]:
    """Dual-form metrics of one LSA model on B prompts against fine-tuning from W0 = 0.

    Per prompt (B,): `cosine_k{k}`, `norm_ratio_k{k}`, `relative_error_k{k}` of ΔW_ICL against
    k GD steps of size η (`finetune_update`), the same against one SGD epoch (`_sgd`), and
    `simaou` / `simaou_random` at the probes. Scalars: `linearity_gap` (max over prompts),
    `rec2ftp_m{m}` / `rec2ftp_random_m{m}` per margin m, and the mean squared query errors
    `query_mse_icl`, `query_mse_ft`. FT in Rec2FTP and SimAOU is one GD step (k = 1, so
    `steps` must hold 1); "random" is the Gaussian update `random_BxYxD` rescaled to ΔW_ICL's
    norm.
    """
    d = model.d
    tokens = jax.vmap(prompt_tokens)(prompts)
    predict = lambda t: model.apply(params, t)  # noqa: E731
    delta_icl = jax.vmap(implicit_weight_update, in_axes=(None, 0, None))(predict, tokens, d)
    gap = jax.vmap(linearity_gap, in_axes=(None, 0, None, 0))(predict, tokens, d, probes_BxPxD)
    out = {"linearity_gap": jnp.max(gap)}
    pairwise = jax.vmap(lambda a, b: (update_cosine(a, b), norm_ratio(a, b), relative_error(a, b)))
    fits = {}
    for k in steps:
        fits[k] = jax.vmap(finetune_update, in_axes=(0, 0, None, None))(
            prompts.x, prompts.y, eta, k
        )
        out[f"cosine_k{k}"], out[f"norm_ratio_k{k}"], out[f"relative_error_k{k}"] = pairwise(
            delta_icl, fits[k]
        )
    sgd = jax.vmap(sgd_finetune_update, in_axes=(0, 0, None))(prompts.x, prompts.y, eta)
    out["cosine_sgd"], out["norm_ratio_sgd"], out["relative_error_sgd"] = pairwise(delta_icl, sgd)

    # Squared query errors: zero-shot (ŷ = 0), ICL, FT (one step), and a random update of
    # ICL's norm, for Rec2FTP.
    ft = fits[1]
    y_q = prompts.y_q
    err_zsl = jnp.sum(y_q**2, axis=-1)
    err_icl = jnp.sum((jax.vmap(predict)(tokens) - y_q) ** 2, axis=-1)
    err_ft = jnp.sum((jnp.einsum("byd,bd->by", ft, prompts.x_q) - y_q) ** 2, axis=-1)
    rand_norms = jax.vmap(norm_ratio)(delta_icl, random_BxYxD)
    rand = random_BxYxD * rand_norms[:, None, None]
    err_rand = jnp.sum((jnp.einsum("byd,bd->by", rand, prompts.x_q) - y_q) ** 2, axis=-1)
    for m in margins:
        out[f"rec2ftp_m{m}"] = rec2ftp(err_icl, err_ft, err_zsl, m)
        out[f"rec2ftp_random_m{m}"] = rec2ftp(err_rand, err_ft, err_zsl, m)

    def simaou_one(tokens_TxE, probes_PxD, ft_YxD, rand_YxD):
        h_zsl = linear_query_outputs(jnp.zeros_like(ft_YxD), probes_PxD)
        h_ft = linear_query_outputs(ft_YxD, probes_PxD)
        h_icl = model_query_outputs(_query_token(model, params), tokens_TxE, d, probes_PxD)
        h_rand = linear_query_outputs(rand_YxD, probes_PxD)
        return simaou(h_icl, h_ft, h_zsl), simaou(h_rand, h_ft, h_zsl)

    out["simaou"], out["simaou_random"] = jax.vmap(simaou_one)(
        tokens, probes_BxPxD, ft, random_BxYxD
    )
    out["query_mse_icl"] = jnp.mean(err_icl)
    out["query_mse_ft"] = jnp.mean(err_ft)
    return out


def construction_float64(task: TaskConfig, eta: float, num_tasks: int, seed: int) -> dict:
    """max |ΔW_ICL − ΔW_FT(k=1)| and max |1 − cos| of the GD construction at η, in float64.

    Proposition 1 of von Oswald et al. makes the two equal; on `num_tasks` prompts drawn
    from `jax.random.key(seed)` the float64 differences are round-off.
    """
    with jax.enable_x64(True):
        prompts = sample_batch(jax.random.key(seed), task, num_tasks)
        model = make_model(task, ModelConfig())
        params = gd_weights(model, eta, task.n_context)

        @jax.jit
        def errors(prompts):
            tokens = jax.vmap(prompt_tokens)(prompts)
            icl = jax.vmap(implicit_weight_update, in_axes=(None, 0, None))(
                lambda t: model.apply(params, t), tokens, task.d
            )
            ft = jax.vmap(finetune_update, in_axes=(0, 0, None, None))(prompts.x, prompts.y, eta, 1)
            cos = jax.vmap(update_cosine)(icl, ft)
            return jnp.max(jnp.abs(icl - ft)), jnp.max(jnp.abs(1.0 - cos)), icl.dtype == jnp.float64

        max_abs, max_cos, is_f64 = errors(prompts)
        return {
            "dtype_is_float64": bool(is_f64),
            "num_tasks": num_tasks,
            "max_abs_delta_w_difference": float(max_abs),
            "max_abs_one_minus_cosine": float(max_cos),
        }
