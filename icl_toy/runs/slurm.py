"""Grid points of a sweep as Slurm jobs, through submitit: `--sweep ... --launcher slurm`.

Needs the `slurm` extra (`pip install -e ".[slurm]"`), imported only here and only for a
cluster sweep. Every grid point that needs its own compiled call is one task of one job
array; each task runs the same `sweep.PointRun` the local launcher runs, into the same
folder (checkpoints, rows), so a finished point is skipped by a `--resume` and an
interrupted one continues from its checkpoints. submitit's pickles and each job's
stdout/stderr go to `out_dir/submitit/`. Jobs need the results folder on a file system the
compute nodes share with the submitting machine, and the same Python environment.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from icl_toy.runs.guard import UsageError

# Under the results folder: submitit's pickles and every job's stdout and stderr.
LOG_FOLDER = "submitit"
# Seconds between checks of the jobs; a check looks for result files and (at most once a
# minute, in submitit) asks Slurm for the jobs' states.
POLL_S = 2.0


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for (`--slurm-partition`, `--slurm-time`, ...)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 120  # per job; at the limit it is requeued (up to 3 times) and resumes
    gpus: int = 1  # GPUs per job; every one trains the point (batches split over them)
    cpus: int = 8  # CPU cores per job: data sampling and XLA's host threads

    def __post_init__(self):
        for field in ("time_min", "cpus"):
            if getattr(self, field) < 1:
                raise UsageError(f"--slurm-{field.split('_')[0]} must be >= 1")
        if self.gpus < 0:
            raise UsageError("--slurm-gpus must be >= 0")


def require_submitit():
    """The submitit module, or a one-line UsageError that says how to install it."""
    try:
        import submitit
    except ImportError:
        raise UsageError('--launcher slurm needs submitit: pip install -e ".[slurm]"') from None
    return submitit


def make_executor(out_dir: str | Path, name: str, options: SlurmOptions):
    """A submitit executor that submits to Slurm from this machine, logs under
    `out_dir/submitit/`, and asks for `options` per job."""
    submitit = require_submitit()
    if shutil.which("sbatch") is None:
        raise UsageError(
            "--launcher slurm: no `sbatch` on this machine's PATH; run it where jobs are "
            "submitted to Slurm (a login node), or sweep with --launcher local"
        )
    executor = submitit.AutoExecutor(folder=Path(out_dir) / LOG_FOLDER, cluster="slurm")
    parameters = {
        "name": f"icl-toy-{name}",
        "timeout_min": options.time_min,
        "gpus_per_node": options.gpus,
        "cpus_per_task": options.cpus,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if options.partition is not None:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    return executor


def run_jobs(
    executor, calls: Sequence[Callable[[], object]], echo: Callable[[str], None]
) -> Iterator[tuple[Callable[[], object], object, str | None]]:
    """Submit every call as one task of one job array; yield (call, its result, None) as each
    job finishes, or (call, None, a one-line failure with its log) for a job that failed.

    If the caller stops early (an error, Ctrl-C), the unfinished jobs are cancelled, so no
    job goes on writing into a folder that nobody holds; their checkpoints stay for
    `--resume`.
    """
    if not calls:
        return
    submitit = require_submitit()
    with executor.batch():
        jobs = [executor.submit(call) for call in calls]
    ids = jobs[0].job_id + ("" if len(jobs) == 1 else f" ... {jobs[-1].job_id}")
    echo(f"submitted {len(jobs)} jobs ({ids}); logs in {executor.folder}")
    by_job = {id(job): call for job, call in zip(jobs, calls, strict=True)}
    try:
        for done, job in enumerate(submitit.helpers.as_completed(jobs, poll_frequency=POLL_S)):
            call = by_job[id(job)]
            try:
                result = job.result()
            except submitit.core.utils.UncompletedJobError as error:
                yield call, None, _failure(job, error)
            else:
                echo(f"job {job.job_id} finished ({done + 1} of {len(jobs)})")
                yield call, result, None
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)


def _failure(job, error: Exception) -> str:
    """`job ID failed: <the exception, or the job's state> (log: <its stderr file>)`."""
    # submitit's FailedJobError holds the job's traceback between two rules of dashes;
    # its last line is the exception. A job that left no result (killed, cancelled, out
    # of time) is named by its state.
    sections = str(error).split("-" * 22)
    trace = sections[1].split("\n") if len(sections) >= 3 else []
    trace = [line.strip() for line in trace if line.strip()]
    what = trace[-1] if trace else f"no result (state {job.state})"
    return f"job {job.job_id} failed: {what} (log: {job.paths.stderr})"
