"""Trained models out of the framework: `nanocode export --format hf` (a transformers NanoChatForCausalLM)."""
