"""TF Serving's batching parameters file (`--batching_parameters_file`).

tensorflow_model_server reads a text-format `BatchingParameters`
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto) when
`--enable_batching` is on:

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 1000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 2 }

`tensorflow-serving-api` does not ship that proto, so its fields are declared
here (text format needs their names and types, not their numbers). What this
server's batcher does with each is in `read_batching_parameters`.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

from serving.model_config import parse_text_proto_file

_INT64 = ".google.protobuf.Int64Value"
_FIELDS = [  # (name, type or wrapper, repeated), in session_bundle_config.proto's order
    ("max_batch_size", _INT64, False),
    ("batch_timeout_micros", _INT64, False),
    ("max_enqueued_batches", _INT64, False),
    ("num_batch_threads", _INT64, False),
    ("thread_pool_name", ".google.protobuf.StringValue", False),
    ("allowed_batch_sizes", descriptor_pb2.FieldDescriptorProto.TYPE_INT64, True),
    ("pad_variable_length_inputs", descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, False),
    ("enable_large_batch_splitting", descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, False),
    ("max_execution_batch_size", _INT64, False),
]


def _batching_parameters_class():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="rnn_pipeline_batching_parameters.proto", package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    message = file.message_type.add(name="BatchingParameters")
    for number, (name, kind, repeated) in enumerate(_FIELDS, start=1):
        field = message.field.add(name=name, number=number)
        field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                       else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
        if isinstance(kind, str):
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = kind
        else:
            field.type = kind
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


class BatchingConfigError(ValueError):
    """A batching parameters file this server cannot honour; the message names the file and field."""


def read_batching_parameters(path):
    """The batcher settings of a TF Serving batching parameters file.

    Returns a dict with `max_batch_size`, `batch_timeout_s`,
    `max_concurrent_batches` (`num_batch_threads`: batches run at once) and
    `max_enqueued_batches` (requests beyond that many batches' worth waiting
    are refused with 503, as TF Serving refuses them when its queue is full),
    each None when the file leaves it unset. `thread_pool_name` is a label
    and `pad_variable_length_inputs` changes nothing here (uploads are always
    padded into one batch, and `:predict` requests of other shapes run in
    batches of their own instead of failing). Refused, naming the file and
    the field: `allowed_batch_sizes`, `enable_large_batch_splitting`,
    `max_execution_batch_size`, a value below 1, fields this server does not
    know, and text that does not parse.
    """
    known = ", ".join(name for name, _, _ in _FIELDS)
    parameters = parse_text_proto_file(
        path, _batching_parameters_class()(), "--batching_parameters_file", BatchingConfigError,
        f"fields among {known}, e.g. max_batch_size {{ value: 32 }}")
    where = f"--batching_parameters_file {path}"
    given = {field.name for field, _ in parameters.ListFields()}  # set, non-empty, or true
    for name in ("allowed_batch_sizes", "enable_large_batch_splitting", "max_execution_batch_size"):
        if name in given:
            raise BatchingConfigError(
                f"{where}: {name} is not implemented by this server's batcher (batches keep the size of the "
                "requests that queued, and are never split); remove it.")
    settings = {}
    for name, key in (("max_batch_size", "max_batch_size"), ("batch_timeout_micros", "batch_timeout_s"),
                      ("num_batch_threads", "max_concurrent_batches"),
                      ("max_enqueued_batches", "max_enqueued_batches")):
        if name not in given:
            settings[key] = None
            continue
        value = getattr(parameters, name).value
        least = 0 if name == "batch_timeout_micros" else 1
        if value < least:
            raise BatchingConfigError(f"{where}: {name} {{ value: {value} }}; expected a value of at least {least}.")
        settings[key] = value / 1e6 if name == "batch_timeout_micros" else int(value)
    return settings
