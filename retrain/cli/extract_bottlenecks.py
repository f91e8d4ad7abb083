"""Compute bottlenecks for many images on Apache Beam, into the cache retrain reads.

    python -m scripts.extract_bottlenecks --image_dir photos --bottleneck_dir bottlenecks

runs locally on every core (Beam's FnApiRunner, one worker process per core).
Every other option goes to Beam, so the same command runs on a cluster, e.g.
with --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
(README, "Scaling out"). Then `python -m scripts.retrain` on the same
--bottleneck_dir finds every vector in the cache. Needs the optional extra:
pip install 'retrain[beam]'.
"""
from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import Sequence

from retrain.cli.common import run_cli, tool_parser
from retrain.errors import UserError
from retrain.files import check_writable_folder
from retrain.job_options import backbone_spec


def beam_modules() -> tuple[ModuleType, ModuleType]:
    """The modules ``retrain.scale.beam_extract`` and ``beam_launch``; one error line when Beam is missing."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Beam warns at import about Google Cloud clients that only Dataflow needs
    try:
        from retrain.scale import beam_extract, beam_launch
    except ImportError as error:
        if not (error.name or "").startswith("apache_beam"):
            raise
        raise UserError("Apache Beam is not installed; install the extra with: pip install 'retrain[beam]'") from None
    finally:
        root.setLevel(level)
    return beam_extract, beam_launch


def build_parser() -> argparse.ArgumentParser:
    """extract_bottlenecks' flags: every option of "extract_bottlenecks" in ``retrain.options``; the rest go to Beam."""
    return tool_parser("extract_bottlenecks", __doc__,
                       epilog="Any other option (--runner, --project, --num_workers, ...) goes to Beam.")


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)  # first, so --help works without the Beam extra
    beam_extract, beam_launch = beam_modules()
    if not args.image_dir:
        raise UserError("no --image_dir given; point it at a folder of images")
    spec = backbone_spec(vars(args))
    beam_launch.check_image_dir(args.image_dir)
    if beam_extract.is_local(args.bottleneck_dir):
        check_writable_folder(args.bottleneck_dir, "bottleneck_dir")
    image_dir, model_dir, bottleneck_dir = map(beam_extract.absolute, (args.image_dir, args.model_dir,
                                                                        args.bottleneck_dir))
    job = beam_extract.ExtractJob(image_dir, spec, model_dir, bottleneck_dir, args.bottleneck_batch_size,
                                  beam_launch.measure_feature_size(spec, model_dir, args.trust_graph),
                                  args.max_image_megapixels, args.trust_graph)
    summary = beam_launch.run_extract(job, beam_args)
    print(summary.line(job.cache_folder))
    return 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
