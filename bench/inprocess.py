"""The in-process limit of a model: the compiled function the workers serve, at several batch sizes.

    python -m bench.inprocess STORE NAME [--batches 1,32,64] [--seconds 5] [--threads N] [--calls C]

Runs in its own process (TensorFlow stays out of the benchmark driver) with TensorFlow's threads set
as given, fed arrays already in memory. Two layouts, as a server can run the model:
- `--calls 1` (the default): one call at a time with `--threads` intra-op threads (default: every core,
  the most one call can use), as one worker that owns every core runs it;
- `--calls C`: C threads calling the function side by side, each on its own array, with cores // C
  intra-op threads each (unless `--threads` says otherwise): as C single-threaded workers run it (the
  stack's default layout, `SERVE_WORKERS` = cores) or the batch job's C calls in flight.
Prints one JSON line: images/s at each batch size (all calls together), the best batch and its rate.
"""
import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from api.settings import Settings
from bench.harness import ROOT


def measure(store, name: str, batches: list[int], seconds: float, threads: int, calls: int = 1) -> dict:
    import numpy as np

    from api.model.store import list_versions, read_version
    from api.runtime import ModelRuntime, configure_tensorflow

    store = Path(store)
    # inter-op threads: at least one per call, or TensorFlow would run the calls one after the other
    settings = Settings(model_store=store, model_name=name, workers=1, intra_op_threads=threads,
                        inter_op_threads=max(Settings().inter_op_threads, calls))
    device = configure_tensorflow(settings)
    # the function the workers serve: the same compiler options, from the same SERVE_* environment
    runtime = ModelRuntime.from_settings(read_version(store, name, max(list_versions(store, name))), device,
                                         settings)
    shape = tuple(d or 1 for d in runtime.input.instance_shape)
    rates = {}
    for size in batches:
        arrays = [np.random.default_rng(n).random((size, *shape)).astype(runtime.input.dtype) for n in range(calls)]
        for array in arrays:
            runtime.infer(array)  # warm: allocation and first-call costs are not the steady rate
        counts, stop = [0] * calls, time.perf_counter() + seconds

        def loop(n: int) -> None:
            while time.perf_counter() < stop or counts[n] < 3:
                runtime.infer(arrays[n])
                counts[n] += 1

        started = time.perf_counter()
        callers = [threading.Thread(target=loop, args=(n,)) for n in range(calls)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        rates[size] = sum(counts) * size / (time.perf_counter() - started)
    best = max(rates, key=rates.get)
    return {"model": name, "device": device, "calls": calls, "threads": threads, "images_per_s": rates,
            "best_batch": best, "best_images_per_s": rates[best]}


def run(store: Path, name: str, batches: str, seconds: float, calls: int = 1) -> dict:
    """`measure` in a child process of its own (TensorFlow stays out of the caller): its JSON line."""
    out = subprocess.run([sys.executable, "-m", "bench.inprocess", str(store), name, "--batches", batches,
                          "--seconds", str(seconds), "--calls", str(calls)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("name")
    parser.add_argument("--batches", default="1,32,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads per call; 0 = the cores shared among the calls")
    parser.add_argument("--calls", type=int, default=1, help="calls side by side, one thread each")
    args = parser.parse_args(argv)
    from api.settings import _cpu_count
    threads = args.threads or max(1, _cpu_count() // args.calls)
    print(json.dumps(measure(args.store, args.name, [int(b) for b in args.batches.split(",")], args.seconds,
                             threads, args.calls)))


if __name__ == "__main__":
    main()
