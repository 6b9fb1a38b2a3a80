"""Load shapes as plain stage lists: how many users to run, and how fast to get there, at each moment.

`-u/--users` is the peak, `-r/--spawn-rate` the ramp, `-t/--run-time` the whole run (each shape has its
own default run time). The locustfile's one `LoadTestShape` calls `tick()` with the seconds elapsed.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    until: float
    """Seconds from the start at which this stage ends."""
    users: int
    spawn_rate: float


def steady(users: int, spawn_rate: float, duration: float) -> list[Stage]:
    """The expected load held: the everyday check that the SLOs are met."""
    return [Stage(duration, users, spawn_rate)]


def step(users: int, spawn_rate: float, duration: float, steps: int = 8) -> list[Stage]:
    """Users rise in equal steps of equal length up to the peak: the step where p95 bends up is the knee."""
    steps = max(1, min(steps, users))
    return [Stage(duration * i / steps, max(1, round(users * i / steps)), spawn_rate)
            for i in range(1, steps + 1)]


def spike(users: int, spawn_rate: float, duration: float) -> list[Stage]:
    """A fifth of the peak, then the whole peak at once for a fifth of the run, then back: does the server
    shed or queue, and does it recover?"""
    base = max(1, users // 5)
    return [Stage(duration * 0.4, base, spawn_rate), Stage(duration * 0.6, users, max(spawn_rate, users)),
            Stage(duration, base, max(spawn_rate, users))]


def soak(users: int, spawn_rate: float, duration: float) -> list[Stage]:
    """The peak held for long (an hour by default) after a ramp spread over at least the first tenth of
    the run: leaks, worker recycling, logs filling the disk."""
    return [Stage(duration, users, min(spawn_rate, users / (duration * 0.1)))]


SHAPES = {"steady": steady, "step": step, "spike": spike, "soak": soak}
DEFAULT_RUN_TIME = {"steady": 60.0, "step": 180.0, "spike": 120.0, "soak": 3600.0}
"""Seconds, when the run names no `-t/--run-time`."""


def plan(name: str, users: int, spawn_rate: float, duration: float | None, steps: int = 8) -> list[Stage]:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    duration = duration or DEFAULT_RUN_TIME[name]
    if name == "step":
        return step(users, spawn_rate, duration, steps)
    return SHAPES[name](users, spawn_rate, duration)


def tick(stages: list[Stage], elapsed: float) -> tuple[int, float] | None:
    """(users, spawn rate) for this moment, or None once the last stage is over: locust then stops."""
    for stage in stages:
        if elapsed < stage.until:
            return stage.users, stage.spawn_rate
    return None
