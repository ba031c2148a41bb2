"""The seed of a run's training data order, a resumed run's included.

The training datasets shuffle (and, for speech, mask and stretch) anew each
epoch from their seed, but a resumed run builds them again, and rebuilt from
the same seed they start from the first epoch's draws: the first epoch after
a restart would see the batches in epoch 1's order, with epoch 1's masks. A
run that resumes after epoch k > 0 (`keras.callbacks.BackupAndRestore`'s
backup) seeds its data from `(seed, k)` instead; a run not resumed keeps
`seed` itself, and so the order it always had. The resumed run's order is
another draw, not the one the uninterrupted run would have seen.

The model's own random layers (dropout, the mel-axis warp, random EQ, input
noise) draw from Keras seed generators, whose state `save_weights` does not
keep: restored from a backup, they too would start again from epoch 1's draws.
`reseed_random_layers` gives each a seed made of its own and the epoch the
run resumes at (`training.training_clock.ClockedBackupAndRestore` calls it).
"""

import hashlib
import json
import os

import keras

BACKUP_STATE_FILE = "training_metadata.json"  # Keras' name, in the backup directory


def backup_epoch(backup_dir):
    """The number of epochs the backup in `backup_dir` has trained (the epoch a
    resumed run starts at), 0 without a readable backup."""
    try:
        with open(os.path.join(backup_dir, BACKUP_STATE_FILE), encoding="utf-8") as f:
            epoch = json.load(f)["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else 0


def data_seed(seed, resumed_epoch=0):
    """`seed` for a run from the start; for one resumed after `resumed_epoch`
    epochs, a seed in [0, 2**31) drawn from both (not `seed + k`: an ensemble's
    members have the seeds `seed + k`)."""
    if not resumed_epoch:
        return seed
    digest = hashlib.sha256(f"{seed}:{resumed_epoch}".encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big") >> 1


SEED_STATE_NAME = "seed_generator_state"  # the variable of a keras.random.SeedGenerator


def reseed_random_layers(model, resumed_epoch):
    """Give each seed generator of `model` the seed `data_seed(its seed,
    resumed_epoch)` and a fresh counter; nothing when `resumed_epoch` is 0.

    Returns the number of generators reseeded.
    """
    if not resumed_epoch:
        return 0
    states = [v for v in model.variables if v.path.rsplit("/", 1)[-1] == SEED_STATE_NAME]
    for state in states:
        seed = int(keras.ops.convert_to_numpy(state.value)[0])
        state.assign(keras.ops.convert_to_tensor([data_seed(seed, resumed_epoch), 0], dtype=state.dtype))
    return len(states)
