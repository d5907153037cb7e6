"""What every other package stands on: typed configs and params (`config`), atomic writes (`io`), process
set-up for entry points (`runtime`: logging, telemetry off) and the MLflow store (`tracking`)."""
