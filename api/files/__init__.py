"""Offline batch prediction over files (`keras-serving predict-files`, docs/batch.md): the serving core's
store, runtime and input checks, driven by files instead of HTTP requests."""
