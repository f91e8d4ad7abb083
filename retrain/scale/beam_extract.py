"""The Apache Beam pipeline that fills the bottleneck cache: the same vectors and shards as retrain.

    MatchFiles(image_dir/**) -> content key of each image ----------------\\
    keys of the shards already in the cache ------------------------------ CoGroupByKey
        -> images not cached yet (one per content key) -> decode (retrain's load_rgb)
        -> RunInference (BatchElements, one backbone per worker process) -> cache shards

Only this module and ``beam_launch.py`` (which runs it) import Apache Beam, an
optional extra: retrain itself never needs it. Why it is safe on any runner:

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

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
import h5py
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from ..cache.bottlenecks import DEFAULT_BATCH_SIZE, FLUSH_EVERY_IMAGES, FLUSH_EVERY_SECONDS, check_batch_size
from ..cache.store import BottleneckCache
from ..data.decode import UnreadableImage, load_rgb
from ..data.images import is_image_file
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS, validate_max_megapixels
from ..files import CONTENT_KEY_ALGORITHM, DEFAULT_BOTTLENECK_DIR, DEFAULT_MODEL_DIR, digest_rest
from ..models.architectures import ArchitectureSpec
from ..quiet import silence_tensorflow_startup

# Beam imports this module in each worker process before anything there imports TensorFlow.
silence_tensorflow_startup()

METRICS_NAMESPACE = "retrain.scale.beam_extract"


@dataclass
class ExtractJob:
    """What to extract: images under ``image_dir`` through ``spec`` into ``bottleneck_dir``; the CLI's flags.

    Paths may be local or any filesystem Beam has installed (``gs://``,
    ``s3://``); ``model_dir`` is a folder on each worker, where the model file
    is downloaded once if it is not there. ``feature_size`` is the registry's,
    or for a TF-Hub module the size measured when it loads
    (``beam_launch.measure_feature_size``): shards record it.
    """
    image_dir: str
    spec: ArchitectureSpec
    model_dir: str = str(DEFAULT_MODEL_DIR)
    bottleneck_dir: str = str(DEFAULT_BOTTLENECK_DIR)
    bottleneck_batch_size: int = DEFAULT_BATCH_SIZE
    feature_size: int = 0
    max_image_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS
    trust_graph: bool = False

    def __post_init__(self) -> None:
        check_batch_size(self.bottleneck_batch_size)
        validate_max_megapixels(self.max_image_megapixels)
        self.feature_size = self.feature_size or self.spec.feature_size
        if not self.feature_size:
            raise ValueError("the backbone's feature size is unknown: measure it with beam_launch.measure_feature_size")

    @property
    def cache_folder(self) -> str:
        return FileSystems.join(self.bottleneck_dir, self.spec.cache_id)

    @property
    def is_local_cache(self) -> bool:
        return is_local(self.bottleneck_dir)


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
            yield digest_rest(handle, CONTENT_KEY_ALGORITHM), metadata.path
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


def _decode(element: tuple[str, list[str]], size: int,
            max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS) -> Iterator[tuple[str, np.ndarray]]:
    """(key, paths) -> (key, uint8 image) with retrain's own decoding, so vectors are identical."""
    key, paths = element
    first = paths[0]
    try:
        yield key, load_rgb(first if is_local(first) else _open(first), size, size, max_megapixels)
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
    instead of one per core each (2 cores, 2 workers: 88 instead of 48 img/s in one pair of runs).
    """

    def __init__(self, spec: ArchitectureSpec, model_dir: str, batch_size: int, threads: int, trust_graph: bool):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         env_vars={"TF_NUM_INTRAOP_THREADS": str(threads)})
        self.spec, self.model_dir, self.trust_graph = spec, model_dir, trust_graph

    def load_model(self):
        from ..models.backbones import load_backbone
        return load_backbone(self.spec, self.model_dir, self.trust_graph)

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
    handler = KeyedModelHandler(BackboneHandler(job.spec, job.model_dir, job.bottleneck_batch_size, backbone_threads,
                                                job.trust_graph))
    _ = ({"images": keyed, "cached": cached}
         | "Join with cache" >> beam.CoGroupByKey()
         | "Not cached" >> beam.FlatMap(_missing)
         | "Decode" >> beam.FlatMap(_decode, job.spec.input_size, job.max_image_megapixels)
         | "Backbone" >> RunInference(handler)
         | "Write shards" >> beam.ParDo(_WriteShards(job.bottleneck_dir, job.spec.cache_id, job.feature_size)))
