"""``tune.py``: an Optuna study over ``main.Config``: the command, space, study, trial, report and confirmation."""
