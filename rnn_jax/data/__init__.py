"""Data: synthetic long-lag tasks (`synthetic`), character corpora (`text`), the real-data
task loaders (`tasks`), all read through `tables.load_table` (local files or the hub), token
vocabularies (`vocab`) and fixed-shape batches (`batches`)."""
