"""Core math: prompts and task families, models, algorithms as weights, explicit learners,
closed-form risks. Imports nothing above itself."""
