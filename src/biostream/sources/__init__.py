"""Where recordings come from: the synthetic cohort (`synthetic`) and real cases from VitalDB (`vitaldb`).
Each turns its recordings into per-second canonical signals that `biostream.data.dataset.build_dataset`
labels and splits."""
