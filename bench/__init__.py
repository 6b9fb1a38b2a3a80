"""`make bench`: the in-process limit, the full stack, and the peers, measured side by side in one run."""
