"""Labelled datasets, whatever their source: the tables and their schema (`schema`), clinical-alarm labels
(`labels`), patient-level splits (`splits`), and building, writing and reading a dataset (`dataset`)."""
