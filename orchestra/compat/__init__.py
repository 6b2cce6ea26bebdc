"""Every use of another library's private API, one ``<library>_compat.py`` module per library.

Nothing else in orchestra may import a private module or name of hydra, omegaconf, lightning, deepspeed, submitit
or wandb (``tests/compat/test_private_api_fenced.py`` checks it); callers import only the small named functions
these modules export. Each module's docstring says what the public API lacks and which versions were tested;
pyproject bounds those libraries below the next release line not yet tested, and ``tests/compat`` fails with one
line naming the installed version when a private name moves. launch's own is ``launch/submitit_compat.py``.
"""
