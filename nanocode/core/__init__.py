"""The bottom layer: registry, interfaces, config, workspace, checkpoint and mesh. Imports no other nanocode package."""

from nanocode.core import kinds as kinds  # creates the registries of every component kind
