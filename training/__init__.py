"""Training runs, one module per task, each with a `Config` and `run(config)`."""

# task name -> module holding `Config` (a frozen dataclass) and `run(config) -> dict`
TASKS = {
    "transcription": "training.transcription",
    "language_model": "training.language_model",
}
