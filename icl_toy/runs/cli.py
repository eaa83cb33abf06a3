"""The `icl-toy` command: list, run, plot and reproduce experiments.

    icl-toy list
    icl-toy run NAME [--quick | --paper] [--seeds S] [--set key=value ...] [--out DIR]
                     [--resume | --rerun | --fresh] [--quiet] [--sweep key=v1,v2,... ...]
                     [--log-to tensorboard,wandb]
                     [--launcher {local,slurm}] [--slurm-partition P] [--slurm-time MIN]
                     [--slurm-gpus G] [--slurm-cpus C]
    icl-toy plot NAME --from DIR
    icl-toy reproduce [--quick] [--out DIR] [--fresh] [NAME ...]
    icl-toy hypotheses [--quick] [--out DIR] [--rerun] [--list] [NAME ...]

`python -m experiments.NAME [options]` is `icl-toy run NAME [options]`. A user's mistake
(a bad name, key, value, size or folder, a refused resume, a folder in use) exits 2 with one
line before any compute; a diverged run exits 1 with one line that says how to continue it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from icl_toy.runs import metrics_log, slurm
from icl_toy.runs.config import apply_overrides, config_paths
from icl_toy.runs.guard import UsageError, check_finite, check_sizes, check_writable
from icl_toy.runs.results import load_results
from icl_toy.runs.runner import EXPERIMENTS, get_experiment, is_complete, run_experiment
from icl_toy.runs.sweep import JobsFailedError, check_axes, parse_sweep, run_sweep
from icl_toy.training.train import NonFiniteLossError

FIGURES = Path("figures")


def default_out_dir(quick: bool, paper: bool = False) -> Path:
    """figures/ for full runs, figures/quick/ (not committed) for quick ones, figures/paper/
    for the papers' own budgets."""
    return FIGURES / "quick" if quick else FIGURES / "paper" if paper else FIGURES


def paper_config(name: str):
    """The study's config at the paper's own budget (`get_paper_config`), for an accelerator."""
    module = get_experiment(name)
    if not hasattr(module, "get_paper_config"):
        having = [n for n in EXPERIMENTS if hasattr(get_experiment(n), "get_paper_config")]
        raise ValueError(f"{name} has no paper config (studies with one: {', '.join(having)})")
    return module.get_paper_config()


def resolve_config(
    name: str, quick: bool, seeds: int | None, overrides: list[str], paper: bool = False
):
    """The experiment's config after --quick or --paper, --seeds and --set, validated.

    Bad names, keys, values and configs exit with a one-line message before any compute.
    """
    try:
        config = paper_config(name) if paper else get_experiment(name).get_config(quick)
        if seeds is not None:
            overrides = [f"train.num_seeds={seeds}", *overrides]
        config = apply_overrides(config, overrides)
        check_finite(config)
        check_sizes(config)
        return config
    except ValueError as error:
        print(f"icl-toy: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="the shrunk config (seconds)")
    preset.add_argument(
        "--paper",
        action="store_true",
        help="the paper's own budget (an accelerator's hours; results in figures/paper/)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of vmapped seeds")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted path",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default figures/; --quick: figures/quick/; --paper: "
        "figures/paper/)",
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue this config's interrupted run from its latest checkpoint (only the "
        "learning rate may differ from the interrupted run)",
    )
    again.add_argument(
        "--rerun",
        action="store_true",
        help="recompute finished results of this config (training resumes from checkpoints)",
    )
    again.add_argument(
        "--fresh",
        action="store_true",
        help="remove this config's checkpoints and train from scratch",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress (a bar, or one line per group off a tty)"
    )
    parser.add_argument(
        "--log-to",
        type=_backends,
        default=[],
        metavar="BACKEND,...",
        help="also log every eval to these, besides NAME.metrics.jsonl: tensorboard "
        "(tensorboard/NAME/, the [tensorboard] extra), wandb (offline unless WANDB_MODE is "
        "set, the [wandb] extra)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="sweep a field over values (repeatable: a grid); learning rate and seed are vmapped",
    )
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="where a sweep's grid points train: here, one after another (local), or as "
        'one Slurm job each, through submitit (slurm; pip install -e ".[slurm]")',
    )
    defaults = slurm.SlurmOptions()
    cluster = parser.add_argument_group("Slurm jobs (with --launcher slurm)")
    # Defaults are None so that a flag given without --launcher slurm can be refused.
    for flag, kind, text in (
        ("partition", str, "partition (default: the cluster's default)"),
        ("time", int, f"wall-clock minutes per job (default {defaults.time_min})"),
        ("gpus", int, f"GPUs per job (default {defaults.gpus})"),
        ("cpus", int, f"CPU cores per job (default {defaults.cpus})"),
    ):
        cluster.add_argument(f"--slurm-{flag}", type=kind, default=None, help=text)


def _backends(value: str) -> list[str]:
    """--log-to's comma-separated backends; an unknown one is argparse's one-line error."""
    backends = [b for b in value.split(",") if b]
    unknown = [b for b in backends if b not in metrics_log.BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(unknown)}; known: {', '.join(metrics_log.BACKENDS)} "
            "(NAME.metrics.jsonl is always written)"
        )
    return backends


def _command(args, overrides: list[str]) -> str:
    """The `icl-toy run` command line of `args`, resumed, with `overrides` replacing theirs."""
    keys = {o.partition("=")[0] for o in overrides}
    kept = [o for o in args.overrides if o.partition("=")[0] not in keys]
    preset = ["--quick"] if args.quick else ["--paper"] if args.paper else []
    parts = ["icl-toy", "run", args.name, *preset]
    parts += [] if args.seeds is None else ["--seeds", str(args.seeds)]
    parts += [] if args.out is None else ["--out", str(args.out)]
    parts += [w for o in [*kept, *overrides] for w in ("--set", o)]
    return " ".join([*parts, "--resume"])


def _diverged(args, config, error: NonFiniteLossError) -> SystemExit:
    """One line that says what diverged, and the command that continues from the kept
    checkpoint at half the learning rate."""
    halved = [
        f"{path}={value / 2:g}"
        for path, value in config_paths(config).items()
        if path.endswith("learning_rate")
    ]
    advice = (
        f"; continue from it at half the learning rate: {_command(args, halved)}"
        if error.kept_step is not None
        else "; lower the learning rate and run again"
    )
    print(f"icl-toy: error: {args.name}: {error}{advice}", file=sys.stderr)
    return SystemExit(1)


def _slurm_options(args) -> slurm.SlurmOptions | None:
    """The Slurm options of `--launcher slurm` (None for local); a mistake in the launcher
    flags is a UsageError."""
    given = {
        field: value
        for field, value in (
            ("partition", args.slurm_partition),
            ("time_min", args.slurm_time),
            ("gpus", args.slurm_gpus),
            ("cpus", args.slurm_cpus),
        )
        if value is not None
    }
    if args.launcher != "slurm":
        if given:
            flag = "--slurm-" + next(iter(given)).split("_")[0]
            raise UsageError(f"{flag} needs --launcher slurm")
        return None
    if not args.sweep:
        raise UsageError("--launcher slurm needs --sweep: it runs a sweep's grid points as jobs")
    return slurm.SlurmOptions(**given)


def _run(args) -> None:
    metrics_log.check_backends(args.log_to)
    options = _slurm_options(args)
    config = resolve_config(args.name, args.quick, args.seeds, args.overrides, args.paper)
    out_dir = args.out or default_out_dir(args.quick, args.paper)
    if args.sweep:
        if args.log_to:
            raise UsageError("--log-to does not apply to sweeps; run a grid point on its own")
        try:
            axes = parse_sweep(args.sweep)
            check_axes(config, axes)
        except ValueError as error:
            raise UsageError(str(error)) from error
        if args.rerun:
            raise UsageError("--rerun does not apply to sweeps; use --resume or --fresh")
        executor = None
        if options is not None:
            check_writable(out_dir)
            executor = slurm.make_executor(out_dir, args.name, options)
        try:
            rows = run_sweep(
                args.name,
                config,
                axes,
                out_dir,
                quiet=args.quiet,
                resume=args.resume,
                fresh=args.fresh,
                executor=executor,
                num_devices=None if options is None else max(options.gpus, 1),
                echo=print,
            )
        except JobsFailedError as error:
            print(f"icl-toy: error: {args.name}: {error}", file=sys.stderr)
            raise SystemExit(1) from error
        print(f"{args.name}: sweep of {len(rows)} rows in {out_dir}/{args.name}.sweep.csv")
        for row in rows:
            shown = {k: v for k, v in row.items() if k not in ("digest", "error")}
            print(
                "  "
                + "  ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
                )
            )
        if any(row["status"] != "done" for row in rows):
            raise SystemExit(1)
        return
    try:
        results = run_experiment(
            args.name,
            config,
            out_dir,
            resume=args.resume,
            rerun=args.rerun,
            fresh=args.fresh,
            quiet=args.quiet,
            log_to=args.log_to,
            command=" ".join(sys.argv),
            echo=print,
        )
    except NonFiniteLossError as error:
        raise _diverged(args, config, error) from error
    print(f"{args.name}: results and figure in {out_dir}/")
    for key, stats in results.summary.get("seed_stats", {}).items():
        print(f"  {key:>22}: {stats['mean']:.5g} ± {stats['std']:.2g}")


def _list(args) -> None:
    for name in EXPERIMENTS:
        module = get_experiment(name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        runtime = module.RUNTIME
        print(f"{name:<20} {summary}")
        print(f"{'':<20} full {runtime['full']}, --quick {runtime['quick']} (2-core CPU)")


def _plot(args) -> None:
    resolve_config(args.name, False, None, [])  # checks the name
    if not (args.source / f"{args.name}.json").is_file():
        raise UsageError(f"--from {args.source}: no saved results {args.name}.json there")
    paths = get_experiment(args.name).plot(load_results(args.source, args.name), args.source)
    print("wrote " + ", ".join(str(p) for p in paths))


def _reproduce(args) -> None:
    out_dir = args.out or default_out_dir(args.quick)
    names = args.names or EXPERIMENTS
    configs = {name: resolve_config(name, args.quick, None, []) for name in names}
    for name, config in configs.items():
        if is_complete(out_dir, name, config) and not args.fresh:
            print(f"{name}: complete in {out_dir}/, skipped")
            continue
        print(f"{name}: running" + ("" if args.fresh else " (resumes from its checkpoints)"))
        run_experiment(
            name,
            config,
            out_dir,
            resume=not args.fresh,
            fresh=args.fresh,
            adopt=False,
            quiet=args.quiet,
        )


def _hypotheses(args) -> None:
    from icl_toy.runs import hypotheses  # imports every model: only for this command

    if args.list:
        for h in hypotheses.registry().values():
            print(f"{h.name:<28} {h.claim}\n{'':<28} ({h.source})")
        return
    try:
        names = [h.name for h in hypotheses.get_hypotheses(args.names)]
    except ValueError as error:
        print(f"icl-toy: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    out_dir = args.out or default_out_dir(args.quick)
    entries = hypotheses.run_hypotheses(
        names,
        out_dir,
        quick=args.quick,
        rerun=args.rerun,
        fresh=args.fresh,
        progress=not args.quiet,
        echo=print,
    )
    print(hypotheses.format_table(entries, names))
    print(f"results in {out_dir}/{hypotheses.NAME}.json, figure {out_dir}/{hypotheses.NAME}.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icl-toy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="experiments with descriptions and runtimes").set_defaults(
        func=_list
    )
    run = commands.add_parser("run", help="run an experiment")
    run.add_argument("name", help="experiment name (see `icl-toy list`)")
    _add_run_arguments(run)
    run.set_defaults(func=_run)
    plot = commands.add_parser("plot", help="redraw a figure from saved results")
    plot.add_argument("name")
    plot.add_argument("--from", dest="source", type=Path, required=True, help="results directory")
    plot.set_defaults(func=_plot)
    reproduce = commands.add_parser("reproduce", help="run every paper figure into figures/")
    reproduce.add_argument("--quick", action="store_true")
    reproduce.add_argument("--quiet", action="store_true")
    reproduce.add_argument(
        "--out", type=Path, default=None, help="results directory (default as for run)"
    )
    reproduce.add_argument("--fresh", action="store_true", help="retrain every study from scratch")
    reproduce.add_argument(
        "names", nargs="*", metavar="NAME", help="experiments to run (default: all, in order)"
    )
    reproduce.set_defaults(func=_reproduce)
    hyp = commands.add_parser(
        "hypotheses", help="run named claims over seeds and print their verdicts"
    )
    hyp.add_argument("--quick", action="store_true", help="shrunk configs (minutes on a CPU)")
    hyp.add_argument("--out", type=Path, default=None, help="results directory")
    hyp.add_argument(
        "--rerun", action="store_true", help="recompute hypotheses saved there (from checkpoints)"
    )
    hyp.add_argument(
        "--fresh", action="store_true", help="remove their checkpoints and train from scratch"
    )
    hyp.add_argument("--list", action="store_true", help="list the hypotheses and exit")
    hyp.add_argument("--quiet", action="store_true", help="no progress bar")
    hyp.add_argument("names", nargs="*", metavar="NAME", help="hypotheses (default: all)")
    hyp.set_defaults(func=_hypotheses)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as error:
        print(f"icl-toy: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    return 0


def experiment_main(name: str, argv: list[str] | None = None) -> int:
    """`python -m experiments.NAME [options]`, the same code path as `icl-toy run NAME`."""
    return main(["run", name, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
