"""Training throughput against the data-generation floor.

    python -m benchmarks.train_throughput            # table
    python -m benchmarks.train_throughput --json     # table, then one JSON object on the last line

Batch 2048, d = N = 10 (the von Oswald preset), Adam. The floor is the same `lax.scan` over
steps that only samples the prompts (no model): on a CPU that sampling is the honest limit
of a 484-parameter model. Each configuration runs in a fresh process, so its compile time
and peak resident memory (RSS) are its own. Rates are steps/s after compilation; with S
vmapped seeds every seed advances that many steps per second ("per-seed rate").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time

CONFIGS = {  # name -> (num_layers, shared_weights); None is the sampling floor
    "floor": None,
    "k1": (1, False),
    "k5": (5, False),
    "k5_recurrent": (5, True),
}


def _measure(name: str, num_seeds: int, steps: int, repeats: int, queue) -> None:
    """Compile and time one configuration; put a dict on `queue` (runs in a child process)."""
    import jax
    import jax.numpy as jnp

    from icl_toy.core.models import ModelConfig, make_model
    from icl_toy.core.tasks import batch_at_step, von_oswald_preset
    from icl_toy.training.train import TrainConfig, batch_loss, make_trainer, seed_keys

    task = von_oswald_preset()
    cfg = TrainConfig(steps=steps, eval_every=steps, num_seeds=num_seeds)
    keys = seed_keys(cfg)
    if name == "floor" or name.endswith("_forward"):
        if name == "floor":

            def consume(p):
                return p.x.sum() + p.y.sum() + p.x_q.sum() + p.y_q.sum()

        else:  # sampling plus the forward loss, no gradient: splits a step's time
            num_layers, shared = CONFIGS[name.removesuffix("_forward")]
            model = make_model(task, ModelConfig(num_layers=num_layers, shared_weights=shared))
            params = model.init(jax.random.key(0), jnp.zeros((11, 11)))

            def consume(p):
                return batch_loss(model, params, p)

        def sample_only(key):
            def body(total, t):
                return total + consume(batch_at_step(key, task, cfg.batch_size, t)), None

            return jax.lax.scan(body, jnp.zeros(()), jnp.arange(steps))[0]

        fn, args = jax.jit(jax.vmap(sample_only)), (keys,)

        def prepare():
            return keys

    else:
        num_layers, shared = CONFIGS[name]
        model = make_model(task, ModelConfig(num_layers=num_layers, shared_weights=shared))
        trainer = make_trainer(model, task, cfg)
        learning_rates = jnp.full(keys.shape, cfg.learning_rate)
        fn, args = trainer.advance, (trainer.init(keys, learning_rates)[0], 0, 1)

        def prepare():  # advance donates its state: start each run afresh
            return trainer.init(keys, learning_rates)[0]

    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats + 1):  # the first run warms up allocations and is dropped
        first_arg = jax.block_until_ready(prepare())
        start = time.perf_counter()
        jax.block_until_ready(compiled(first_arg, *args[1:-1]))
        times.append(time.perf_counter() - start)
    best = min(times[1:])
    queue.put(
        {
            "name": name,
            "num_seeds": num_seeds,
            "steps_per_s": steps / best,
            "compile_s": compile_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device": str(jax.devices()[0]),
            "platform": jax.devices()[0].platform,
        }
    )


def measure(name: str, num_seeds: int, steps: int, repeats: int) -> dict:
    """Run `_measure` in a fresh process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(name, num_seeds, steps, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (best is kept)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8], help="vmapped seeds")
    args = parser.parse_args(argv)

    rows = [measure(n, s, args.steps, args.repeats) for s in args.seeds for n in CONFIGS]
    s0 = args.seeds[0]
    profile = [
        measure(f"{n}_forward", s0, args.steps, args.repeats) for n in CONFIGS if n != "floor"
    ]

    def get(name, seeds, key):
        return next(r[key] for r in rows if r["name"] == name and r["num_seeds"] == seeds)

    floor = {r["num_seeds"]: r["steps_per_s"] for r in rows if r["name"] == "floor"}
    print(f"device: {rows[0]['device']}   batch 2048, d = N = 10, {args.steps} steps per run")
    print(
        f"{'config':>14} {'seeds':>5} {'steps/s':>9} {'x floor':>8} {'compile s':>9} {'RSS MB':>8}"
    )
    for r in rows:
        r["ratio"] = r["steps_per_s"] / floor[r["num_seeds"]]
        print(
            f"{r['name']:>14} {r['num_seeds']:>5} {r['steps_per_s']:>9.1f} {r['ratio']:>8.2f} "
            f"{r['compile_s']:>9.2f} {r['peak_rss_mb']:>8.0f}"
        )

    # Where a step's time goes: sampling, forward loss, backward + Adam update.
    print(f"\nper-step time, {s0} seed(s), ms: sampling | forward | backward + update")
    for fwd in profile:
        name = fwd["name"].removesuffix("_forward")
        full, sample = 1e3 / get(name, s0, "steps_per_s"), 1e3 / floor[s0]
        forward = 1e3 / fwd["steps_per_s"] - sample
        print(f"{name:>14}: {sample:8.2f} | {forward:7.2f} | {full - sample - forward:8.2f}")

    s0 = args.seeds[0]
    summary = {
        "device": rows[0]["device"],
        "platform": rows[0]["platform"],
        "num_seeds": s0,
        "floor_steps_per_s": get("floor", s0, "steps_per_s"),
        "k1_steps_per_s": get("k1", s0, "steps_per_s"),
        "k5_steps_per_s": get("k5", s0, "steps_per_s"),
        "k5_recurrent_steps_per_s": get("k5_recurrent", s0, "steps_per_s"),
        "ratio_k1": get("k1", s0, "ratio"),
        "ratio_k5": get("k5", s0, "ratio"),
        "ratio_k5_recurrent": get("k5_recurrent", s0, "ratio"),
        "compile_s_k1": get("k1", s0, "compile_s"),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
