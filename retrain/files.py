"""File helpers every stage shares: crash-safe writes, digests and content keys,
writability checks, and the default folders (beside a checkout, or in the user's cache when installed)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Iterator, Sequence

from .errors import UserError, option_name, option_value

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A checkout (or an editable install) keeps downloads and the cache beside the project, as the README says. An
# installed package sits in site-packages, so they go to the user's cache folder instead, and the bundled MobileNet,
# installed as data files (setup.cfg), is found where pip put them: the environment's or the user's share/retrain.
IS_CHECKOUT = (PROJECT_ROOT / "setup.cfg").is_file()
USER_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "retrain"
DEFAULT_MODEL_DIR = (PROJECT_ROOT if IS_CHECKOUT else USER_CACHE_DIR) / "models"
DEFAULT_BOTTLENECK_DIR = (PROJECT_ROOT if IS_CHECKOUT else USER_CACHE_DIR) / "bottlenecks"
BUNDLED_MODEL_DIRS = () if IS_CHECKOUT else tuple(
    Path(sysconfig.get_path("data", scheme)) / "share" / "retrain" / "models"
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")))
PLOT_FORMATS = ("png", "pdf", "svg")

# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place.

    A crash, SIGKILL or power cut mid-write leaves only a hidden ``.tmp``
    file, never a half-written file under the final name: the data is synced
    before the rename and the rename is synced after it. The file gets the
    usual permissions (``0666`` minus the umask), not the temporary file's
    owner-only ones, so others can read a graph as they could Poets'.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; choose a writable location") from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except OSError as error:
        remove_quietly(tmp)
        raise UserError(f"cannot write {path}: {error.strerror}; free some space or choose another location") from None
    except BaseException:
        remove_quietly(tmp)
        raise


def check_writable_folder(folder: str | os.PathLike, option: str) -> None:
    """Create ``folder`` and prove a file can be made in it, or raise a UserError naming ``option``.

    Run before the slow stages, so an unwritable output fails in seconds
    instead of after an hour of computing bottlenecks.

    Args:
        folder: the folder to create and test.
        option: the option naming it, without dashes (``"bottleneck_dir"``).
    """
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UserError(f"{option_name(option)}: cannot write in {folder} ({error.strerror}); choose a writable "
                        f"location") from None


def check_writable_file(path: str | os.PathLike, option: str) -> None:
    """Like ``check_writable_folder`` for the folder of an output file, which must not be a folder itself."""
    if Path(path).is_dir():
        raise UserError(f"{option_value(option, path)} is a folder; give a file name")
    check_writable_folder(Path(path).parent, option)


def check_plot_path(path: str | os.PathLike, option: str) -> str:
    """The file format of a plot's ``path`` (png, pdf or svg), or a UserError naming ``option``."""
    file_format = Path(path).suffix.lower().lstrip(".")
    if file_format not in PLOT_FORMATS:
        raise UserError(f"{option_value(option, path)}: use a .png, .pdf or .svg file name")
    return file_format


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # what our picture outputs can be


def check_image_file(path: str | os.PathLike, option: str) -> None:
    """An output picture must be named .png or .jpg and be writable."""
    if Path(path).suffix.lower() not in IMAGE_FORMATS:
        raise UserError(f"{option_value(option, path)}: use a .png or .jpg file name")
    check_writable_file(path, option)


def write_image(image, path: str | os.PathLike, option: str) -> None:
    """Save a PIL image atomically, in the format its name says (checked by ``check_image_file``)."""
    check_image_file(path, option)
    with atomic_write(path) as handle:
        image.save(handle, format=IMAGE_FORMATS[Path(path).suffix.lower()], quality=90)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (not POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def digest_rest(handle: IO[bytes], algorithm: str) -> str:
    """Hex digest of ``handle`` from its current position to the end, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a whole file: ``sha1`` for cache keys, ``sha256``/``md5`` for downloads."""
    with open(path, "rb") as handle:
        return digest_rest(handle, algorithm)


def remove_quietly(path: str | os.PathLike) -> None:
    """Delete ``path`` if it is there; a leftover we could not delete is harmless, never an error."""
    with contextlib.suppress(OSError):
        os.remove(path)


CONTENT_KEY_ALGORITHM = "sha1"


def content_key(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes: the cache key of its bottleneck, and how relabel recognises a file."""
    return file_digest(path, CONTENT_KEY_ALGORITHM)


def hash_files(paths: Sequence[Path], workers: int = 4) -> list[str | None]:
    """Content keys of ``paths``, on ``workers`` threads; None where the file can't be read."""
    def safe_key(path: Path) -> str | None:
        try:
            return content_key(path)
        except OSError:
            return None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(safe_key, paths))


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes free for us on the file system that holds ``folder``, or would: its nearest existing parent's.

    Args:
        folder: a folder, made or not yet.

    Returns:
        ``shutil.disk_usage``'s free bytes (what an unprivileged writer may use).
    """
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def megabytes(size: float) -> str:
    """A size in bytes as the run's messages say it: ``295 MB``, ``0.4 MB`` (a tenth below 10 MB)."""
    return f"{size / 2 ** 20:.{0 if size >= 10 * 2 ** 20 else 1}f} MB"
