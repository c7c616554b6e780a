"""Models. Each takes plain keyword arguments: its own settings plus the facts it needs from the
data (`in_shape`, `num_classes`, `vocab_size`), never a config object."""
