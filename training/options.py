"""Choices of the flags both tasks share, importable without TensorFlow
(`train.py` builds its flags before it imports TensorFlow)."""

# --distribute: `training.distribute.distribution_strategy` makes the strategy of each.
DISTRIBUTE = ("none", "mirrored")
