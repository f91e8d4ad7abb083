"""Compute bottlenecks for many images on Apache Beam, into the cache retrain reads.

    python -m scripts.extract_bottlenecks --image_dir photos --bottleneck_dir bottlenecks

runs locally on every core (Beam's FnApiRunner, one worker process per core).
Any other Beam option is passed to Beam, so the same command runs on a
cluster, for example with --runner DataflowRunner --project P --region R
--temp_location gs://B/tmp --setup_file ./setup.py (see README, "Scaling out").
Then `python -m scripts.retrain` on the same --bottleneck_dir finds every
vector in the cache. Needs the optional extra: pip install 'retrain[beam]'.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from retrain.architectures import DEFAULT_ARCHITECTURE, get_architecture, tfhub_spec
from retrain.errors import UserError, run_cli
from retrain.paths import DEFAULT_BOTTLENECK_DIR, DEFAULT_MODEL_DIR, check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.extract_bottlenecks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Other options (--runner, --project, --num_workers, ...) go to Beam.")
    parser.add_argument("--image_dir", type=str, default="",
                        help="Folder of images, searched recursively (a local path, or gs://, s3://... where "
                             "Beam's extras for them are installed).")
    parser.add_argument("--architecture", type=str, default=DEFAULT_ARCHITECTURE,
                        help=f"Backbone, as for retrain. (default {DEFAULT_ARCHITECTURE})")
    parser.add_argument("--tfhub_module", type=str, default="",
                        help="A TF-Hub image feature-vector module instead of --architecture, as for retrain.")
    parser.add_argument("--tfhub_image_size", type=int, default=224,
                        help="Input height and width of the --tfhub_module. (default 224)")
    parser.add_argument("--model_dir", type=str, default=str(DEFAULT_MODEL_DIR),
                        help="Where the backbone file is looked for, on this machine and on each worker; a "
                             "missing file is downloaded there once. (default: the project's models/)")
    parser.add_argument("--bottleneck_dir", type=str, default=str(DEFAULT_BOTTLENECK_DIR),
                        help="The cache to fill: the same folder retrain's --bottleneck_dir reads (or gs://..., "
                             "then copied to the training machine). (default: the project's bottlenecks/)")
    parser.add_argument("--bottleneck_batch_size", type=int, default=16,
                        help="Images per backbone call. (default 16)")
    return parser


def _import_beam_extract():
    """The Beam pipeline module; a one-line error when the optional Beam extra is missing."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Beam warns at import about Google Cloud clients that only Dataflow needs
    try:
        from retrain import beam_extract
    except ImportError as error:
        if not (error.name or "").startswith("apache_beam"):
            raise
        raise UserError("Apache Beam is not installed; install the extra with: pip install 'retrain[beam]'") from None
    finally:
        root.setLevel(level)
    return beam_extract


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    if not args.image_dir:
        raise UserError("no --image_dir given; point it at a folder of images")
    if args.bottleneck_batch_size < 1:
        raise UserError(f"--bottleneck_batch_size must be at least 1, got {args.bottleneck_batch_size}")
    spec = tfhub_spec(args.tfhub_module, args.tfhub_image_size) if args.tfhub_module else \
        get_architecture(args.architecture)
    beam_extract = _import_beam_extract()
    beam_extract.check_image_dir(args.image_dir)
    if beam_extract.is_local(args.bottleneck_dir):
        check_writable_folder(args.bottleneck_dir, "--bottleneck_dir")
    spec = beam_extract.resolve_feature_size(spec, args.model_dir)
    image_dir, model_dir, bottleneck_dir = map(beam_extract.absolute, (args.image_dir, args.model_dir,
                                                                        args.bottleneck_dir))
    job = beam_extract.ExtractJob(image_dir, spec, model_dir, bottleneck_dir, args.bottleneck_batch_size)
    summary = beam_extract.run_extract(job, beam_args)
    print(summary.line(job.cache_folder))
    return 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
