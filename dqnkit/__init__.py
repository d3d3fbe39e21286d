"""Everything around the textbook DQN of ``agent.py``, ``nnetwork.py`` and ``main.py``.

One module per concern: the command line, files and training state, videos, logs and plots,
evaluation, the options beyond the original DQN, and the NumPy fast path. The three top-level
files never import this package's options or fast path; ``main.py`` uses the rest.
"""
