"""The useful line of a TensorFlow error raised by an export's graph."""

import re

_BOILERPLATE = ("Graph execution error", "Detected at node", "<stack traces", "Stack trace",
                "dummy_", "[[", "Op:")


def op_error_message(error):
    """The useful line of a TensorFlow error (an `OpError`, e.g. the
    InvalidArgumentError of a failed check in an export's graph): the
    check's own message and values, without TensorFlow's boilerplate."""
    text = getattr(error, "message", str(error))
    # The assertion's data items; the first is the message. An item may hold
    # "]" (e.g. a character named in the message), so it ends at the next
    # item or the line's end.
    match = re.search(r"assertion failed: (\[.*)", text)
    if match:
        items = re.findall(r"\[(.*?)\](?= \[|$)", match.group(1))
        message = items[0].replace("\\'", "'").rstrip(" .")
        # tf.debugging.assert_* add "x (name) = ", [values], "y (...) = ", [values].
        values = [items[i + 1] for i in range(1, len(items) - 1) if re.fullmatch(r"[xy] \(.*\) = ", items[i])]
        return message + (f" (got {' against '.join(values)})" if values else "")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_BOILERPLATE)]
    message = lines[0] if lines else text
    return re.sub(r"\s*\[\[.*$|\s*\[Op:.*$", "", message) or text
