"""keras-serving: Keras and TensorFlow models behind TensorFlow Serving's and KServe v2's REST protocols.

The package face imports nothing: gunicorn's master imports `api.settings`, `api.logs` and
`api.process.*` and must load neither Flask nor TensorFlow. The layers, top to bottom (each imports
only those below it; tests/test_layers.py enforces it, docs/architecture.md draws it):

    api.cli                       the `keras-serving` console script
    api.http                      Flask-RESTful: routes, headers, JSON errors (no numpy, no TensorFlow)
    api.serving                   the worker's core: model registry and data plane (protocol routes)
    api.metrics                   Prometheus families
    api.protocols, api.batching,  pure request parsing and answers; dynamic batching; the one module
    api.runtime, api.training     that imports TensorFlow, and the default model's training
    api.model                     what a model is, without TensorFlow: the store and the signature
    api.process                   gunicorn's master and worker hooks, nginx's config, the supervisor
    api.settings, api.errors, api.logs, api.version
"""
