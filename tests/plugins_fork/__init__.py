"""A research fork that lives outside the package: new model parts registered by name, no nanocode file changed."""
