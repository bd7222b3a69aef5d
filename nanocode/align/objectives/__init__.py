"""Preference objectives, one small class each, registered as `preference_objective`.

Formulas follow TRL's semantics (see anchors.md section 4). Every objective receives per-sequence log-probs summed
over completion tokens (and token counts) and returns per-example losses plus metrics; it declares what it needs
(`needs_reference`, `paired`, `needs_mismatched_kl`) so the trainer computes nothing else.

`grpo.py` holds the policy-gradient objective of the RL stage (kind `rl_objective`): per-token losses over sampled
episodes with group-relative advantages.
"""
