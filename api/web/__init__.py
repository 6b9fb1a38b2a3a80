"""The demo page and what the HTTP front tells browsers: a front beside api/http, mounted by its app.

page.py: `GET /` and its own files (SERVE_DEMO_PAGE); browsers.py: headers on every answer (nosniff,
CORS for SERVE_CORS_ORIGINS). No numpy, no TensorFlow: the page calls `POST /predict` like any client.
"""
