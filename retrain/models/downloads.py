"""Fetch a backbone's file into ``--model_dir`` once, verify it, reuse it offline."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError
from ..files import BUNDLED_MODEL_DIRS, file_digest
from ..progress import progress_bar

CHUNK_BYTES = 1 << 20


def verify_file(path: Path, file_hash: str) -> None:
    """Raise UserError if ``path`` does not match ``file_hash`` (``algo:hex``); no-op without a hash."""
    if not file_hash:
        return
    algorithm, expected = file_hash.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise UserError(f"{path} is damaged or not the expected file ({algorithm} {actual[:12]}…, expected "
                        f"{expected[:12]}…); delete it and rerun to download it again")


def download(url: str, destination: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``destination`` with a progress bar; atomic on success."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=f"Downloading {destination.name}") as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def extract_member(archive: Path, member_name: str, destination: Path) -> None:
    """Copy the archive member whose file name is ``member_name`` to ``destination``.

    Only that one file is written, so a hostile archive can't write elsewhere.
    """
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name == member_name]
            if not members:
                raise UserError(f"{archive.name} has no file named {member_name}; the download is not the "
                                f"expected model archive")
            source = tar.extractfile(members[0])
            with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False, suffix=".part") as out:
                shutil.copyfileobj(source, out)
            os.replace(out.name, destination)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(f"{archive} is not a readable archive ({error}); delete it and rerun") from None


def ensure_model_file(url: str, model_dir: Path, model_file: str, archive_member: str = "",
                      file_hash: str = "") -> Path:
    """Path of ``model_dir/model_file``, downloading (and unpacking) it first if missing.

    With the file already there, or bundled with an installed package
    (``BUNDLED_MODEL_DIRS``), nothing touches the network, so this works
    offline. Without it and without a network, the error says what to place
    where.
    """
    target = model_dir / model_file
    if not target.is_file():
        target = next((folder / model_file for folder in BUNDLED_MODEL_DIRS if (folder / model_file).is_file()),
                      target)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        what = f"extract {archive_member} from {url}" if archive_member else f"download {url}"
        try:
            if archive_member:
                archive = target.parent / Path(url.split("?")[0]).name
                if not archive.is_file():
                    download(url, archive)
                extract_member(archive, archive_member, target)
                archive.unlink()
            else:
                download(url, target)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise UserError(f"cannot download {url} ({reason}); to work offline, {what} and place it at "
                            f"{target}") from None
    verify_file(target, file_hash)
    return target
