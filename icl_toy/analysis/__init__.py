"""Analysis: statistics over seeds, alignment metrics, baselines, probes, learning curves,
the ICL/fine-tuning duality. Imports `icl_toy.core` and `icl_toy.training`."""
