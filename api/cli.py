"""`keras-serving`: the one command-line entry point (pyproject.toml's console script, in .venv/bin).

    keras-serving serve                  nginx + gunicorn on the model store (what `make serve` runs)
    keras-serving settings [--table]     every setting's effective value, or the README's table
    keras-serving train-digits [STORE]   train the default model into the store (scikit-learn's digits)
    keras-serving render-nginx OUT_DIR   write nginx's config from the settings (instances: deploy/)
    keras-serving predict-files IN... -o DIR   predict every row of files, offline (docs/batch.md)
    keras-serving worker                 pull asynchronous jobs from the broker through the model (docs/async.md)
    keras-serving serve-async            `serve` plus a local redis-server and the job workers (make serve-async)

Each subcommand has its own `--help`. The modules behind them are imported only when run, so that
`keras-serving settings` never loads TensorFlow and `serve` loads neither Flask nor TensorFlow.
"""
import argparse
import importlib
import sys

from api.version import __version__

COMMANDS = {  # name: (module with main(argv), one line of help)
    "serve": ("api.process.stack", "run nginx and gunicorn on the model store until stopped (Ctrl-C)"),
    "settings": ("api.cli", "print every setting: SERVE_NAME=effective value, or --table for the README"),
    "train-digits": ("api.training", "train the default model (digits) into a model store"),
    "render-nginx": ("api.process.nginx", "write nginx's config from the settings"),
    "predict-files": ("api.files.job", "predict every row of JSONL, CSV, Parquet or image files (docs/batch.md)"),
    "worker": ("api.queue.worker", "pull asynchronous jobs from the broker through the model (docs/async.md)"),
    "serve-async": ("api.process.async_stack", "`serve` plus a local redis-server and the job workers"),
}


def settings_main(argv: list[str] | None = None) -> None:
    """`keras-serving settings`: the settings' effective values (SERVE_* variables applied)."""
    from api.settings import describe, markdown_table

    parser = argparse.ArgumentParser(prog="keras-serving settings", description=settings_main.__doc__)
    parser.add_argument("--table", action="store_true", help="the README's settings table (markdown)")
    args = parser.parse_args(argv)
    print(markdown_table() if args.table else describe())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="keras-serving", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keras/TensorFlow models behind TensorFlow Serving's and KServe v2's REST protocols.",
        epilog="commands:\n" + "\n".join(f"  {name:<14} {text}" for name, (_, text) in COMMANDS.items())
        + "\n\n`keras-serving COMMAND --help` tells more.")
    parser.add_argument("--version", action="version", version=f"keras-serving {__version__}")
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND")
    args, rest = parser.parse_known_args(argv[:1])
    module, _ = COMMANDS[args.command]
    if args.command == "settings":
        settings_main(argv[1:])
        return
    entry = importlib.import_module(module).main
    sys.argv[0] = f"keras-serving {args.command}"  # the subcommand's own --help names itself
    result = entry(argv[1:])
    if isinstance(result, int):
        sys.exit(result)


if __name__ == "__main__":
    main()
