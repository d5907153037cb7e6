"""A synthetic cohort of monitored patients' vital signs with injected, labelled anomalies (docs/data.md).

Each patient is a 1 Hz recording from a small physiological model (`configs/synthetic.yaml`), in the operating room
or the ICU; anomalies are injected at non-overlapping times, clinical episodes acting on the latent physiology (so
coupled signals follow), statistical anomalies and artefacts on the measured signal. Patient i's recording depends
only on the seed and i, not on the cohort size.

* `params`: `CohortParams` (params.yaml: generate) and `Physiology` (configs/synthetic.yaml); `blocks`: pure
  building blocks (OU process, lags, trapezoids, event placement, cuff hold); `events`: which events a patient gets,
  and when; `patient`: one patient, step by step; `cohort`: the whole cohort."""

from biostream.sources.synthetic.blocks import hold_samples, low_pass, ou_process, place_events, trapezoid
from biostream.sources.synthetic.cohort import Cohort, generate_cohort, patient_ids
from biostream.sources.synthetic.params import (
    ARTEFACT_KINDS,
    CLINICAL_KINDS,
    ICU,
    OPERATING_ROOM,
    SETTINGS,
    STATISTICAL_KINDS,
    AnomalySpec,
    CohortParams,
    ImpedanceRR,
    Physiology,
)
from biostream.sources.synthetic.patient import PatientRecording, simulate_patient

__all__ = [
    "ARTEFACT_KINDS", "CLINICAL_KINDS", "ICU", "OPERATING_ROOM", "SETTINGS", "STATISTICAL_KINDS", "AnomalySpec",
    "Cohort", "CohortParams", "ImpedanceRR", "PatientRecording", "Physiology", "generate_cohort", "hold_samples",
    "low_pass", "ou_process", "patient_ids", "place_events", "simulate_patient", "trapezoid",
]
