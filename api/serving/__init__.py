"""The worker's serving core, shared by every front (HTTP today; files, queue and web page next): the
model registry, which loads and warms each version, and the data plane, one method per protocol route."""
