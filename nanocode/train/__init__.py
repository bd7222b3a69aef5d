"""Trainers: the functional train/eval step, bits per byte, MFU accounting, logging, and the pretraining loop."""
