"""Alignment: the constitution, synthetic critique/revision data, preference datasets and objectives."""
