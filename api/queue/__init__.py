"""Asynchronous jobs through a broker: the job format, the broker interface and its Redis and SQS backends,
the HTTP side's submit and fetch, and the worker that pulls jobs through the model (docs/async.md)."""
