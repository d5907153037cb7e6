"""The models and how they are judged: detectors behind one contract (`detectors`), alarm post-processing
(`alarms`), event metrics (`metrics`) and the objective (`objective`), threshold calibration on validation
patients (`calibration`), and the self-contained `ModelBundle` that training, evaluation, MLflow and serving share
(`bundle`)."""
