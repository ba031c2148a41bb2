"""The base of this project's TFDS builders: data made or found on this machine."""

import tensorflow_datasets as tfds


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A `GeneratorBasedBuilder` that downloads nothing (no URLs, no checksums file)."""

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls):
        # Nothing is downloaded. TFDS would otherwise look for a checksums file
        # beside the module, which needs the optional `importlib_resources`.
        return None
