"""A run: the hooks around the episode loop, its folder, files and checkpoints, and the signals that stop it cleanly."""
