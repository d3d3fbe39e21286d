"""``tune.py``: an Optuna study over ``main.Config``; the command, the search space, the study, one trial,
the report and the confirmation of the best trials."""
