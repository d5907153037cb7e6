"""The service's live monitoring: a thread checks the last `stream.monitor.period_s` of the store against the
bundle's training reference every `every_s` (`biostream.monitoring.live.Monitor`) and sets Prometheus gauges on
`/metrics` (BentoML's registry, multiprocess-safe: `bentoml.metrics`); the newest state answers `GET /monitoring`
and heads the board."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from biostream.core.params import MonitorParams
from biostream.monitoring.live import Monitor
from biostream.reporting.case import limits_of

_log = logging.getLogger("biostream")


class Gauges:
    """The monitoring gauges (created once per process)."""

    def __init__(self) -> None:
        import bentoml

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            return bentoml.metrics.Gauge(name=name, documentation=doc, labelnames=labels,
                                         multiprocess_mode="mostrecent")

        self.psi = gauge("biostream_drift_psi", "population stability index of a signal against the training "
                                                "reference (rolling period)", ["signal"])
        self.missing = gauge("biostream_missing_fraction", "share of the period's seconds without a value",
                             ["signal"])
        self.rate = gauge("biostream_alarm_episodes_per_bed_hour", "alarm episodes opened per bed-hour (class "
                                                                   "advisory: advisory episodes, never alarms)",
                          ["alarm_class"])
        self.recall = gauge("biostream_live_recall", "share of the bedside rules' events an alarm caught", [])
        self.alert = gauge("biostream_monitoring_alert", "1 while the check raises an alert", ["check"])
        self.alerts = gauge("biostream_monitoring_alerts", "alerts raised by the newest check", [])
        self._alerting: set[str] = set()

    def publish(self, state: dict[str, Any]) -> None:
        nan = float("nan")
        for s, v in state["signals"].items():
            self.psi.labels(signal=s).set(nan if v["psi"] is None else v["psi"])
            self.missing.labels(signal=s).set(nan if v["missing"] is None else v["missing"])
        for c, r in state["alarms_per_bed_hour"].items():
            self.rate.labels(alarm_class=c).set(nan if r is None else r)
        recall = state["recall"]["recall"]
        self.recall.set(nan if recall is None else recall)
        now = {a["check"] for a in state["alerts"]}
        for check in now | self._alerting:
            self.alert.labels(check=check).set(1.0 if check in now else 0.0)
        self._alerting = now
        self.alerts.set(len(now))


def start_monitor(store: Any, bundle: Any, spec: Any, params: MonitorParams, model: dict[str, Any]) -> Monitor:
    """A Monitor over the service's store, checked every `params.every_s` in a daemon thread (a failed check is
    logged and tried again)."""
    gauges = Gauges()
    expected = None if spec.advisor is None else spec.advisor.episodes_per_hour
    monitor = Monitor(store, bundle.reference, spec.signals, limits_of(bundle), params, model, gauges.publish,
                      advisory_per_hour=expected)

    def loop() -> None:
        while True:
            try:
                monitor.run_once()
            except Exception:  # a busy or unreachable store: logged, tried again at the next check
                _log.exception("the monitoring check failed; tried again in %d s", params.every_s)
            time.sleep(params.every_s)

    threading.Thread(target=loop, name="monitoring", daemon=True).start()
    return monitor
