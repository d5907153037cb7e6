"""Hyperparameter search: what a study searches (`space`: search spaces and `params.yaml: tune`) and the study
itself (`study`: Optuna on the validation patients, recorded in MLflow, identified by its inputs and code)."""
