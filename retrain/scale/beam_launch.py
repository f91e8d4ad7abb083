"""Run the Beam extraction (``beam_extract.py``) and report it: local runner, checks, progress, summary.

With no ``--runner`` the pipeline runs on this machine, one worker process
per core, exactly as a cluster would run it; any Beam option given is passed
on (``--runner DataflowRunner --project ...``). The launcher checks what it
can in seconds before starting (images present, the backbone loads), and
prints the run's counters at the end.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import apache_beam as beam
import h5py
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricResults, MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineRunner

from ..cache.store import BottleneckCache
from ..data.images import IMAGE_EXTENSIONS, is_image_file
from ..errors import Log, UserError, option_value
from ..models.architectures import ArchitectureSpec
from ..progress import progress_bar
from .beam_extract import METRICS_NAMESPACE, ExtractJob, build_pipeline, is_local

# No --runner: Beam's FnApiRunner with one worker process per core, workers logging errors only. Beam 2.77's
# DirectRunner would first try Prism, a Go binary it downloads from GitHub on first use (impossible offline),
# whose default Python environment runs every DoFn in the launching process; FnApiRunner's multi_processing
# mode is Beam's own way of using every core of one machine, and runs exactly the pipeline a cluster runs.
LOCAL_RUNNER_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0",
                     "--default_sdk_harness_log_level=ERROR")
PROGRESS_POLL_SECONDS = 1.0


@dataclass
class ExtractSummary:
    """What one run found and did, from the pipeline's counters."""
    images: int
    found_in_cache: int
    computed: int
    unreadable: int
    unreadable_listed: list[str]  # "path: reason", all of them unless there are very many
    shards_written: int
    seconds: float

    def line(self, cache_folder: str) -> str:
        rate = self.computed / self.seconds if self.seconds else 0.0
        return (f"Bottlenecks: {self.found_in_cache} of {self.images} images found in the cache ({cache_folder}), "
                f"{self.computed} computed in {self.shards_written} shard(s), {self.unreadable} unreadable; "
                f"{self.seconds:.1f} s ({rate:.1f} computed img/s)")


def pipeline_options(beam_args: Sequence[str]) -> tuple[PipelineOptions, Optional[PipelineRunner]]:
    """The user's Beam options and runner; with no ``--runner``, the local multi-process runner.

    The local runner is built as Beam's DirectRunner builds it when it falls
    back from Prism, so workers receive the pipeline options (their log
    level among them); ``LOCAL_RUNNER_ARGS`` fill in what the user left out.
    """
    args = list(beam_args)
    if any(arg == "--runner" or arg.startswith("--runner=") for arg in args):
        return PipelineOptions(args), None
    given = {arg.split("=", 1)[0] for arg in args}
    args = [default for default in LOCAL_RUNNER_ARGS if default.split("=", 1)[0] not in given] + args
    options = PipelineOptions(args)
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return options, fn_runner.FnApiRunner(provision_info=provision)


def backbone_threads(options: PipelineOptions, local: bool) -> int:
    """Threads per backbone: this machine's cores shared by the local workers; 1 elsewhere (a process per core)."""
    if not local:
        return 1
    workers = options.view_as(DirectOptions).direct_num_workers or os.cpu_count() or 1
    return max(1, (os.cpu_count() or 1) // workers)


def measure_feature_size(spec: ArchitectureSpec, model_dir: str, trust_graph: bool = False,
                         log: Log = print) -> int:
    """The backbone's feature size (a TF-Hub module's is known only once loaded), loading it once here.

    This also checks the model file and its ops: failing here takes seconds
    and gives one line, instead of failing on every worker after the job has
    started.
    """
    from ..models.backbones import load_backbone, trust_graph_warning
    if trust_graph:
        log(trust_graph_warning())
    return load_backbone(spec, model_dir, trust_graph).feature_size


def cached_shard_paths(job: ExtractJob, log: Log) -> list[str]:
    """The cache's shards; a local cache is verified first, so a damaged shard's keys are recomputed."""
    if job.is_local_cache:
        BottleneckCache(job.bottleneck_dir, job.spec.cache_id, job.feature_size).load(log=log).close()
    pattern = FileSystems.join(job.cache_folder, "shard-*.h5")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def run_extract(job: ExtractJob, beam_args: Sequence[str] = (), log: Log = print) -> ExtractSummary:
    """Run the pipeline to completion and report what it did; the cache is complete when this returns."""
    shards = cached_shard_paths(job, log)
    options, runner = pipeline_options(beam_args)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # the local runner relays every worker warning
    started = time.monotonic()
    with _progress(job, shards):
        pipeline = beam.Pipeline(runner=runner, options=options)
        build_pipeline(pipeline, job, shards, backbone_threads(options, local=runner is not None))
        result = pipeline.run()
        result.wait_until_finish()
    seconds = time.monotonic() - started
    metrics = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counts = {name: 0 for name in ("images", "found_in_cache", "computed", "shards_written", "unreadable")}
    for counter in metrics[MetricResults.COUNTERS]:
        if counter.key.metric.name in counts:
            counts[counter.key.metric.name] += counter.committed or 0
    unreadable = sorted(set().union(*(listed.committed or set() for listed in metrics[MetricResults.STRINGSETS])))
    if not counts["images"]:
        raise _no_images(job.image_dir)
    for line in unreadable:
        log(f"warning: skipping unreadable image {line}")
    if counts["unreadable"]:
        cut = "" if len(unreadable) == counts["unreadable"] else f" (only {len(unreadable)} listed)"
        log(f"Skipped {counts['unreadable']} unreadable image(s) of {counts['images']}{cut}")
    if job.is_local_cache and counts["computed"]:  # one shard again, each key once even if a bundle ran twice
        BottleneckCache(job.bottleneck_dir, job.spec.cache_id, job.feature_size).merge_shards(log, always=True)
    return ExtractSummary(counts["images"], counts["found_in_cache"], counts["computed"], counts["unreadable"],
                          unreadable, counts["shards_written"], seconds)


def check_image_dir(image_dir: str) -> None:
    """A local ``image_dir`` must hold an image, checked in a moment before the backbone loads.

    Elsewhere (``gs://``...) listing is the pipeline's first step, so an
    empty folder is reported when it finishes.
    """
    if is_local(image_dir) and not _has_images(Path(image_dir)):
        raise _no_images(image_dir)


def _has_images(folder: Path) -> bool:
    """Whether a local folder holds an image the pipeline would list; stops at the first one."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(is_image_file(Path(name)) for name in files):
            return True
    return False


def _no_images(image_dir: str) -> UserError:
    return UserError(f"no images under {option_value('image_dir', image_dir)} "
                     f"({', '.join(sorted(IMAGE_EXTENSIONS))}, searched recursively); point it at your image folder")


class _progress:
    """A progress bar of vectors written, read from the new shards' key counts (a local cache only).

    Beam's local runner reports nothing while it runs, and on a cluster the
    runner's own console shows progress, so this watches the cache folder.
    """

    def __init__(self, job: ExtractJob, existing: Sequence[str]):
        self.folder = Path(job.cache_folder) if job.is_local_cache else None
        self.seen = {Path(path).name for path in existing}
        self.done = threading.Event()

    def __enter__(self) -> "_progress":
        if self.folder is not None:
            self.bar = progress_bar(desc="Computing bottlenecks", unit="img")
            self.thread = threading.Thread(target=self._watch, daemon=True)
            self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.done.wait(PROGRESS_POLL_SECONDS):
            self._count_new_shards()

    def _count_new_shards(self) -> None:
        for path in sorted(self.folder.glob("shard-*.h5")) if self.folder.is_dir() else []:
            if path.name not in self.seen:
                self.seen.add(path.name)
                try:
                    with h5py.File(path, "r") as shard:
                        self.bar.update(len(shard["keys"]))
                except (OSError, KeyError):
                    pass  # merged away meanwhile: its vectors were counted in their first shard, or will be
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            self.done.set()
            self.thread.join()
            self._count_new_shards()
            self.bar.close()
