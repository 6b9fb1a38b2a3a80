"""`keras-serving predict-files INPUT... --output DIR`: predict every row of files, offline (docs/batch.md).

The command line, and what it starts: the pipeline (and with it TensorFlow and pyarrow) is imported only
once the arguments are good, so `--help` and usage errors answer at once.

Exit status: 0 every row was read and the failed ones are within --max-error-rate; 1 more rows failed
than --max-error-rate allows (the job stopped at a shard's end); 2 a usage error (nothing was run); 3 the
job could not run or go on (the model does not load, an input cannot be read, the output cannot be
written); 130 / 143 stopped by SIGINT / SIGTERM once the shard in progress was written (--resume goes on).
"""
import argparse
import os
import sys
from pathlib import Path

from api.settings import Settings

EPILOG = """examples:
  keras-serving predict-files data/rows.jsonl.gz --output out/
  keras-serving predict-files 'exports/*.parquet' --output out/ --key-field id --top-k 3 --resume
  keras-serving predict-files scans/ --output out/ --output-format parquet --quiet

exit status: 0 done; 1 over --max-error-rate; 2 usage; 3 failed; 130/143 stopped by SIGINT/SIGTERM at a
shard's end (--resume goes on). Settings (SERVE_BATCH_*, SERVE_MODEL_*): keras-serving settings."""


def parser(settings: Settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keras-serving predict-files", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="JSON Lines, CSV or Parquet files, image folders, globs (quoted) or lists of image paths; "
                        "gzip read as it is")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                   help="folder of predictions-NNNNN shards, errors.jsonl and manifest.json")
    p.add_argument("--model", default=settings.model_name, help="model name in the store (default: %(default)s)")
    p.add_argument("--version", help="version number or label (default: the newest)")
    p.add_argument("--store", type=Path, default=settings.model_store, help="model store (default: %(default)s)")
    p.add_argument("--input-format", default="auto", choices=("auto", "jsonl", "csv", "parquet", "images", "file-list"),
                   help="format of the inputs (default: from each name)")
    p.add_argument("--output-format", default="jsonl", choices=("jsonl", "parquet"))
    p.add_argument("--key-field", metavar="NAME", help="field or column carried to each row's prediction as "
                   "\"key\" (default: the file and row number are)")
    p.add_argument("--keep-columns", default="", metavar="A,B", help="more fields or columns to carry")
    p.add_argument("--top-k", type=int, metavar="K", help="add the K best labels, as the API's top_k")
    p.add_argument("--max-error-rate", type=float, metavar="F",
                   help=f"stop (exit 1) once more than this fraction of rows failed (default: {settings.batch_max_error_rate})")
    p.add_argument("--batch-size", type=int, metavar="N", help="rows per model call (default: 512, or fewer for "
                   "large rows)")
    p.add_argument("--shard-rows", type=int, metavar="N",
                   help=f"input rows per output shard (default: {settings.batch_shard_rows})")
    p.add_argument("--cpu-share", type=float, metavar="F",
                   help=f"share of the cores to use, 0 to 1 (default: {settings.batch_cpu_share})")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="TensorFlow intra-op threads per model call (default: SERVE_INTRA_OP_THREADS, else the "
                        "cores used shared between the calls)")
    p.add_argument("--model-calls", type=int, default=settings.batch_model_calls, metavar="N",
                   help="model calls in flight at once (default: SERVE_BATCH_MODEL_CALLS, else 2, or 1 on a "
                        "single core)")
    p.add_argument("--resume", action="store_true", help="go on with the run in DIR (or start one)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, and a summary only when it fails")
    return p


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    args = parser(settings).parse_args(argv)
    overrides = {"model_store": args.store}
    for flag, name in (("batch_size", "batch_size"), ("shard_rows", "batch_shard_rows"),
                       ("max_error_rate", "batch_max_error_rate"), ("cpu_share", "batch_cpu_share")):
        if getattr(args, flag) is not None:
            overrides[name] = getattr(args, flag)
    try:
        settings = Settings(**overrides)  # the flags are validated as the settings are
    except ValueError as exc:
        print(f"predict-files: {exc}", file=sys.stderr)
        return 2
    from api.files.pipeline import EXIT_USAGE, Options, check_options, run
    from api.files.sources import UsageError, expand

    options = Options(output=args.output, model=args.model, version=args.version, output_format=args.output_format,
                      key_field=args.key_field, keep=tuple(c for c in args.keep_columns.split(",") if c),
                      top_k=args.top_k, batch_size=settings.batch_size, shard_rows=settings.batch_shard_rows,
                      max_error_rate=settings.batch_max_error_rate, resume=args.resume, quiet=args.quiet)
    try:
        sources = expand(args.inputs, args.input_format)
        check_options(options, sources)
    except UsageError as exc:
        print(f"predict-files: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.model_calls < 0 or args.threads < 0:
        print("predict-files: --model-calls and --threads take a number of 0 or more", file=sys.stderr)
        return EXIT_USAGE
    quiet_tensorflow(settings)
    return run(options, settings, sources, settings.batch_cpu_share, args.threads or settings.intra_op_threads,
               args.model_calls)


def quiet_tensorflow(settings: Settings) -> None:
    """TensorFlow's start-up chatter to <run_dir>/tensorflow.log, as the serving workers do (SERVE_TF_LOG_LEVEL),
    so that stderr holds the progress and the summary."""
    from api.process.worker import native_stderr_to

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(settings.tf_log_level)
    if settings.tf_log_level == 3:
        native_stderr_to(settings.run_dir / "tensorflow.log")


if __name__ == "__main__":
    sys.exit(main())
