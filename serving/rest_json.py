"""TF Serving's REST JSON <-> tensors: the `:predict` request and response.

Follows https://www.tensorflow.org/tfx/serving/api_rest: a request holds an
optional `signature_name` and either `instances` (row format: a list with one
entry per batch item, each an object of named inputs, or a bare value when
the signature has one input) or `inputs` (columnar: an object of named
tensors, or a bare tensor when the signature has one input). Strings are
JSON strings; binary strings are `{"b64": "..."}`. Row requests are answered
with `predictions` (a list of per-item values, or of objects when there are
several outputs), columnar ones with `outputs` (the tensor, or an object of
named tensors). Other fields of the request are ignored, as TF Serving ignores
them; named inputs the signature does not have are refused (TF Serving ignores
those in `inputs`: a `seed` sent to a signature without one would be dropped
silently). Output strings that are not UTF-8, or whose output name ends
in `_bytes`, come back as `{"b64": "..."}`. NaN and Infinity are accepted and
written as JSON tokens, as TF Serving does. JSON `true`/`false` are for DT_BOOL
inputs only: among a float or int input's numbers they are refused, as TF
Serving refuses them (numpy alone would read them as 1 and 0).
"""

import base64
import binascii
import json
import re

import numpy as np
import tensorflow as tf

from serving.model_store import dtype_name


class RequestError(ValueError):
    """A bad request: `status` is the HTTP status, the message says why."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def parse_json_body(body):
    """The JSON object of a request body, or a `RequestError`."""
    try:
        request = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError("Request body is not UTF-8 encoded JSON.") from None
    except json.JSONDecodeError as error:
        raise RequestError(f"Malformed JSON in request body: {error}.") from None
    except RecursionError:
        raise RequestError("Request body JSON is nested too deeply.") from None
    if not isinstance(request, dict):
        raise RequestError(
            f"Request body must be a JSON object, got {type(request).__name__}."
        )
    return request


def _string_leaves(value, name):
    """Nested lists of str / {"b64"} leaves -> the same nesting of bytes."""
    if isinstance(value, list):
        return [_string_leaves(v, name) for v in value]
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f'Input "{name}" holds a string that is not valid Unicode (a lone surrogate).'
            ) from None
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        # As TF Serving's decoder (absl::Base64Unescape): whitespace (line
        # breaks of MIME-style base64) is skipped, the padding is optional.
        text = re.sub(r"[ \t\n\v\f\r]", "", value["b64"])
        if not text.endswith("="):
            text += "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                f'Input "{name}" holds an invalid base64 value in {{"b64": ...}}.'
            ) from None
    raise RequestError(
        f'Input "{name}" must hold strings (or {{"b64": ...}} objects), got '
        f"{json.dumps(value)[:60]}."
    )


def _holds_bool(value):
    """Whether a JSON value (a number or nested lists of them) holds a true or false."""
    if type(value) is bool:
        return True
    if not isinstance(value, list):
        return False
    if value and not isinstance(value[0], list):  # a rectangular array's innermost list
        return bool in map(type, value)
    return any(_holds_bool(v) for v in value)


def _shape_of(value, name):
    """Shape of a rectangular nested list; RequestError when ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = [_shape_of(v, name) for v in value]
    if any(s != inner[0] for s in inner):
        raise RequestError(f'Input "{name}" is ragged: its nested lists have different lengths.')
    return (len(value), *inner[0])


def to_array(value, spec, name):
    """Convert one JSON tensor to a numpy array of `spec`'s dtype and shape."""
    dtype = spec.dtype
    expected = f"{dtype_name(dtype)} of shape {_shape_text(spec.shape)}"
    if dtype == tf.string:
        nested = _string_leaves(value, name)
        shape = _shape_of(nested, name)
        array = np.empty(shape, dtype=object)
        if shape == ():
            array[()] = nested
        else:
            array[...] = _fill_object_array(nested, shape)
    else:
        if isinstance(value, dict):
            raise RequestError(f'Input "{name}" must be a {expected}, got a JSON object.')
        try:
            array = np.asarray(value)
        except ValueError:
            raise RequestError(f'Input "{name}" is ragged: its nested lists have different lengths.') from None
        kind = array.dtype.kind
        if kind == "O" and np.dtype(dtype.as_numpy_dtype).kind in "iu" and all(
                type(v) is int for v in array.ravel()):  # beyond 64 bits, which numpy keeps as objects
            raise RequestError(f'Input "{name}" holds integers outside the range of {dtype_name(dtype)}.')
        accepted = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}[np.dtype(dtype.as_numpy_dtype).kind]
        if array.size and kind in "fiu" and accepted != "b" and _holds_bool(value):
            # numpy reads [1.5, true] as [1.5, 1.0]; TF Serving refuses a JSON true or
            # false for a numeric tensor ("is not of expected type"), as a number for DT_BOOL.
            raise RequestError(
                f'Input "{name}" must be a {expected}, got a boolean (JSON true or false) among its numbers.'
            )
        if array.size and kind not in accepted:
            got = {"U": "strings", "O": "mixed or nested values", "b": "booleans", "f": "non-integer numbers"}.get(kind, array.dtype.name)
            raise RequestError(f'Input "{name}" must be a {expected}, got {got}.')
        if np.dtype(dtype.as_numpy_dtype).kind in "iu" and array.size:
            info = np.iinfo(dtype.as_numpy_dtype)
            if array.min() < info.min or array.max() > info.max:
                raise RequestError(f'Input "{name}" holds integers outside the range of {dtype_name(dtype)}.')
        array = array.astype(dtype.as_numpy_dtype)
    _check_shape(array.shape, spec, name)
    if spec.shape.rank and spec.shape[0] is None and array.shape[0] == 0:
        raise RequestError(f'Input "{name}" has an empty batch; send at least one item.')
    return array


def _fill_object_array(nested, shape):
    flat = np.empty(int(np.prod(shape)), dtype=object)

    def walk(value, start):
        if not isinstance(value, list):
            flat[start] = value
            return start + 1
        for v in value:
            start = walk(v, start)
        return start

    walk(nested, 0)
    return flat.reshape(shape)


def _shape_text(shape):
    if shape.rank is None:
        return "(any)"
    dims = ["batch" if i == 0 and d is None else ("any" if d is None else str(d))
            for i, d in enumerate(shape.as_list())]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _check_shape(shape, spec, name):
    if spec.shape.rank is None:
        return
    expected = spec.shape.as_list()
    if len(shape) != len(expected) or any(
        e is not None and e != s for e, s in zip(expected, shape)
    ):
        hint = ""
        if not expected and len(shape) == 1:
            hint = (' A scalar input cannot be sent in the row ("instances") format, '
                    'which gives every input a batch dimension: use the columnar '
                    '"inputs" format.')
        raise RequestError(
            f'Input "{name}" must have shape {_shape_text(spec.shape)}, got '
            f"{tuple(shape)}.{hint}"
        )


def parse_predict_request(request, signatures, default="serving_default"):
    """Decode a `:predict` request object.

    Args:
        request: The parsed JSON object of the request body.
        signatures: `{name: Signature}` of the served version.
        default: The signature used when `signature_name` is absent or "".

    Returns:
        `(signature, {input name: numpy array}, row_format)`.

    Raises:
        RequestError: with the reason, for every malformed request.
    """
    name = request.get("signature_name", default)
    if not isinstance(name, str):
        raise RequestError(f"`signature_name` must be a string, got {json.dumps(name)}.")
    name = name or default  # "" is the default signature, as in TF Serving
    if name not in signatures:
        raise RequestError(
            f'Serving signature name: "{name}" not found in signature def; '
            f"available: {sorted(signatures)}."
        )
    signature = signatures[name]
    specs = signature.inputs
    has_rows, has_columns = "instances" in request, "inputs" in request
    if has_rows == has_columns:
        raise RequestError(
            'Request must hold exactly one of "instances" (row format) or '
            f'"inputs" (columnar format), got {sorted(k for k in request if k != "signature_name")}.'
        )
    # Other fields are ignored, as TF Serving's json_tensor.cc ignores them.

    if has_rows:
        rows = request["instances"]
        if not isinstance(rows, list):
            raise RequestError('"instances" must be a list with one entry per batch item.')
        if not rows:
            raise RequestError('"instances" is empty; send at least one instance.')
        named = all(isinstance(r, dict) and not set(r) == {"b64"} for r in rows)
        if named:
            columns = {}
            for index, row in enumerate(rows):
                _check_names(set(row), specs, name, f"instance {index}")
                for key, value in row.items():
                    columns.setdefault(key, []).append(value)
        elif len(specs) == 1:
            columns = {next(iter(specs)): rows}
        else:
            raise RequestError(
                f'Signature "{name}" has {len(specs)} inputs {sorted(specs)}: each '
                "instance must be an object naming them."
            )
    else:
        columns = request["inputs"]
        if not (isinstance(columns, dict) and not set(columns) == {"b64"}):
            if len(specs) != 1:
                raise RequestError(
                    f'Signature "{name}" has {len(specs)} inputs {sorted(specs)}: '
                    '"inputs" must be an object naming them.'
                )
            columns = {next(iter(specs)): columns}
        _check_names(set(columns), specs, name, '"inputs"')
    try:
        arrays = {key: to_array(columns[key], specs[key], key) for key in specs}
    except RecursionError:
        raise RequestError("Request inputs are nested too deeply.") from None
    return signature, arrays, has_rows


def _check_names(given, specs, signature_name, where):
    missing = sorted(set(specs) - given)
    extra = sorted(given - set(specs))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise RequestError(
            f"{where} of signature \"{signature_name}\": {' and '.join(parts)}; "
            f"expected {sorted(specs)}."
        )


def _to_json_value(array, name):
    if array.dtype == object:
        binary = name.endswith("_bytes")

        def convert(value):
            if isinstance(value, bytes):
                if not binary:
                    try:
                        return value.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                return {"b64": base64.b64encode(value).decode("ascii")}
            return value

        flat = [convert(v) for v in array.reshape(-1)]
        if array.ndim == 0:
            return flat[0]
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def format_predict_response(outputs, row_format):
    """The response object for `{output name: numpy array}` outputs."""
    names = sorted(outputs)
    if not row_format:
        values = {n: _to_json_value(outputs[n], n) for n in names}
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    sizes = {n: (outputs[n].shape[0] if outputs[n].ndim else None) for n in names}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise RequestError(
            f"The outputs have different batch sizes {sizes}, which the row "
            '("instances") format cannot express; use the columnar "inputs" format.'
        )
    values = {n: _to_json_value(outputs[n], n) for n in names}
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    batch = next(iter(sizes.values()))
    return {"predictions": [{n: values[n][i] for n in names} for i in range(batch)]}


def dumps(payload):
    """JSON text with NaN/Infinity tokens allowed, as TF Serving writes them."""
    return json.dumps(payload, allow_nan=True, ensure_ascii=False, separators=(",", ":"))
