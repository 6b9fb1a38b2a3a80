"""Workers killed with SIGKILL every few seconds for half a minute under load through nginx: no request is
lost and each replacement is warm within a stated bound.

What protects the requests: nginx retries a request whose worker died before answering on another
(`proxy_next_upstream error timeout non_idempotent`; POST /predict has no side effect), and a worker
writes each answer in one write, so a death never leaves a half-sent answer that cannot be retried.
"""
import os
import signal
import time

import pytest

from tests.load import REPORTS, Load, wait_until
from tests.servers import Stack, running

CLIENTS = 32
EVERY = 5.0  # seconds between kills
FOR = 30.0  # seconds of killing: six kills, three of each first worker's successors
REPLACEMENT_BOUND = 20.0  # seconds from a kill to a warm replacement (fork, import, load, warm-up) under load


@pytest.fixture()
def stack(store, tmp_path):
    with running(Stack(tmp_path, model_store=store, workers=2, threads=4, model_versions="latest")) as served:
        yield served


def test_a_worker_killed_every_few_seconds_for_half_a_minute_loses_no_request(stack, digits):
    replacements = []
    with Load(stack.url + "/predict", {"instances": digits[0][:1].tolist()}, CLIENTS) as load:
        load.wait_for(200)
        started = time.monotonic()
        while time.monotonic() - started < FOR:
            victim = min(stack.ready_pids())  # the oldest pid: each kill takes a different worker
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(stack.ready_pids() - {victim}) == 2, timeout=REPLACEMENT_BOUND * 3,
                       what="no warm replacement")
            replacements.append(time.monotonic() - killed_at)
            time.sleep(max(0.0, killed_at + EVERY - time.monotonic()))
        load.wait_for(load.sent + 200)
    load.report(f"SIGKILL every {EVERY:g} s for {FOR:g} s: {len(replacements)} kills")
    line = (f"[SIGKILL every {EVERY:g} s] replacement warm after {min(replacements):.1f} to "
            f"{max(replacements):.1f} s (bound {REPLACEMENT_BOUND:g} s)")
    print(line)
    REPORTS.append(line)
    assert load.failed == 0, load.failures[:5]
    assert len(replacements) >= FOR / (EVERY + REPLACEMENT_BOUND)
    assert max(replacements) < REPLACEMENT_BOUND
