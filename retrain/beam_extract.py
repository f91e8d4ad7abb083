"""Fill the bottleneck cache on Apache Beam: the same vectors and shards as retrain, on many machines.

    MatchFiles(image_dir/**) -> content key of each image ----------------\\
    keys of the shards already in the cache ------------------------------ CoGroupByKey
        -> images not cached yet (one per content key) -> decode (retrain's load_rgb)
        -> RunInference (BatchElements, one backbone per worker process) -> cache shards

Only this module (and the script that calls it) imports Apache Beam, an
optional extra: retrain itself never needs it. Why it is safe to run anywhere
Beam runs:

- Workers write shards with ``BottleneckCache.write_shard``: today's format,
  whole-file checksum, and a new unique name per write. A bundle that a
  runner retries or runs twice writes its vectors again under another name;
  duplicates are harmless (the cache index keeps one row per content key) and
  disappear when shards are merged.
- A run killed part-way keeps every shard written so far: shards are flushed
  every ``FLUSH_EVERY_IMAGES`` images or ``FLUSH_EVERY_SECONDS`` within a
  bundle, and the next run skips their keys.
- Only the content key decides what is computed, so images copied under
  several names are decoded and run once.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
import h5py
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricResults, MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineRunner
from tqdm import tqdm

from .architectures import ArchitectureSpec
from .bottlenecks import FLUSH_EVERY_IMAGES, FLUSH_EVERY_SECONDS, BottleneckCache
from .decode import UnreadableImage, load_rgb
from .errors import UserError
from .images import IMAGE_EXTENSIONS, is_image_file
from .paths import digest_rest
from .quiet import silence_tensorflow_startup

# Beam imports this module in each worker process before anything there imports TensorFlow.
silence_tensorflow_startup()

Log = Callable[[str], None]

METRICS_NAMESPACE = "retrain.beam_extract"
# No --runner: Beam's FnApiRunner with one worker process per core, workers logging errors only. Beam 2.77's
# DirectRunner would first try Prism, a Go binary it downloads from GitHub on first use (impossible offline),
# whose default Python environment runs every DoFn in the launching process; FnApiRunner's multi_processing
# mode is Beam's own way of using every core of one machine, and runs exactly the pipeline a cluster runs.
LOCAL_RUNNER_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0",
                     "--default_sdk_harness_log_level=ERROR")
PROGRESS_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ExtractJob:
    """What to extract: images under ``image_dir`` through ``spec`` into ``bottleneck_dir``.

    ``spec.feature_size`` must be known (it names the cache folder): see
    ``resolve_feature_size``. Paths may be local or any filesystem Beam has
    installed (``gs://``, ``s3://``); ``model_dir`` is a folder on each
    worker, where the model file is downloaded once if it is not there.
    """
    image_dir: str
    spec: ArchitectureSpec
    model_dir: str
    bottleneck_dir: str
    batch_size: int = 16

    @property
    def cache_folder(self) -> str:
        return FileSystems.join(self.bottleneck_dir, self.spec.cache_id)

    @property
    def is_local_cache(self) -> bool:
        return is_local(self.bottleneck_dir)


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


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def absolute(path: str) -> str:
    """A local path made absolute (workers may start elsewhere; listed paths come back absolute); others as given."""
    return os.path.abspath(path) if FileSystems.get_scheme(path) is None else path


def _counter(name: str):
    return Metrics.counter(METRICS_NAMESPACE, name)


def _is_listed_image(path: str, image_dir: str) -> bool:
    """The images retrain would read: image extensions, nothing hidden on the way down from ``image_dir``."""
    relative = PurePosixPath(path[len(image_dir.rstrip("/")):].lstrip("/").replace("\\", "/"))
    return is_image_file(relative) and not any(part.startswith(".") for part in relative.parts)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _unreadable(line: str) -> None:
    """Count and list an unreadable image ("path: reason").

    A metric, not an output: the launcher reads it when the run ends, on any
    runner, without files to clean up. Beam keeps about 1 MB of a string set,
    so a huge list is cut short; the count stays exact.
    """
    _counter("unreadable").inc()
    Metrics.string_set(METRICS_NAMESPACE, "unreadable_images").add(line)


def _content_key(metadata) -> Iterator[tuple[str, str]]:
    """Image path -> (content key, path)."""
    _counter("images").inc()
    try:
        with _open(metadata.path) as handle:
            yield digest_rest(handle, "sha1"), metadata.path
    except OSError:
        _unreadable(f"{metadata.path}: cannot read file")


def _shard_keys(path: str) -> Iterator[tuple[str, bool]]:
    """The keys in one cache shard (read from its ``keys`` dataset only, not its vectors)."""
    source = path if is_local(path) else _open(path)
    with h5py.File(source, "r") as shard:
        for key in shard["keys"][...]:
            yield key.decode("ascii"), True


def _missing(element: tuple[str, dict[str, list]]) -> Iterator[tuple[str, list[str]]]:
    """Keep the keys no shard holds, with every path that has those bytes (sorted: the first is decoded)."""
    key, found = element
    paths = sorted(found["images"])
    if not paths:
        return  # cached, but not among these images
    if found["cached"]:
        _counter("found_in_cache").inc(len(paths))
        return
    yield key, paths


def _decode(element: tuple[str, list[str]], size: int) -> Iterator[tuple[str, np.ndarray]]:
    """(key, paths) -> (key, uint8 image) with retrain's own decoding, so vectors are identical."""
    key, paths = element
    first = paths[0]
    try:
        yield key, load_rgb(first if is_local(first) else _open(first), size, size)
    except UnreadableImage as error:
        reason = str(error).split(": ", 1)[-1]
        _unreadable(f"{first}: {reason}")
        for path in paths[1:]:  # retrain lists every copy of a bad file too
            _unreadable(f"{path}: same bytes as {first}: {reason}")


class BackboneHandler(ModelHandler[np.ndarray, np.ndarray, Any]):
    """RunInference's handler for our backbones: uint8 images in, pooled vectors out.

    Beam loads the model once per worker process (shared by its threads) and
    batches with ``BatchElements``; batches have a fixed size, as in retrain
    (vectors do not depend on it, but the speed does). Runners start one
    worker process per core, so each backbone gets ``threads`` threads
    instead of one per core each: on 2 cores with 2 workers, 1.8x faster.
    """

    def __init__(self, spec: ArchitectureSpec, model_dir: str, batch_size: int, threads: int):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         env_vars={"TF_NUM_INTRAOP_THREADS": str(threads)})
        self.spec, self.model_dir = spec, model_dir

    def load_model(self):
        from .backbones import load_backbone
        return load_backbone(self.spec, self.model_dir)

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args: Optional[dict] = None
                      ) -> Iterable[np.ndarray]:
        return list(model(np.stack(batch)))

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(image.nbytes for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


class _WriteShards(beam.DoFn):
    """(key, vector) -> cache shards, flushed as retrain flushes, so a killed worker loses little."""

    def __init__(self, bottleneck_dir: str, cache_id: str, feature_size: int):
        self.bottleneck_dir, self.cache_id, self.feature_size = bottleneck_dir, cache_id, feature_size

    def start_bundle(self) -> None:
        self.keys: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.last_flush = time.monotonic()

    def process(self, element: tuple[str, np.ndarray]) -> None:
        key, vector = element
        self.keys.append(key)
        self.vectors.append(vector)
        if len(self.keys) >= FLUSH_EVERY_IMAGES or time.monotonic() - self.last_flush > FLUSH_EVERY_SECONDS:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self.keys:
            write_shard(self.bottleneck_dir, self.cache_id, self.feature_size, self.keys, np.stack(self.vectors))
            _counter("computed").inc(len(self.keys))
            _counter("shards_written").inc()
        self.keys, self.vectors, self.last_flush = [], [], time.monotonic()


def write_shard(bottleneck_dir: str, cache_id: str, feature_size: int, keys: Sequence[str],
                vectors: np.ndarray) -> str:
    """One new shard in ``bottleneck_dir/cache_id``, written by the cache store itself.

    Elsewhere than on a local disk the shard is made in a local temporary
    folder and copied under the same unique name; object stores publish an
    object only when it is complete, as a local rename does.
    """
    if is_local(bottleneck_dir):
        return str(BottleneckCache(bottleneck_dir, cache_id, feature_size).write_shard(keys, vectors))
    with tempfile.TemporaryDirectory() as scratch:
        local = BottleneckCache(scratch, cache_id, feature_size).write_shard(keys, vectors)
        target = FileSystems.join(bottleneck_dir, cache_id, local.name)
        with open(local, "rb") as source, FileSystems.create(
                target, mime_type="application/x-hdf5", compression_type=CompressionTypes.UNCOMPRESSED) as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    return target


def build_pipeline(pipeline: beam.Pipeline, job: ExtractJob, cached_shards: Sequence[str],
                   backbone_threads: int = 1) -> None:
    """Add the extraction to ``pipeline``: list, skip cached, decode, run the backbone, write shards."""
    image_dir = job.image_dir
    keyed = (pipeline
             | "List images" >> fileio.MatchFiles(FileSystems.join(image_dir, "**"))
             | "Only images" >> beam.Filter(lambda metadata: _is_listed_image(metadata.path, image_dir))
             | "Spread listing" >> beam.Reshuffle()
             | "Content keys" >> beam.FlatMap(_content_key))
    cached = (pipeline
              | "Cache shards" >> beam.Create(list(cached_shards))
              | "Spread shards" >> beam.Reshuffle()
              | "Cached keys" >> beam.FlatMap(_shard_keys))
    handler = KeyedModelHandler(BackboneHandler(job.spec, job.model_dir, job.batch_size, backbone_threads))
    _ = ({"images": keyed, "cached": cached}
         | "Join with cache" >> beam.CoGroupByKey()
         | "Not cached" >> beam.FlatMap(_missing)
         | "Decode" >> beam.FlatMap(_decode, job.spec.input_size)
         | "Backbone" >> RunInference(handler)
         | "Write shards" >> beam.ParDo(_WriteShards(job.bottleneck_dir, job.spec.cache_id, job.spec.feature_size)))


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


def resolve_feature_size(spec: ArchitectureSpec, model_dir: str) -> ArchitectureSpec:
    """``spec`` with its feature size, loading the backbone once here; this also checks the model file.

    Failing here takes seconds and gives one line, instead of failing on
    every worker after the job has started.
    """
    from .backbones import load_backbone
    return load_backbone(spec, model_dir).spec


def cached_shard_paths(job: ExtractJob, log: Log) -> list[str]:
    """The cache's shards; a local cache is verified first, so a damaged shard's keys are recomputed."""
    if job.is_local_cache:
        BottleneckCache(job.bottleneck_dir, job.spec.cache_id, job.spec.feature_size).load(report=log).close()
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
    unreadable = sorted(set().union(*(result.committed or set() for result in metrics[MetricResults.STRINGSETS])))
    if not counts["images"]:
        raise _no_images(job.image_dir)
    for line in unreadable:
        log(f"warning: skipping unreadable image {line}")
    if counts["unreadable"]:
        cut = "" if len(unreadable) == counts["unreadable"] else f" (only {len(unreadable)} listed)"
        log(f"Skipped {counts['unreadable']} unreadable image(s) of {counts['images']}{cut}")
    if job.is_local_cache:
        BottleneckCache(job.bottleneck_dir, job.spec.cache_id, job.spec.feature_size).merge_shards(log)
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
    return UserError(f"no images under --image_dir {image_dir} ({', '.join(sorted(IMAGE_EXTENSIONS))}, searched "
                     f"recursively); point it at your image folder")


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
            self.bar = tqdm(desc="Computing bottlenecks", unit="img")
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
