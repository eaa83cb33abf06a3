"""Running an experiment module into a results directory.

Layout of a run in `out_dir`, for experiment NAME:
  NAME.config.json  the resolved config and its digest, git commit, versions, devices
  NAME.npz, .json   the results: arrays first, then the summary
  NAME.png/.pdf     the figure, drawn from the saved results; results are complete when
                    NAME.json and NAME.png both exist and the JSON holds the same config
  NAME.log          one line per event, appended: start (digest, devices, versions),
                    failures, each stage's final eval, done (converged seeds, final losses)
  NAME.metrics.jsonl  every in-scan eval, appended as each checkpoint group ends
                    (`metrics_log`); tensorboard/NAME/ and wandb/ with `log_to`
  checkpoints/NAME/<config digest>/  orbax checkpoints of that config's training
  .icl-toy.lock     held by the run that is writing into the folder
Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import platform
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import jax

from icl_toy.runs import metrics_log
from icl_toy.runs.guard import (
    ResultsLock,
    UsageError,
    check_run,
    config_differences,
    config_digest,
)
from icl_toy.runs.results import (
    Results,
    atomic_write_bytes,
    git_commit,
    load_results,
    save_results,
    to_jsonable,
)
from icl_toy.training import convergence
from icl_toy.training.train import RunOptions

# Experiment modules under `experiments/`, in the order `icl-toy reproduce` runs them.
# Inside each checkpoint folder: the config whose training it holds.
CONFIG_FILE = "config.json"
# Written into a checkpoint folder when its training has run to the end.
FINISHED_FILE = "finished"

EXPERIMENTS = (
    "single_layer_gd",
    "multi_layer_gdpp",
    "momentum_attention",
    "icl_vs_finetuning",
    "forward_only",
    "preconditioned_gd",
    "covariate_shift",
    "learning_curves",
    "nonlinear_regression",
    "standard_tokens",
    "which_algorithm",
    "tuned_baselines",
)


def get_experiment(name: str) -> ModuleType:
    """The experiment module called `name`; unknown names raise a ValueError listing the known."""
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(EXPERIMENTS)}"
        )
    return importlib.import_module(f"icl_toy.experiments.{name}")


def version() -> str:
    try:
        return importlib.metadata.version("icl-toy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _log(out_dir: Path, name: str, message: str) -> None:
    # Appends are not atomic, but a log line lost in a crash loses no result.
    with open(out_dir / f"{name}.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def environment() -> dict:
    """Versions and devices behind a result."""
    devices = jax.devices()
    versions = {"python": platform.python_version(), "icl_toy": version()}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "orbax-checkpoint"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "versions": versions,
        "device_kind": devices[0].device_kind,
        "device_platform": devices[0].platform,
        "device_count": len(devices),
    }


def versions_text(env: dict) -> str:
    """The versions of `environment()` as "python 3.11.7, jax 0.4.30, ..."."""
    return ", ".join(f"{k} {v}" for k, v in env["versions"].items())


def final_losses_text(records: dict[str, dict]) -> str:
    """Each stage's seed-mean final loss from its convergence record, on the curve it read."""
    parts = []
    for stage, record in records.items():
        finals = [r["final_loss"] for r in record["per_seed"]]
        mean = sum(finals) / len(finals) if finals else float("nan")
        parts.append(f"{mean:.4g} {stage} ({record['curve']})")
    return "final loss (seed mean): " + (", ".join(parts) if parts else "no training")


def final_eval_lines(last: dict[str, tuple[int, dict]]) -> list[str]:
    """One line per stage: the seed means of its last logged eval (`MetricsLog.last`)."""
    lines = []
    for stage, (step, metrics) in last.items():
        means = " ".join(
            f"{k}={'nan' if v['mean'] is None else format(v['mean'], '.4g')}"
            for k, v in metrics.items()
        )
        lines.append(f"final eval of {stage} at step {step} (seed means): {means}")
    return lines


def run_metadata(name: str, config) -> dict:
    return {
        "experiment": name,
        "config": to_jsonable(config),
        "config_digest": config_digest(config),
        "icl_toy_version": version(),
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
        **environment(),
    }


def is_complete(out_dir: str | Path, name: str, config) -> bool:
    """Whether `out_dir` holds finished results and figure of this exact config."""
    out_dir = Path(out_dir)
    summary = out_dir / f"{name}.json"
    if not (summary.exists() and (out_dir / f"{name}.png").exists()):
        return False
    return json.loads(summary.read_text()).get("config") == to_jsonable(config)


def _has_checkpoints(directory: Path) -> bool:
    return directory.is_dir() and any(
        p.name not in (CONFIG_FILE, FINISHED_FILE) for p in directory.iterdir()
    )


def _checkpointed_configs(root: Path) -> list[tuple[str, dict, bool]]:
    """(digest, saved config, finished) of every config with checkpoints under `root`,
    newest first."""
    found = []
    for directory in root.iterdir() if root.is_dir() else ():
        meta = directory / CONFIG_FILE
        if meta.exists() and _has_checkpoints(directory):
            finished = (directory / FINISHED_FILE).exists()
            found.append(
                (meta.stat().st_mtime, directory.name, json.loads(meta.read_text()), finished)
            )
    return [(digest, saved, done) for _, digest, saved, done in sorted(found, reverse=True)]


def mark_finished(checkpoint_dir: str | Path) -> None:
    """Record that the training in `checkpoint_dir` ran to its end."""
    atomic_write_bytes(Path(checkpoint_dir) / FINISHED_FILE, b"")


def prepare_checkpoints(
    root: str | Path, config, *, resume: bool = False, fresh: bool = False, adopt: bool = True
) -> tuple[Path, dict | None]:
    """The checkpoint folder of `config` under `root` (`root/<config digest>/`) and, where a
    resume adopts an interrupted run that differs only in its learning rate, that run's
    record ({"config_digest", "changed"}; else None).

    - `fresh`: this config's checkpoints are removed, and only these.
    - Checkpoints of this config and no `resume`: an interrupted run's are refused (continue
      them or start over); a finished run's pass, and its results are recomputed from them
      (`continues`): e.g. after another config's results replaced them in the folder.
    - `resume` and checkpoints of this config: they are continued.
    - `resume`, none of this config, and `adopt`: an interrupted (unfinished) run that
      differs only in `*.learning_rate` is adopted (its checkpoints move here and continue
      at the new rate); any other run there, interrupted or finished, is refused, naming
      each differing field. With `adopt=False` (reproduce, or a sweep whose folder holds
      other grid points) it starts afresh.
    """
    root = Path(root)
    digest = config_digest(config)
    directory = root / digest
    if fresh and directory.exists():
        shutil.rmtree(directory)
    adopted = None
    if _has_checkpoints(directory):
        if not resume and not (directory / FINISHED_FILE).exists():
            raise UsageError(
                f"{directory} holds checkpoints of an earlier run of this config; "
                "--resume continues it, --fresh starts it over"
            )
    elif resume and adopt:
        others = _checkpointed_configs(root)
        for other_digest, other, finished in others:
            differences = config_differences(other, to_jsonable(config))
            only_lr = all(d.split(":")[0].endswith("learning_rate") for d in differences)
            if only_lr and not finished:
                (root / other_digest).rename(directory)
                adopted = {"config_digest": other_digest, "changed": differences}
                break
        else:
            if others:
                _, other, finished = others[0]
                raise UsageError(
                    "cannot resume: no interrupted run of this config here; the "
                    + ("finished" if finished else "interrupted")
                    + " run differs in "
                    + "; ".join(config_differences(other, to_jsonable(config)))
                    + ". Pass the same --quick/--set/--seeds to resume it, or run without "
                    "--resume to start this config"
                )
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        directory / CONFIG_FILE, (json.dumps(to_jsonable(config), indent=2) + "\n").encode()
    )
    return directory, adopted


def continues(checkpoint_dir: Path, resume: bool) -> bool:
    """Whether training continues from the checkpoints of a `prepare_checkpoints` folder: on
    request, or because that training finished (so nothing retrains)."""
    return resume or (Path(checkpoint_dir) / FINISHED_FILE).exists()


@contextlib.contextmanager
def _logged_signals(out_dir: Path, name: str):
    """SIGTERM and SIGINT end the run through an exception that is logged with its signal."""

    def handler(signum, frame):
        _log(out_dir, name, f"interrupted by {signal.Signals(signum).name}")
        signal.signal(signum, previous[signum])
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        for s in previous:
            signal.signal(s, handler)
    try:
        yield
    finally:
        if main_thread:
            for s, h in previous.items():
                signal.signal(s, h)


def run_experiment(
    name: str,
    config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    fresh: bool = False,
    rerun: bool = False,
    adopt: bool = True,
    quiet: bool = False,
    log_to: Sequence[str] = (),
    command: str = "",
    echo: Callable[[str], None] = lambda _: None,
) -> Results:
    """Run experiment `name` with `config` into `out_dir`, save its results and draw its figure.

    Everything is checked before any compute (`guard.check_run`), and the folder is locked
    for the run. Finished results of the same config are returned as they are unless
    `rerun` (which recomputes them, resuming training from its checkpoints) or `fresh`
    (which removes this config's checkpoints and trains from scratch). Checkpoints live in
    `out_dir/checkpoints/NAME/<config digest>/`; see `prepare_checkpoints` for `resume`.

    Every in-scan eval goes to `NAME.metrics.jsonl` as its group ends (started afresh when
    training starts from scratch, appended to when it continues), and to the writers of
    `log_to` ("tensorboard", "wandb"; see `metrics_log`).
    """
    module = get_experiment(name)
    out_dir = Path(out_dir)
    metrics_log.check_backends(log_to)
    check_run(config, out_dir, len(jax.devices()))
    out_dir.mkdir(parents=True, exist_ok=True)
    with ResultsLock(out_dir, command or f"icl-toy run {name}"):
        if is_complete(out_dir, name, config) and not (rerun or fresh):
            _log(out_dir, name, "complete, skipped")
            echo(f"{name}: complete in {out_dir}/, skipped (--rerun recomputes, --fresh retrains)")
            return load_results(out_dir, name)
        checkpoint_dir, adopted = prepare_checkpoints(
            out_dir / "checkpoints" / name,
            config,
            resume=resume or rerun,
            fresh=fresh,
            adopt=adopt and not rerun,
        )
        resume = continues(checkpoint_dir, resume or rerun)
        metadata = run_metadata(name, config)
        if adopted is not None:
            metadata["resumed_from"] = adopted
        atomic_write_bytes(
            out_dir / f"{name}.config.json", (json.dumps(metadata, indent=2) + "\n").encode()
        )
        _log(
            out_dir,
            name,
            f"start (resume={resume}, fresh={fresh}, rerun={rerun}) "
            f"digest={metadata['config_digest']} commit={metadata['git_commit']} "
            f"devices={metadata['device_count']}x{metadata['device_kind']} "
            f"({metadata['device_platform']}); {versions_text(metadata)}",
        )
        log = metrics_log.open_log(out_dir, name, config, log_to, append=resume)
        options = RunOptions(
            checkpoint_dir=str(checkpoint_dir.absolute()),
            resume=resume,
            progress=not quiet,
            metrics_hook=log,
        )
        start = time.time()
        with (
            _logged_signals(out_dir, name),
            convergence.collect(options.checkpoint_dir) as runs,
            log,
        ):
            try:
                results = module.run(config, options=options)
            except BaseException as error:
                _log(out_dir, name, f"failed: {type(error).__name__}: {error}")
                raise
        mark_finished(checkpoint_dir)
        if adopted is not None:
            results.summary["resumed_from"] = adopted
        # Every training run's convergence record; a study's own record of a stage (with its
        # reference learner's gap) replaces the collected one.
        results.summary["convergence"] = runs | results.summary.get("convergence", {})
        # The versions and devices behind the numbers travel with them (NAME.config.json,
        # which has them too, is not committed beside the figures).
        results.summary["environment"] = {**environment(), "git_commit": metadata["git_commit"]}
        save_results(out_dir, name, results)
        module.plot(load_results(out_dir, name), out_dir)
        line = convergence.summary_line(results.summary["convergence"])
        for final in final_eval_lines(log.last):
            _log(out_dir, name, final)
        finals = final_losses_text(results.summary["convergence"])
        _log(out_dir, name, f"done in {time.time() - start:.1f} s; {line}; {finals}")
        echo(f"{name}: {line}")
        return results
