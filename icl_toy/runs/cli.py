"""The `icl-toy` command: list, run, plot and reproduce experiments.

    icl-toy list
    icl-toy run NAME [--quick] [--seeds S] [--set key=value ...] [--out DIR] [--resume] [--quiet]
                     [--sweep key=v1,v2,... ...]
    icl-toy plot NAME --from DIR
    icl-toy reproduce [--quick] [NAME ...]
    icl-toy hypotheses [--quick] [--out DIR] [--rerun] [--list] [NAME ...]

`python -m experiments.NAME [options]` is `icl-toy run NAME [options]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from icl_toy.runs.config import apply_overrides
from icl_toy.runs.results import load_results
from icl_toy.runs.runner import EXPERIMENTS, get_experiment, is_complete, run_experiment
from icl_toy.runs.sweep import check_axes, parse_sweep, run_sweep

FIGURES = Path("figures")


def default_out_dir(quick: bool) -> Path:
    """figures/ for full runs, figures/quick/ (not committed) for quick ones."""
    return FIGURES / "quick" if quick else FIGURES


def resolve_config(name: str, quick: bool, seeds: int | None, overrides: list[str]):
    """The experiment's config after --quick, --seeds and --set, validated.

    Bad names, keys, values and configs exit with a one-line message before any compute.
    """
    try:
        config = get_experiment(name).get_config(quick)
        if seeds is not None:
            overrides = [f"train.num_seeds={seeds}", *overrides]
        return apply_overrides(config, overrides)
    except ValueError as error:
        print(f"icl-toy: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the shrunk config (seconds)")
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
        help="results directory (default figures/, --quick: figures/quick/)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in the results directory",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="sweep a field over values (repeatable: a grid); learning rate and seed are vmapped",
    )


def _run(args) -> None:
    config = resolve_config(args.name, args.quick, args.seeds, args.overrides)
    out_dir = args.out or default_out_dir(args.quick)
    if args.sweep:
        try:
            axes = parse_sweep(args.sweep)
            check_axes(config, axes)
        except ValueError as error:
            print(f"icl-toy: error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        rows = run_sweep(args.name, config, axes, out_dir, quiet=args.quiet)
        print(f"{args.name}: sweep of {len(rows)} points in {out_dir}/{args.name}.sweep.csv")
        for row in rows:
            print(
                "  "
                + "  ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
        return
    results = run_experiment(args.name, config, out_dir, resume=args.resume, quiet=args.quiet)
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
    paths = get_experiment(args.name).plot(load_results(args.source, args.name), args.source)
    print("wrote " + ", ".join(str(p) for p in paths))


def _reproduce(args) -> None:
    out_dir = default_out_dir(args.quick)
    names = args.names or EXPERIMENTS
    configs = {name: resolve_config(name, args.quick, None, []) for name in names}
    for name, config in configs.items():
        if is_complete(out_dir, name, config):
            print(f"{name}: complete in {out_dir}/, skipped")
            continue
        print(f"{name}: running (resumes from a checkpoint if one exists)")
        run_experiment(name, config, out_dir, resume=True, quiet=args.quiet)


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
        "names", nargs="*", metavar="NAME", help="experiments to run (default: all, in order)"
    )
    reproduce.set_defaults(func=_reproduce)
    hyp = commands.add_parser(
        "hypotheses", help="run named claims over seeds and print their verdicts"
    )
    hyp.add_argument("--quick", action="store_true", help="shrunk configs (minutes on a CPU)")
    hyp.add_argument("--out", type=Path, default=None, help="results directory")
    hyp.add_argument("--rerun", action="store_true", help="rerun hypotheses already saved there")
    hyp.add_argument("--list", action="store_true", help="list the hypotheses and exit")
    hyp.add_argument("--quiet", action="store_true", help="no progress bar")
    hyp.add_argument("names", nargs="*", metavar="NAME", help="hypotheses (default: all)")
    hyp.set_defaults(func=_hypotheses)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


def experiment_main(name: str, argv: list[str] | None = None) -> int:
    """`python -m experiments.NAME [options]`, the same code path as `icl-toy run NAME`."""
    return main(["run", name, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
