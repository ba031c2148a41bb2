"""Training runs, one module per task, each with a `Config` and `run(config)`."""

# task name -> module holding `Config` (a frozen dataclass) and `run(config) -> dict`
TASKS = {
    "transcription": "training.transcription",
    "language_model": "training.language_model",
}
# task name -> module defining that `Config` without importing TensorFlow, which
# `train.py` reads to build its flags (the task module imports TensorFlow: ~5 s)
CONFIG_MODULES = {
    "transcription": "training.transcription_config",
    "language_model": "training.language_model_config",
}
