"""Training: one compiled region per run, checkpoints, step-size fitting of explicit
learners, gradient estimators. Imports only `icl_toy.core`."""
