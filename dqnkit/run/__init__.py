"""A run and what it keeps: the hooks around the episode loop, the run's folder, its files and checkpoints, and
the signals and child processes that stop it cleanly."""
