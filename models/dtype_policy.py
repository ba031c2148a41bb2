"""Keras dtype policies a run may train under: float32, or mixed precision.

`mixed_bfloat16` computes in bfloat16 with float32 weights: on CPUs with
bfloat16 matrix units (Intel AMX, Sapphire Rapids and later) TensorFlow's
large matmuls run several times faster than in float32, and the fused Elman
loops of wide layers gain too (`layers.fused_elman`). `mixed_float16` is the
GPU choice (tensor cores; Keras scales the loss against float16 underflow).
Both tasks take it (`--dtype-policy`); their logits and losses stay float32.
What it gained and cost here is in the README ("Mixed precision" under
"Speed", and each task's section): faster steps, but a worse model in the
same time for the character language model.
"""

import contextlib

# Keras is imported where a policy is set: the task configurations read
# DTYPE_POLICIES before train.py imports TensorFlow.
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def check_dtype_policy(name, field="dtype_policy"):
    """`name` if it is one of `DTYPE_POLICIES`; else a ValueError naming `field`."""
    if name not in DTYPE_POLICIES:
        raise ValueError(
            f"Received an invalid value for `{field}`, expected one of "
            f"{DTYPE_POLICIES}, got {name!r}."
        )
    return name


@contextlib.contextmanager
def dtype_policy(name):
    """Within this block new layers and models take the Keras dtype policy
    `name` (`keras.config.set_dtype_policy`); the previous one comes back
    after. None leaves Keras' global policy as it is."""
    if name is None:
        yield
        return
    check_dtype_policy(name)
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
