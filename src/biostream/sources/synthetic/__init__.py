"""A synthetic cohort of monitored patients' vital signs with injected, labelled anomalies.

Each patient is a 1 Hz recording built from a small physiological model (`configs/synthetic.yaml`), monitored
in one of two settings: anaesthetised in the operating room (every signal; arterial line or cuff), or in the
ICU (HR, SpO2 and impedance respiration only, breathing spontaneously; `generate.icu_fraction`). Each has
patient-specific baselines drawn for its setting; slow Ornstein-Uhlenbeck fluctuation; a shared latent
arterial pressure that drives SBP, DBP and MAP; a baroreflex (HR rises, after a lag, as MAP falls); EtCO2
coupled to ventilation; anaesthesia induction (operating room) and slow temperature drift; measurement noise; cuff
pressures held between cycles for patients without an arterial line; an impedance respiration rate held between
refreshes, with missed breaths and drop-outs (ICU); unlabelled missing stretches. Anomalies are then
injected at non-overlapping times: clinical episodes act on the latent physiology (so coupled signals
follow), statistical anomalies and artefacts act on the measured signal.

* `params`: `CohortParams` (params.yaml: generate) and `Physiology` (configs/synthetic.yaml);
* `blocks`: pure building blocks (OU process, lags, trapezoids, event placement, cuff hold);
* `events`: which events a patient gets, and when;
* `patient`: one patient, step by step; `cohort`: the whole cohort.

Patient i's recording depends only on the seed and i, not on the cohort size.
"""

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
