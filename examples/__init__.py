"""Worked examples of nanocode's three extension paths (docs/extending.md), each a plugin outside the package:

    examples/ln_dpo.py       a preference objective (length-normalised DPO), `Alignment.objective = @ln_dpo()`
    examples/curriculum.py   a data curriculum (code share 0.1 -> 0.5 over the run), `Experiment.data = ...`
    examples/swiglu.py       a model fork (the GPT with SwiGLU MLPs), `Experiment.model = 'gpt_swiglu'`

The tests import these files (tests/test_objectives.py, test_align.py, test_mixture.py, test_gpt_fork.py).
"""
