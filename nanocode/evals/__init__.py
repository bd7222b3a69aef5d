"""Evaluation: CORE, code execution (HumanEval) and the agentic suite, and the run report."""
