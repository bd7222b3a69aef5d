"""Plugins that live outside the package (used by tests): components registered by name, no nanocode file changed."""
