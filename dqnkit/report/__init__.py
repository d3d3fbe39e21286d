"""What a run shows: its logs and learning curve, the videos, the progress table, and greedy evaluation."""
