"""Input pipelines: vocabulary, text windows, audio features."""
