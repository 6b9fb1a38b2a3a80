"""The HTTP front: Flask-RESTful resources that read headers and bodies and call the data plane.
Never imports numpy or TensorFlow (tests/test_layers.py)."""
