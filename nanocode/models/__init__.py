"""Models (Flax NNX): the GPT, its blocks, attention implementations and the KV-cache inference engine."""
