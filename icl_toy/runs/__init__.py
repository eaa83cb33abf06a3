"""Runs: configs and overrides, results on disk, plotting, the runner, sweeps, the
`icl-toy` command and the hypothesis harness. Finds studies by name, imports none."""
