"""The wire protocols as pure functions: bytes and JSON in, numpy out (and back), typed by the model's
signature (api.model.signature) and the limits in api.settings. No Flask, no TensorFlow."""
