"""The WSGI entry point gunicorn imports in each worker (never preloaded: TensorFlow is not fork-safe).

Importing this builds the app without loading a model; gunicorn.conf.py's `post_worker_init`
loads and warms the model in the worker before it counts as ready.
"""
from api.http.app import create_app

app = create_app()
