"""Serving the champion with BentoML: raw vital-sign windows in, calibrated alarms and explanations out.

* `spec`: `ServeParams` and the `ServingSpec` a bento carries; `checks`: input checks and the `vitals_f32` codec;
  `arrow`: Arrow IPC batches; `schemas`: request and response models; `scorer`: the answers in the API's shapes
  (plain Python; the answer itself is `biostream.models.answer`'s);
* `batching`: adaptive batching; `asgi`: Content-Type routing; `service`: the thin BentoML layer.

Everything but `service` is tested without a server; `service` reads the BentoML model store at import.
"""

from biostream.serving.checks import pack_f32, too_much_missing, unpack_f32, vitals_array
from biostream.serving.schemas import Schemas
from biostream.serving.scorer import Scorer
from biostream.serving.spec import BENTO_MODEL, MLFLOW_MODEL_DIR, SPEC_KEY, ServeParams, ServingSpec, bundle_dir

__all__ = ["BENTO_MODEL", "MLFLOW_MODEL_DIR", "SPEC_KEY", "Schemas", "Scorer", "ServeParams", "ServingSpec",
           "bundle_dir", "pack_f32", "too_much_missing", "unpack_f32", "vitals_array"]
