"""The in-process limit of a model: the compiled function the workers serve, at several batch sizes.

    python -m bench.inprocess STORE NAME [--batches 1,32,64] [--seconds 5] [--threads N]

Runs in its own process (TensorFlow stays out of the benchmark driver) with TensorFlow's threads set
as given (default: every core, the most one process can use). Prints one JSON line.
"""
import argparse
import json
import time
from pathlib import Path

from api.settings import Settings


def measure(store, name: str, batches: list[int], seconds: float, threads: int) -> dict:
    import numpy as np

    from api.runtime import ModelRuntime, configure_tensorflow
    from api.model.store import list_versions, read_version

    store = Path(store)
    settings = Settings(model_store=store, model_name=name, workers=1, intra_op_threads=threads)
    device = configure_tensorflow(settings)
    runtime = ModelRuntime(read_version(store, name, max(list_versions(store, name))), device)
    shape = tuple(d or 1 for d in runtime.input.instance_shape)
    rates = {}
    for size in batches:
        batch = np.random.default_rng(0).random((size, *shape)).astype(runtime.input.dtype)
        runtime.infer(batch)  # warm: allocation and first-call costs are not the steady rate
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
            runtime.infer(batch)
            calls += 1
        rates[size] = calls * size / elapsed
    best = max(rates, key=rates.get)
    return {"model": name, "device": device, "threads": threads, "images_per_s": rates,
            "best_batch": best, "best_images_per_s": rates[best]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("name")
    parser.add_argument("--batches", default="1,32,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads; 0 = all cores")
    args = parser.parse_args(argv)
    from api.settings import _cpu_count
    threads = args.threads or _cpu_count()
    print(json.dumps(measure(args.store, args.name, [int(b) for b in args.batches.split(",")], args.seconds,
                             threads)))


if __name__ == "__main__":
    main()
