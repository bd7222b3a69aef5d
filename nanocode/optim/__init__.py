"""Optimizers (on optax): Muon for block matrices + AdamW for embeddings, plain AdamW, and LR schedules."""
