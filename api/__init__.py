"""A Flask-RESTful model server: TensorFlow Serving's and KServe v2's REST protocols for Keras models.

The package face imports nothing: gunicorn's master imports api.settings, api.lifecycle, api.devices,
api.workers and api.logs, and must load neither Flask nor TensorFlow. The app comes from api.app.
"""
__version__ = "0.1.0"

_APP_NAMES = {"create_app", "registry_of"}


def __getattr__(name: str):
    if name in _APP_NAMES:  # `from api import create_app`: the app module, on first use only
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module 'api' has no attribute {name!r}")
