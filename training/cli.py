"""Command-line flags generated from configuration dataclasses.

Each field of a frozen configuration dataclass becomes exactly one flag
(`hidden_size` -> `--hidden-size`), with the field's `metadata["help"]` as
help text and its default as the default. Unknown flags are errors (argparse
exits with status 2 and names them), never silent no-ops.
"""

import argparse
import dataclasses
import json
import os
import types
import typing


def _flag(name):
    return "--" + name.replace("_", "-")


def _field_type(field):
    """(python type, optional?) of a dataclass field annotation."""
    annotation = field.type
    if isinstance(annotation, str):
        raise TypeError(
            f"Config field `{field.name}` has a string annotation {annotation!r}; "
            "do not use `from __future__ import annotations` in config modules."
        )
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def _parse_optional(kind):
    def parse(text):
        if text.lower() in ("none", ""):
            return None
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config_flags(parser, config_cls, *, group_title=None):
    """Add one flag per field of `config_cls` to `parser`."""
    group = parser.add_argument_group(group_title or config_cls.__name__)
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        kind, optional = _field_type(field)
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else field.default_factory()
        )
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})"
        if kind is bool:
            group.add_argument(
                _flag(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        choices = field.metadata.get("choices")
        group.add_argument(
            _flag(field.name),
            dest=field.name,
            type=_parse_optional(kind) if optional else kind,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=field.metadata.get("metavar"),
            help=help_text,
        )


def config_from_namespace(config_cls, namespace):
    """Build `config_cls` from the flags present in `namespace`."""
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    return config_cls(**values)


def config_to_dict(config):
    return dataclasses.asdict(config)


# Configuration fields that do not change what a run learns: where its files
# go, where it runs, and how its finished model is decoded, scored, sampled and
# exported. A finished ensemble member or a tuning project is reused with
# other values of these (`--candidates` added later, the search moved to a
# machine with GPUs and `--distribute mirrored`, the directory moved).
NON_LEARNING_FIELDS = frozenset({
    "output_dir", "cache_dir", "distribute", "export", "verbose",
    "beam_width", "num_examples", "candidates", "candidate_warps",
    "sample_prompt", "sample_length", "temperature",
})


def config_differences(saved, config, *, ignore=NON_LEARNING_FIELDS):
    """The fields where `config` differs from `saved`, its earlier JSON form.

    Args:
        saved: A configuration read back from JSON (a run's config.json, a
            search's search.json), maybe written before some fields existed:
            a field it lacks counts as that field's default.
        config: The configuration dataclass of this run.
        ignore: Field names not compared.

    Returns:
        `{field: (saved value, this run's value)}`, sorted by field; empty
        when they agree.
    """
    expected = json.loads(json.dumps(config_to_dict(config)))
    defaults = json.loads(json.dumps({
        f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING
    }))
    saved = {**defaults, **saved}
    return {
        key: (saved.get(key, "(missing)"), expected.get(key, "(missing)"))
        for key in sorted(set(saved) | set(expected))
        if key not in ignore and saved.get(key, "(missing)") != expected.get(key, "(missing)")
    }


def write_json(path, payload):
    """Write `payload` as JSON to `path` atomically (temp file, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
