"""In-graph twins of `Vocabulary.encode` and `Vocabulary.decode`."""

import tensorflow as tf


class VocabularyTables:
    """String <-> id conversion inside a TensorFlow graph, from a `Vocabulary`.

    `encode` splits UTF-8 strings into code points and maps each to its id
    (unknown characters to `unk_id`, as `Vocabulary.encode` does); `decode`
    maps ids back to characters and joins them, dropping padding/blank and
    any id outside the vocabulary (such as the -1 fill of CTC decoders), and
    writing "?" for `unk_id`, as `Vocabulary.decode` does. The lookup table is
    a TensorFlow resource: call `track(archive)` before exporting.

    Args:
        vocabulary: A `pipelines.vocabulary.Vocabulary`.

    Example:

    ```python
    tables = VocabularyTables(vocab)
    ids, lengths = tables.encode(tf.constant(["hello", "hi"]))  # (2, 5), (2,)
    tables.decode(ids)                                           # [b"hello", b"hi"]
    ```
    """

    def __init__(self, vocabulary):
        self.vocabulary = vocabulary
        characters = list(vocabulary.characters)
        ids = [vocabulary.encode(c)[0] for c in characters]
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(characters, tf.string), tf.constant(ids, tf.int64)
            ),
            default_value=vocabulary.unk_id,
        )
        tokens = [""] * vocabulary.size
        tokens[vocabulary.unk_id] = "?"
        for char, i in zip(characters, ids):
            tokens[i] = char
        tokens[vocabulary.pad_id] = ""
        self.tokens = tf.constant(tokens, tf.string)

    def track(self, archive):
        """Make `archive` (a `keras.export.ExportArchive`) save the table."""
        archive.track(self.table)

    def encode(self, text):
        """Ids `(batch, time)` int32 padded with `pad_id`, lengths `(batch,)`."""
        chars = tf.strings.unicode_split(text, "UTF-8")
        ids = tf.cast(self.table.lookup(chars.flat_values), tf.int32)
        ids = chars.with_flat_values(ids)
        return (
            ids.to_tensor(default_value=self.vocabulary.pad_id),
            tf.cast(ids.row_lengths(), tf.int32),
        )

    def decode(self, ids):
        """Strings `(batch,)` of ids `(batch, time)`; see the class docstring."""
        ids = tf.cast(ids, tf.int32)
        known = (ids >= 0) & (ids < self.vocabulary.size)
        ids = tf.where(known, ids, self.vocabulary.pad_id)
        return tf.strings.reduce_join(tf.gather(self.tokens, ids), axis=-1)
