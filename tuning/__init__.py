"""Hyperparameter search with keras-tuner (`python train.py --task TASK --tune`).

`search_spaces` holds each task's space (the only code touching `hp`),
`config.TuningConfig` the flags, `run_search.run_search` the runner,
`tasks.tuning_task` the seam to each training module, and `distributed`
a launcher for a chief plus N workers.
"""
