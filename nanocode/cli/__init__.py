"""The `nanocode` command: the only layer that imports every other package."""
