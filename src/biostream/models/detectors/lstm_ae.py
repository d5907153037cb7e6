"""LSTM autoencoder (Keras 3 on TensorFlow) over the window's sequence view.

Input: (n, T, 2S): the scaled step means of S signals followed by their observed-mask (1 = the step had data). The
loss and the anomaly score are the reconstruction's mean squared error over observed steps only: missing values
never count. The Keras model is the model of record (what is saved, and what training, tuning and evaluation run);
the service runs an ONNX copy of it (`LSTMAutoencoderDetector.prepare_for_serving`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from biostream.models.detectors.base import BaseDetector, register

_BATCH = 4096
ORT_MAX_ROWS = 256  # after prepare_for_serving, batches up to this many windows run through ONNX Runtime


def _masked_mse(y_true, y_pred):
    import keras

    s = keras.ops.shape(y_pred)[-1]
    values, mask = y_true[..., :s], y_true[..., s:]
    err = keras.ops.square(values - y_pred) * mask
    return keras.ops.sum(err, axis=(1, 2)) / keras.ops.maximum(keras.ops.sum(mask, axis=(1, 2)), 1.0)


@register("lstm_ae")
class LSTMAutoencoderDetector(BaseDetector):
    """The encoder reads the values and their mask, the decoder reconstructs the S values; the score is the masked
    error per window, and `signal_errors` keeps it per signal for explanations.

    Training: Adam with a reduce-on-plateau learning-rate schedule, early stopping on a held-out fraction of the
    training windows (`validation_fraction`), and the best weights checkpointed and restored. Inference runs through
    a compiled `tf.function` in fixed-size batches, never `model.predict` (far slower per call: docs/benchmarks.md).
    """

    input_view = "sequence"
    explains = "signals"  # per-signal reconstruction error
    explain_method = "each signal's share of the masked reconstruction error (they sum to the score)"

    def __init__(self, units: int = 32, latent: int = 8, epochs: int = 20, batch_size: int = 256,
                 learning_rate: float = 3e-3, patience: int = 3, validation_fraction: float = 0.1,
                 max_windows: int = 20000, random_state: int = 0):
        self.units = units
        self.latent = latent
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_windows = max_windows
        self.random_state = random_state

    # --- model ------------------------------------------------------------------------------------
    def _build(self, steps: int, channels: int):
        import keras

        signals = channels // 2
        inp = keras.Input(shape=(steps, channels), name="values_and_mask")
        h = keras.layers.LSTM(self.units, name="encoder")(inp)
        z = keras.layers.Dense(self.latent, activation="tanh", name="latent")(h)
        r = keras.layers.RepeatVector(steps)(z)
        r = keras.layers.LSTM(self.units, return_sequences=True, name="decoder")(r)
        out = keras.layers.TimeDistributed(keras.layers.Dense(signals), name="reconstruction")(r)
        model = keras.Model(inp, out, name="lstm_autoencoder")
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss=_masked_mse)
        return model

    def _fit(self, X: np.ndarray, callbacks: Any = (), epoch_callback: Any = None, **kwargs: Any) -> None:
        """`callbacks`: extra Keras callbacks; `epoch_callback(epoch, logs)`: a plain function called after
        every epoch (how an Optuna pruner follows training without importing Keras)."""
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(self.random_state)
        tf.config.experimental.enable_op_determinism()
        rng = np.random.default_rng(self.random_state)
        if len(X) > self.max_windows:
            X = X[np.sort(rng.choice(len(X), self.max_windows, replace=False))]
        order = rng.permutation(len(X))
        n_val = max(1, int(len(X) * self.validation_fraction)) if len(X) >= 10 else 0
        val, train = X[order[:n_val]], X[order[n_val:]]
        model = self._build(X.shape[1], X.shape[2])
        with tempfile.TemporaryDirectory() as tmp:
            best = str(Path(tmp) / "best.weights.h5")
            monitor = "val_loss" if n_val else "loss"
            cbs = [
                keras.callbacks.EarlyStopping(monitor=monitor, patience=self.patience, restore_best_weights=True),
                keras.callbacks.ModelCheckpoint(best, monitor=monitor, save_best_only=True, save_weights_only=True),
                keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, self.patience // 2)),
                *callbacks,
            ]
            if epoch_callback is not None:
                cbs.append(keras.callbacks.LambdaCallback(on_epoch_end=epoch_callback))
            history = model.fit(
                train, train, validation_data=(val, val) if n_val else None, epochs=self.epochs,
                batch_size=self.batch_size, shuffle=True, verbose=0, callbacks=cbs,
            )
            model.load_weights(best)
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        self._set_model(model)

    def _set_model(self, model) -> None:
        import tensorflow as tf

        self.model_ = model
        steps, channels = model.input_shape[1], model.input_shape[2]
        self._infer = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, steps, channels), tf.float32)],
            reduce_retracing=True,
        )

    def prepare_for_serving(self) -> None:
        """Convert the Keras model to ONNX (tf2onnx) once and open an ONNX Runtime session on one thread: batches
        of up to `ORT_MAX_ROWS` windows then run through it, without TensorFlow's per-call overhead. Reconstructions
        equal TensorFlow's to float32 rounding (~2e-7; a test holds the scores within 1e-6)."""
        self._check_fitted()
        if getattr(self, "_ort", None) is not None and self._ort[0] is self.model_:
            return
        import logging

        import onnxruntime
        import tensorflow as tf
        import tf2onnx

        logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # it logs every optimisation pass at INFO
        steps, channels = self.model_.input_shape[1], self.model_.input_shape[2]
        spec = (tf.TensorSpec((None, steps, channels), tf.float32, name="values_and_mask"),)
        proto, _ = tf2onnx.convert.from_keras(self.model_, input_signature=spec, opset=17)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a served batch is small; the other core answers HTTP
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        self._ort = (self.model_, session, session.get_inputs()[0].name)

    # --- scoring ----------------------------------------------------------------------------------
    def _reconstruct(self, X: np.ndarray) -> np.ndarray:
        ort = getattr(self, "_ort", None)
        if ort is not None and ort[0] is self.model_ and len(X) <= ORT_MAX_ROWS:
            return ort[1].run(None, {ort[2]: np.ascontiguousarray(X, dtype=np.float32)})[0].astype(np.float64)
        out = [self._infer(X[i : i + _BATCH]).numpy() for i in range(0, len(X), _BATCH)]
        return np.concatenate(out).astype(np.float64)

    def _masked_errors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared reconstruction errors (0 where missing) and the observed-mask, both (n, T, S)."""
        s = X.shape[2] // 2
        values, mask = X[..., :s].astype(np.float64), X[..., s:].astype(np.float64)
        return (values - self._reconstruct(X)) ** 2 * mask, mask

    def signal_errors(self, X: np.ndarray) -> np.ndarray:
        """(n, S) mean squared reconstruction error per signal over observed steps (0 if none)."""
        self._check_fitted()
        err, mask = self._masked_errors(self._check_input(X))
        return err.sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)

    def _explain(self, X: np.ndarray) -> np.ndarray:
        """Each signal's share of the score: its squared errors over all observed steps (they sum to it)."""
        err, mask = self._masked_errors(X)
        return err.sum(axis=1) / np.maximum(mask.sum(axis=(1, 2)), 1.0)[:, None]

    def _score(self, X: np.ndarray) -> np.ndarray:
        err, mask = self._masked_errors(X)
        return err.sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1.0)

    # --- persistence ------------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> None:
        self.model_.save(folder / "model.keras")

    def _load_state(self, folder: Path) -> None:
        import keras

        self._set_model(keras.saving.load_model(folder / "model.keras", custom_objects={"_masked_mse": _masked_mse},
                                                compile=False))

    def __getstate__(self) -> dict[str, Any]:  # compiled function and ONNX session are rebuilt, never pickled
        state = dict(self.__dict__)
        state.pop("_infer", None)
        state.pop("_ort", None)
        return state
