"""Deterministic train/validation assignment that keeps speakers apart."""

import hashlib
import math

from pipelines.vocabulary import normalize_transcript

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "development": "validation",
    "test": "test",
    "eval": "test",
    "evaluation": "test",
}


def stable_hash(text):
    """A process-independent hash of `text` (Python's `hash` is salted)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def canonical_split(name, *, source):
    """`"train"`, `"validation"`, `"test"` or `""` (unassigned) for a split name."""
    key = (name or "").strip().lower()
    if not key:
        return ""
    if key not in SPLIT_ALIASES:
        raise ValueError(
            f"{source}: unknown split {name!r}; expected one of {sorted(SPLIT_ALIASES)} or empty."
        )
    return SPLIT_ALIASES[key]


def choose_validation_groups(groups, fraction):
    """The groups held out for validation: a fixed share, at least one.

    Groups are ordered by a stable hash and the first
    `max(1, round(fraction * len(groups)))` are taken (none if there is a
    single group), so the choice depends only on the group names.
    """
    groups = sorted(set(groups), key=stable_hash)
    if len(groups) < 2:
        return set()
    count = min(len(groups) - 1, max(1, int(math.floor(fraction * len(groups) + 0.5))))
    return set(groups[:count])


def assign_splits(rows, *, validation_fraction=0.1):
    """Place every row in `train`, `validation` or `test`.

    Rows carrying a split keep it. Unassigned rows are divided between
    train and validation: by speaker when at least two speakers are known (no
    speaker appears in both), else by transcript (the same sentence never
    appears in both; transcripts are compared as the speech pipeline reads
    them, `normalize_transcript`, so "Goodbye." and "goodbye" are one
    sentence). Rows without a transcript stay in train.

    Args:
        rows: Dicts with keys `path`, `text`, `speaker` and `split` (already
            canonical, `""` when unassigned).
        validation_fraction: Share of groups held out.

    Returns:
        Dict split name -> list of rows, only non-empty splits.
    """
    out = {"train": [], "validation": [], "test": []}
    unassigned = [row for row in rows if not row["split"]]
    for row in rows:
        if row["split"]:
            out[row["split"]].append(row)
    speakers = {row["speaker"] for row in unassigned if row["speaker"]}
    if len(speakers) >= 2:
        group_of = lambda row: "speaker:" + (row["speaker"] or row["path"])  # noqa: E731
    else:
        group_of = lambda row: "text:" + normalize_transcript(row["text"])  # noqa: E731
    # Rows without a transcript (nothing left once normalised) are skipped
    # later; they do not take up validation groups (they stay in train, where
    # they are counted).
    has_text = lambda row: bool(normalize_transcript(row["text"]))  # noqa: E731
    held_out = choose_validation_groups(
        [group_of(r) for r in unassigned if has_text(r)], validation_fraction
    )
    for row in unassigned:
        out["validation" if has_text(row) and group_of(row) in held_out else "train"].append(row)
    return {name: split_rows for name, split_rows in out.items() if split_rows}
