"""Training in one compiled region: `lax.scan` over steps, `vmap` over seeds.

A run of S seeds × `steps` steps is a single `jax.jit` call. Steps are scanned in chunks of
`eval_every`; after each chunk an evaluation function runs inside the scan, so no metric
crosses to the host until the run ends. The batch of step t for seed s is a pure function of
(seed, s, t) through `fold_in`, which is what makes runs reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_toy.core.losses import half_mse
from icl_toy.core.models import ModelConfig, check_params
from icl_toy.core.tasks import Prompt, TaskConfig, batch_at_step, prompt_tokens
from icl_toy.training import convergence, nulls
from icl_toy.training.checkpoints import Checkpoints


def _require_positive_int(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be an integer >= 1, got {value!r}")


# Learning-rate schedules of `TrainConfig.schedule`: the peak rate times a shape in [0, 1].
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Online training: a fresh batch of tasks every step, Adam with global-norm clipping.

    The learning rate at step t is `learning_rate · shape(t)`: `shape` rises linearly from 0
    to 1 over the first `warmup_steps` steps, then stays at 1 ("constant"), or decays to
    `final_lr_fraction` along a half cosine ("warmup_cosine") or a line ("warmup_linear"),
    reached at the last step, or `hold_steps` steps before it and held there. The default,
    constant with no warmup, is the papers' recipe.

    A hold lets the convergence record (`icl_toy.training.convergence`), which reads the last
    10% of steps, see learning at a fixed rate: while the rate decays, the loss also falls
    because Adam's noise excess (about proportional to the rate) is shed, whether or not the
    model has reached its solution.
    """

    steps: int = 5000
    batch_size: int = 2048  # tasks per step
    learning_rate: float = 1e-3  # the peak learning rate
    schedule: str = "constant"  # one of SCHEDULES
    warmup_steps: int = 0
    final_lr_fraction: float = 0.0  # read by the decaying schedules only
    hold_steps: int = 0  # steps at the final rate after the decay; decaying schedules only
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    clip_norm: float = 10.0  # global-norm clip before Adam (the paper's text)
    eval_every: int = 100  # steps between in-scan evaluations; must divide `steps`
    num_seeds: int = 5  # S, a vmap axis
    seed: int = 0  # seeds s = 0..S-1 use fold_in(key(seed), s)

    def __post_init__(self):
        _require_positive_int(self, "steps", "batch_size", "eval_every", "num_seeds")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not isinstance(self.warmup_steps, int | np.integer) or not (
            0 <= self.warmup_steps < self.steps
        ):
            raise ValueError(
                f"TrainConfig.warmup_steps must be an integer in [0, steps = {self.steps}), "
                f"got {self.warmup_steps!r}"
            )
        if not isinstance(self.hold_steps, int | np.integer) or not (
            0 <= self.hold_steps < self.steps - self.warmup_steps
        ):
            raise ValueError(
                "TrainConfig.hold_steps must be an integer in [0, steps − warmup_steps = "
                f"{self.steps - self.warmup_steps}), got {self.hold_steps!r}"
            )
        if self.hold_steps and self.schedule != "constant" and not self.final_lr_fraction > 0:
            raise ValueError(
                "TrainConfig.hold_steps needs final_lr_fraction > 0: held at rate 0 the model "
                "stops moving, and the convergence record would read that as converged"
            )
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(
                f"TrainConfig.final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}"
            )
        if not self.clip_norm > 0:
            raise ValueError(f"TrainConfig.clip_norm must be > 0, got {self.clip_norm}")
        for name in ("adam_b1", "adam_b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.steps % self.eval_every:
            raise ValueError(
                f"TrainConfig.eval_every ({self.eval_every}) must divide steps ({self.steps})"
            )


def scaled_hold(cfg: TrainConfig, steps: int) -> int:
    """`cfg.hold_steps` as the same fraction of `steps` (a config lengthened or shortened)."""
    return cfg.hold_steps * steps // cfg.steps


def schedule_shape(cfg: TrainConfig) -> optax.Schedule:
    """shape(t) in [0, 1]: the learning rate at step t over the peak (see `TrainConfig`)."""
    decay_steps = cfg.steps - cfg.warmup_steps - cfg.hold_steps  # optax holds the end value
    if cfg.schedule == "warmup_cosine":
        decay = optax.cosine_decay_schedule(1.0, decay_steps, alpha=cfg.final_lr_fraction)
    elif cfg.schedule == "warmup_linear":
        decay = optax.linear_schedule(1.0, cfg.final_lr_fraction, decay_steps)
    else:
        decay = optax.constant_schedule(1.0)
    if not cfg.warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, 1.0, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam whose (peak) learning rate lives in the optimizer
    state (`inject_hyperparams`), so runs with different learning rates can share one vmap;
    then the schedule's shape scales the step (`scale_by_schedule`, on its own step count).

    The constant schedule without warmup adds no stage, so its state and arithmetic are
    those of plain clipped Adam.
    """
    adam = optax.inject_hyperparams(optax.adam)(cfg.learning_rate, b1=cfg.adam_b1, b2=cfg.adam_b2)
    stages = [optax.clip_by_global_norm(cfg.clip_norm), adam]
    if cfg.schedule != "constant" or cfg.warmup_steps:
        stages.append(optax.scale_by_schedule(schedule_shape(cfg)))
    return optax.chain(*stages)


def set_learning_rate(opt_state, learning_rate: jax.Array):
    """Write the learning rate into a `make_optimizer` state (chain of clip, then Adam)."""
    opt_state[1].hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    return opt_state


def batch_predict(model: nn.Module, params, prompts: Prompt) -> jax.Array:
    """ŷ for a batch of prompts, (B, Y); params are checked against `model.init` first."""
    tokens_BxTxE = jax.vmap(prompt_tokens)(prompts)
    check_params(model, params, tokens_BxTxE[0])
    return jax.vmap(model.apply, in_axes=(None, 0))(params, tokens_BxTxE)


def batch_loss(model: nn.Module, params, prompts: Prompt) -> jax.Array:
    """Half-MSE of the model on a batch of prompts."""
    return half_mse(batch_predict(model, params, prompts), prompts.y_q)


class TrainState(NamedTuple):
    """Everything a run carries between chunks; every leaf has a leading seed axis S."""

    params: dict
    opt_state: optax.OptState
    data_key: jax.Array  # batch t of a seed is batch_at_step(data_key, ..., t)


class TrainResult(NamedTuple):
    params: dict  # final params, every leaf with a leading seed axis S
    train_loss: np.ndarray  # (S, steps) half-MSE of each training batch
    eval_steps: np.ndarray  # (E,) steps at which eval ran: 0, eval_every, ..., steps
    eval_metrics: dict[str, np.ndarray]  # name -> (S, E)


def seed_keys(cfg: TrainConfig, seeds: Sequence[int] | None = None) -> jax.Array:
    """One key per run, (G·S,): seed s of base seed g is fold_in(key(g), s)."""
    bases = [cfg.seed] if seeds is None else list(seeds)
    return jnp.concatenate(
        [
            jax.vmap(lambda s, b=b: jax.random.fold_in(jax.random.key(b), s))(
                jnp.arange(cfg.num_seeds)
            )
            for b in bases
        ]
    )


class Trainer(NamedTuple):
    """The compiled pieces of a run. Chunk c covers steps [c·eval_every, (c+1)·eval_every).

    - `init(keys, learning_rates) -> (state, evals)`: initial state of R runs (one key and one
      learning rate each) and the step-0 eval.
    - `advance(state, first_chunk, num_chunks) -> (state, (losses, evals))`: `num_chunks`
      chunks in one `lax.scan` (num_chunks is static; the state buffers are donated);
      losses (S, num_chunks, eval_every), evals name -> (S, num_chunks).
    """

    init: Callable
    advance: Callable


# `gradient(loss, params, prompts, key) -> (loss value, gradient estimate)`, where
# `loss(params, prompts)` is a scalar; `key` is for stochastic estimators.
GradientFn = Callable[[Callable, dict, Prompt, jax.Array], tuple[jax.Array, dict]]
# Folded into a step's key so a gradient estimator never reuses the batch's random stream.
GRADIENT_KEY_TAG = 0x6772


def backprop_gradient(loss: Callable, params: dict, prompts: Prompt, key: jax.Array):
    """The exact gradient by reverse mode (`jax.value_and_grad`); `key` is unused."""
    del key
    return jax.value_and_grad(loss)(params, prompts)


def gradient_key(data_key: jax.Array, step: jax.Array) -> jax.Array:
    """The key of a gradient estimator at `step`: a pure function of (run, step), so resume
    stays bitwise exact, and distinct from the keys that sample the step's batch."""
    return jax.random.fold_in(jax.random.fold_in(data_key, step), GRADIENT_KEY_TAG)


def make_trainer(
    model: nn.Module,
    task: TaskConfig,
    cfg: TrainConfig,
    eval_fn: Callable[[dict], dict[str, jax.Array]] | None = None,
    devices: Sequence[jax.Device] | None = None,
    gradient: GradientFn | None = None,
) -> Trainer:
    """Build the jitted `init` and `advance` of a run (see `Trainer`).

    With several `devices` (default: all that JAX sees) every batch is split over them
    along the task axis (data parallelism); parameters are replicated and XLA sums the
    gradients across devices. `gradient` (default `backprop_gradient`) computes the loss
    and the gradient handed to the optimizer, e.g. a forward-only estimator from
    `icl_toy.training.forward_only`; its key at step t is `gradient_key(data_key, t)`.
    """
    gradient = gradient or backprop_gradient
    devices = jax.devices() if devices is None else list(devices)
    if cfg.batch_size % len(devices):
        raise ValueError(
            f"TrainConfig.batch_size ({cfg.batch_size}) must be divisible by the number of "
            f"devices ({len(devices)}); choose a multiple of {len(devices)}"
        )
    batch_sharding = None
    if len(devices) > 1:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
        batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    optimizer = make_optimizer(cfg)
    eval_fn = eval_fn or (lambda params: {})
    dummy_tokens = jnp.zeros((task.n_context + 1, task.token_dim))

    def loss(params, prompts):
        return batch_loss(model, params, prompts)

    def init_one_run(key, learning_rate):
        init_key, data_key = jax.random.split(key)
        params = model.init(init_key, dummy_tokens)
        opt_state = set_learning_rate(optimizer.init(params), learning_rate)
        return TrainState(params, opt_state, data_key), eval_fn(params)

    def step(state: TrainState, t):
        prompts = batch_at_step(state.data_key, task, cfg.batch_size, t)
        if batch_sharding is not None:
            prompts = jax.lax.with_sharding_constraint(prompts, batch_sharding)
        value, grads = gradient(loss, state.params, prompts, gradient_key(state.data_key, t))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return state._replace(
            params=optax.apply_updates(state.params, updates), opt_state=opt_state
        ), value

    def chunk(state: TrainState, c):
        state, losses = jax.lax.scan(step, state, c * cfg.eval_every + jnp.arange(cfg.eval_every))
        return state, (losses, eval_fn(state.params))

    def advance_one_seed(state, first_chunk, num_chunks):
        return jax.lax.scan(chunk, state, first_chunk + jnp.arange(num_chunks))

    advance = jax.vmap(advance_one_seed, in_axes=(0, None, None))
    return Trainer(
        init=jax.jit(jax.vmap(init_one_run)),
        advance=jax.jit(advance, static_argnums=2, donate_argnums=0),
    )


# The name of a run that is no `RunOptions.stage` of another: in logs, as in convergence records.
TOP_STAGE = "train"
# `metrics_hook(stage, step, metrics)`, called by `train` between groups (see `RunOptions`).
MetricsHook = Callable[[str, int, dict[str, np.ndarray]], None]
# The key of the training loss in a `MetricsHook`'s metrics, beside the eval metrics.
TRAIN_LOSS = "train_loss"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is carried out, not what it computes: checkpoints, resume, progress, logs.

    `metrics_hook(stage, step, metrics)` is called between groups, never inside the
    compiled scan: after the step-0 eval of a run that starts from scratch, then after each
    group once per eval of that group, in step order. `stage` is `stage_name`, `metrics`
    maps every eval metric to its (R,) values, one per run, and `TRAIN_LOSS` to the (R,)
    mean batch loss of the `eval_every` steps up to `step` (absent at step 0).
    """

    checkpoint_dir: str | None = None  # orbax checkpoints of the train state go here
    checkpoint_every: int = 10  # chunks (of eval_every steps) between checkpoints
    resume: bool = False  # continue from the latest checkpoint in checkpoint_dir
    # Progress on stderr: a bar on a terminal, else one line per group.
    progress: bool = False
    metrics_hook: MetricsHook | None = None
    # The run's name in progress and metric logs: TOP_STAGE, or `stage` names joined by "/".
    stage_name: str = TOP_STAGE
    num_devices: int | None = None  # use the first n devices JAX sees; None: all of them
    # How runs use several devices: "batch" splits every batch over them (data parallel);
    # "runs" places whole runs (seeds, grid points) on different devices, with no
    # communication, and needs the number of runs to be a multiple of the device count.
    shard: Literal["batch", "runs"] = "batch"

    def __post_init__(self):
        _require_positive_int(self, "checkpoint_every")
        if self.shard not in ("batch", "runs"):
            raise ValueError(f"RunOptions.shard must be 'batch' or 'runs', got {self.shard!r}")
        if self.num_devices is not None:
            _require_positive_int(self, "num_devices")
            if self.num_devices > len(jax.devices()):
                raise ValueError(
                    f"RunOptions.num_devices is {self.num_devices} but JAX sees "
                    f"{len(jax.devices())} devices"
                )
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("RunOptions.resume needs a checkpoint_dir to resume from")

    def stage(self, name: str) -> RunOptions:
        """Options for one of several training runs of an experiment: checkpoints go to
        `checkpoint_dir/name`, so each run resumes from its own, and logs name it `name`
        (after the names of the stages it is inside)."""
        stage_name = name if self.stage_name == TOP_STAGE else f"{self.stage_name}/{name}"
        checkpoint_dir = None if self.checkpoint_dir is None else f"{self.checkpoint_dir}/{name}"
        return dataclasses.replace(self, checkpoint_dir=checkpoint_dir, stage_name=stage_name)


# A finite batch loss this many times its run's first-step loss has diverged all the same.
DIVERGENCE_RATIO = 1e6


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a NaN or Inf batch loss, or a finite one `DIVERGENCE_RATIO` times
    its start. The latest checkpoint, from before it, is kept.

    `step`: the step of the bad loss; `run`: (learning rate, base seed, seed index) of the
    run it happened in; `kept_step`: the step the kept checkpoint ends at (None: none).
    """

    def __init__(self, message: str, *, step: int, run: tuple, kept_step: int | None):
        super().__init__(message)
        self.step, self.run, self.kept_step = step, run, kept_step


def _check_diverged(
    losses_RxCxI: np.ndarray,
    first_losses_R: np.ndarray,
    first_step: int,
    kept_step: int | None,
    runs: Sequence[tuple],
) -> None:
    flat = losses_RxCxI.reshape(losses_RxCxI.shape[0], -1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flat) | (flat > DIVERGENCE_RATIO * np.abs(first_losses_R)[:, None])
    if not bad.any():
        return
    where = np.argwhere(bad)
    run, offset = where[np.argmin(where[:, 1])]
    lr, base, seed = runs[run]
    kept = (
        "no checkpoint was written"
        if kept_step is None
        else f"the checkpoint after step {kept_step} is kept"
    )
    raise NonFiniteLossError(
        f"training diverged: loss {flat[run, offset]:.4g} at step {first_step + offset} "
        f"(learning rate {lr:g}, base seed {base}, seed {seed}; first loss "
        f"{first_losses_R[run]:.4g}); {kept}",
        step=int(first_step + offset),
        run=(lr, base, seed),
        kept_step=kept_step,
    )


class _Progress:
    """Progress of a run, updated between groups, on stderr: a rich bar on a terminal that
    reads "compiling" until the first group ends, else one plain line per group."""

    def __init__(self, enabled: bool, stage: str, total: int, done: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.enabled, self.stage, self.total = enabled, stage, total
        self.compile_seconds = 0.0  # of the groups since the last update
        self.bar = Progress(
            TextColumn(f"training {stage}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            disable=not (enabled and sys.stderr.isatty()),
            transient=True,
        )
        self.task = self.bar.add_task("train", total=total, completed=done, status="compiling")

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.bar.__exit__(*exc_info)

    def update(self, step: int, steps: int, seconds: float, loss: float) -> None:
        """`steps` steps, up to `step`, took `seconds` of compute, compiling excluded."""
        status = f"{steps / max(seconds, 1e-9):.0f} steps/s  loss {loss:.4g}"
        self.bar.update(self.task, completed=step, status=status)
        if self.enabled and self.bar.disable:
            line = f"training {self.stage}: step {step}/{self.total}  {status}"
            if self.compile_seconds:
                line += f" (compiled in {self.compile_seconds:.1f} s)"
            print(line, file=sys.stderr, flush=True)
        self.compile_seconds = 0.0


def train(
    model: nn.Module,
    task: TaskConfig,
    cfg: TrainConfig,
    *,
    eval_fn: Callable[[dict], dict[str, jax.Array]] | None = None,
    options: RunOptions | None = None,
    learning_rates: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    gradient: GradientFn | None = None,
) -> TrainResult:
    """Train `model` on online prompts of `task`, S seeds at once.

    `learning_rates` (L values) and `seeds` (G base seeds) make a grid trained in the same
    compiled call: the leading axis of every result is then R = L·G·S, ordered
    (learning rate, base seed, seed); by default L = G = 1 with the config's values.

    `eval_fn(params) -> {name: scalar}` runs inside the scan at step 0 and every
    `eval_every` steps; it must be traceable (fixed eval prompts are closed over).
    `gradient` replaces backprop by another gradient estimator (see `make_trainer`).
    Without checkpoints, progress or a metrics hook the whole run is one compiled call.
    Otherwise it runs in groups of `options.checkpoint_every` chunks, one compiled call
    each, calling the metrics hook, saving a checkpoint and updating the progress between
    groups; group boundaries do not depend on where a run was resumed, so a resumed run is
    bitwise identical to an uninterrupted one. A NaN or Inf training loss raises
    `NonFiniteLossError` before the bad state is saved or logged.
    """
    options = options or RunOptions()
    devices = jax.devices()[: options.num_devices]
    by_runs = options.shard == "runs" and len(devices) > 1
    trainer = make_trainer(
        model, task, cfg, eval_fn, devices[:1] if by_runs else devices, gradient=gradient
    )
    num_chunks = cfg.steps // cfg.eval_every
    chunked = (
        options.checkpoint_dir is not None or options.progress or options.metrics_hook is not None
    )
    group = min(options.checkpoint_every, num_chunks) if chunked else num_chunks
    checkpoints = None if options.checkpoint_dir is None else Checkpoints(options.checkpoint_dir)

    lrs = [cfg.learning_rate] if learning_rates is None else list(learning_rates)
    if not all(np.isfinite(lr) and lr > 0 for lr in lrs):
        raise ValueError(f"learning rates must be finite and > 0, got {lrs}")
    keys = seed_keys(cfg, seeds)
    runs = len(lrs) * keys.shape[0]
    run_keys = jnp.tile(keys, len(lrs))
    run_lrs = jnp.repeat(jnp.asarray(lrs, jnp.float32), keys.shape[0])
    # Under a null model (`nulls.replacing`) the recorded run comes back with null params.
    null = nulls.replaced(
        lambda: jax.tree.map(np.asarray, trainer.init(run_keys, run_lrs)[0].params)
    )
    if null is not None:
        return null
    if checkpoints is not None and not options.resume and checkpoints.latest() is not None:
        raise ValueError(
            f"{options.checkpoint_dir} already holds checkpoints; resume them "
            "(RunOptions.resume) or remove the folder to start over"
        )

    def place(tree):
        """Spread the leading run axis over the devices (shard='runs'); jit follows it."""
        if not by_runs:
            return tree
        mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",))
        return jax.device_put(
            tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
        )

    if by_runs and runs % len(devices):
        raise ValueError(
            f"shard='runs' needs the number of runs ({runs}) to be a multiple of "
            f"the number of devices ({len(devices)})"
        )
    state, first_evals = trainer.init(*place((run_keys, run_lrs)))
    history = {
        "losses": np.zeros((runs, 0, cfg.eval_every), np.float32),
        "evals": jax.tree.map(lambda a: np.asarray(a)[:, None], first_evals),
    }
    bases = [cfg.seed] if seeds is None else list(seeds)
    run_labels = [(lr, b, s) for lr in lrs for b in bases for s in range(cfg.num_seeds)]
    done = 0
    if options.resume and checkpoints.latest() is not None:
        done, state, history = checkpoints.restore(state)
        # The learning rate is config, not state: the one asked for now wins.
        state = place(state._replace(opt_state=set_learning_rate(state.opt_state, run_lrs)))
    log = options.metrics_hook or (lambda stage, step, metrics: None)
    if TRAIN_LOSS in history["evals"]:
        raise ValueError(f"an eval metric may not be called {TRAIN_LOSS!r}: the hook's own key")
    if done == 0:
        log(options.stage_name, 0, {k: v[:, 0] for k, v in history["evals"].items()})
    compiled = set()  # group sizes compiled ahead, so progress can leave compiling out
    with _Progress(
        options.progress, options.stage_name, cfg.steps, done * cfg.eval_every
    ) as progress:
        while done < num_chunks:
            n = min(group, num_chunks - done)
            start = time.perf_counter()
            if options.progress and n not in compiled:
                # The next call reuses this executable (jit's cache) instead of compiling.
                trainer.advance.lower(state, done, n).compile()
                compiled.add(n)
                progress.compile_seconds += time.perf_counter() - start
                start = time.perf_counter()
            state, (losses, evals) = trainer.advance(state, done, n)
            losses = np.asarray(losses)  # (S, n, eval_every); the one sync of a group
            seconds = time.perf_counter() - start
            first_losses = (history["losses"] if done else losses)[:, 0, 0]
            kept = checkpoints.latest() if checkpoints is not None else None
            _check_diverged(
                losses,
                first_losses,
                done * cfg.eval_every,
                None if kept is None else kept * cfg.eval_every,
                run_labels,
            )
            evals = {k: np.asarray(v) for k, v in evals.items()}
            for i in range(n):
                metrics = {k: v[:, i] for k, v in evals.items()}
                metrics[TRAIN_LOSS] = losses[:, i].mean(axis=1)
                log(options.stage_name, (done + i + 1) * cfg.eval_every, metrics)
            history = {
                "losses": np.concatenate([history["losses"], losses], axis=1),
                "evals": jax.tree.map(
                    lambda h, e: np.concatenate([h, e], axis=1), history["evals"], evals
                ),
            }
            done += n
            if checkpoints is not None:
                checkpoints.save(done, state, history)
            progress.update(
                done * cfg.eval_every, n * cfg.eval_every, seconds, float(losses[:, -1].mean())
            )
    if checkpoints is not None:
        checkpoints.close()
    result = TrainResult(
        params=jax.tree.map(np.asarray, state.params),
        train_loss=history["losses"].reshape(runs, -1),
        eval_steps=np.arange(num_chunks + 1) * cfg.eval_every,
        eval_metrics=dict(history["evals"]),
    )
    convergence.report(result, options.checkpoint_dir)
    nulls.record(result)
    return result


def train_held_out(
    model: nn.Module,
    task: TaskConfig,
    cfg: TrainConfig,
    prompts: Prompt,
    options: RunOptions | None = None,
) -> TrainResult:
    """`train` with the half-MSE on the held-out `prompts` as its eval metric "loss"."""

    def eval_fn(params):
        return {"loss": batch_loss(model, params, prompts)}

    return train(model, task, cfg, eval_fn=eval_fn, options=options)


def train_each_held_out(
    models: dict[str, nn.Module],
    task: TaskConfig,
    cfg: TrainConfig,
    prompts: Prompt,
    options: RunOptions | None = None,
    stage_prefix: str = "",
) -> dict[str, TrainResult]:
    """`train_held_out` of every named model, each checkpointing to its own stage."""
    options = options or RunOptions()
    return {
        name: train_held_out(model, task, cfg, prompts, options.stage(stage_prefix + name))
        for name, model in models.items()
    }


def require_single_layer(name: str, task: TaskConfig, model: ModelConfig) -> None:
    """Raise ValueError unless `model` is one LSA layer with one head and the task has d_y = 1."""
    if model.num_layers != 1 or model.num_heads != 1 or task.d_y != 1:
        raise ValueError(
            f"{name} uses one LSA layer with one head and d_y = 1; got num_layers="
            f"{model.num_layers}, num_heads={model.num_heads}, d_y={task.d_y}"
        )


def seed_params(params_S, seed: int):
    """The params of one seed, `seed`, from params with a leading seed axis S."""
    return jax.tree.map(lambda leaf: leaf[seed], params_S)
