"""Which events a patient gets, and when: kinds drawn by weight at the configured rates, placed without
overlap after the induction warm-up."""

from __future__ import annotations

from typing import Any

import numpy as np

from biostream.sources.synthetic.blocks import place_events
from biostream.sources.synthetic.params import BP_SIGNALS, MAIN_SIGNAL, AnomalySpec, CohortParams, Physiology


def draw_events(
    rng: np.random.Generator,
    phys: Physiology,
    params: CohortParams,
    n: int,
    present: set[str],
    bp_mode: str,
) -> list[dict[str, Any]]:
    hours = n / 3600.0

    def applicable(spec: AnomalySpec) -> tuple[str, ...]:
        """Signals the anomaly can act on for this patient (empty: the kind is not applicable)."""
        if spec.category == "clinical":
            return spec.signals if MAIN_SIGNAL[spec.kind] in present else ()
        if spec.kind == "line_flush":
            return spec.signals if bp_mode == "arterial" else ()
        usable = [s for s in spec.signals if s in present and not (bp_mode == "nibp" and s in BP_SIGNALS)]
        return tuple(usable)

    plans: list[dict[str, Any]] = []
    for rate, categories in (
        (params.anomalies_per_hour, ("clinical", "statistical")),
        (params.artefacts_per_hour, ("artefact",)),
    ):
        specs = [s for s in phys.anomalies.values() if s.category in categories and applicable(s)]
        if not specs:
            continue
        weights = np.array([s.weight for s in specs])
        count = rng.poisson(rate * hours)
        for i in rng.choice(len(specs), size=count, p=weights / weights.sum()):
            spec = specs[i]
            sigs = applicable(spec)
            plan: dict[str, Any] = {"spec": spec}
            if spec.category == "clinical":
                ramp_up = int(spec.draw(rng, "ramp_s"))
                plateau = int(spec.draw(rng, "plateau_s"))
                ramp_down = int(spec.draw(rng, "ramp_s"))
                plan.update(shape=(ramp_up, plateau, ramp_down), duration=ramp_up + plateau + ramp_down)
                plan["signals"] = tuple(s for s in sigs if s in present)
            else:
                plan["duration"] = max(1, int(round(spec.draw(rng, "duration_s"))))
                plan["signals"] = sigs if spec.category == "artefact" else (str(rng.choice(sigs)),)
            plans.append(plan)
    order = rng.permutation(len(plans))
    plans = [plans[i] for i in order]
    starts = place_events(
        rng, n, np.array([p["duration"] for p in plans], dtype=np.int64), params.warmup_s, params.min_gap_s
    )
    for plan, start in zip(plans, starts, strict=False):
        plan["start"] = int(start)
    return [p for p in plans if "start" in p]

