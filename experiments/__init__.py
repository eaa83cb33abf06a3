"""One module per study: `python -m experiments.NAME` from the repository root, or
`icl-toy run NAME`. Installed as `icl_toy.experiments`."""
