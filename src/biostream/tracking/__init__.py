"""The MLflow model registry side: the logged pyfunc model (`pyfunc`), what it needs installed
(`requirements`), and champion selection (`registry`, `register`)."""
