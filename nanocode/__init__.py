"""nanocode: train your own agentic coding model end to end in JAX.

Layers: `core` (registry, interfaces, config, checkpoint, mesh) <- `data`, `models`, `optim` <- trainers, `align`,
`agents` <- `cli`. `nanocode.registry` is the plain-Python way in: `nanocode.registry.get("preference_objective",
"ipo")` loads the built-in components on first use.
"""

__version__ = "0.1.0"
