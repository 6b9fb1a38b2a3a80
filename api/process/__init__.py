"""Code for processes that must never load Flask or TensorFlow: gunicorn's master hooks (arbiter),
the worker's own life-cycle hooks, marker files they share, GPU slots, nginx's config, and the
supervisor that runs nginx and gunicorn together (tests/test_layers.py)."""
