"""Output helpers shared by every command: atomic writes, so an error never leaves a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def output_target(path) -> tuple[Path, bool]:
    """Where an output named ``path`` really goes, and whether to write into it in place.

    A symbolic link is followed, so the link stays and its target gets the new contents (as ``cp`` and editors do);
    a device, FIFO or socket (``-o /dev/null``) is written in place, since renaming a file over it would replace the
    node itself. Anything else is written beside the target and renamed over it."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    special = path.exists() and not path.is_file() and not path.is_dir()
    return path, special


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """Open a temporary file beside ``path``; on success rename it over ``path``, on error remove it. A device or
    FIFO is written in place, a symbolic link's target replaced (:func:`output_target`)."""
    path, special = output_target(path)
    if special:
        with open(path, mode) as f:
            yield f
        return
    ensure_parent(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, cannot write the file there")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)        # mkstemp makes 0600 files; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_default(o):
    """``json.dumps(default=...)`` hook for what our reports hold besides plain Python: NumPy scalars and arrays,
    paths."""
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def write_json(path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=json_default)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path):
    """Build a directory's contents in a temporary sibling; on success it replaces ``path`` whole."""
    path = Path(path)
    if path.is_symlink():                    # keep the link; its target directory gets the new contents
        path = Path(os.path.realpath(path))
    ensure_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)        # mkdtemp makes 0700 directories; outputs are ordinary directories
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- per-sample predictions in metadata -------------------------------------------------------------------------------

def encode_predictions(pred) -> str:
    """Per-sample classes as a compact string for an artifact's metadata: base64 of little-endian uint16."""
    import base64
    import numpy as np
    return base64.b64encode(np.asarray(pred, dtype="<u2").tobytes()).decode()


def decode_predictions(text: str):
    """Inverse of :func:`encode_predictions` (int64 array); ValueError when ``text`` is not such a string."""
    import base64
    import numpy as np
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<u2").astype(np.int64)


# --- output paths ----------------------------------------------------------------------------------------------------

def ensure_parent(path) -> Path:
    """Create ``path``'s missing parent directories (every command's ``-o`` does the same); refuse, naming the path
    the user gave, when a parent exists but is not a directory."""
    path = Path(path)
    parent = path.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(f"{path}: cannot write it: {p} is a file, not a directory")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{path}: cannot create its directory {parent} ({e.strerror or e})") from None
    return path


def not_utf8(e: UnicodeDecodeError) -> str:
    """The words for a text file that is not UTF-8: the first bad byte and its offset."""
    return f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"


def check_not_input(out, inputs, option: str) -> None:
    """Refuse an output path that names one of the command's input files (it would be replaced by the output)."""
    for inp in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(out, inp):
                raise ValueError(f"{option} {out} is the input {inp} itself; write the output to another file")


def check_output(path, option: str) -> None:
    """Refuse, before the work that produces it, an output that could not be written: ``path`` is a directory, a
    parent is a file, or the nearest existing parent takes no new file (probed with a temporary file, since
    permission bits say little to root). Creates nothing. ``option`` names the option in the message ("-o")."""
    target, special = output_target(path)
    if special:
        return
    if target.is_dir():
        raise IsADirectoryError(f"{option} {path}: is a directory, expected a file path")
    nearest = next(p for p in [target.parent, *target.parent.parents] if p.exists())
    if not nearest.is_dir():
        raise NotADirectoryError(f"{option} {path}: cannot write it: {nearest} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bsnn-hw-probe-", dir=nearest)
    except OSError as e:
        raise OSError(f"{option} {path}: cannot write it: {nearest} takes no new file ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def atomic_write_files(files: dict) -> None:
    """Write several files as one: every file is first written beside its target; only when all are complete are
    they renamed into place, and if a rename fails the targets already replaced get their old contents back (or are
    removed), so an error never leaves a mix of new and old files. An error while writing names the target, never
    the temporary file beside it. ``files``: {path: str or bytes}."""
    temps, done = [], []
    targets = {path: output_target(path) for path in files}
    special = {target: files[path] for path, (target, in_place) in targets.items() if in_place}
    try:
        for path, content in files.items():
            path, in_place = targets[path]
            if in_place:
                continue
            path = ensure_parent(path)
            if path.is_dir():
                raise IsADirectoryError(f"{path}: is a directory, cannot write the file there")
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            temps.append((Path(tmp), path))
            with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())       # on disk before the rename makes it visible
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
        for tmp, path in temps:
            backup = None
            if path.exists():
                backup = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, backup)
            done.append((path, backup))
            os.replace(tmp, path)
    except OSError as e:
        _rollback(done, temps)
        where = next((str(p) for _, p in temps if e.filename and Path(e.filename).parent == p.parent
                      and Path(e.filename).name.startswith(f".{p.name}.")), None)
        if where is None:
            raise
        raise OSError(f"{where}: cannot write it ({e.strerror or e})") from None
    except BaseException:
        _rollback(done, temps)
        raise
    for _, backup in done:
        if backup is not None:
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()
    for path, content in special.items():     # devices and FIFOs last: they cannot be rolled back
        with open(path, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)


def _rollback(done, temps) -> None:
    """Put back the files a failed :func:`atomic_write_files` replaced, and remove its temporary files."""
    for path, backup in reversed(done):
        with contextlib.suppress(OSError):
            if backup is not None:
                os.replace(backup, path)
            elif path.exists():
                path.unlink()
    for tmp, _ in temps:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- memory ----------------------------------------------------------------------------------------------------------

class MemoryLimit(ValueError):
    """A job refused up front because it would not fit in memory; the message gives the numbers."""


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; elsewhere free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_memory(need: int, what: str) -> None:
    """Refuse ``what`` when it would need more memory than is available."""
    have = available_memory()
    if need > have:
        raise MemoryLimit(f"{what} would need about {human_bytes(need)} of memory but {human_bytes(have)} is "
                          f"available; make it smaller")


# --- the cache -------------------------------------------------------------------------------------------------------

CACHE_ENV = "BSNN_HW_CACHE"


def cache_dir(kind: str) -> Path:
    """Where simulator builds (``kind="sim"``) and synthesis results (``"synth"``) are cached: ``$BSNN_HW_CACHE/<kind>``,
    else ``$XDG_CACHE_HOME/bsnn-hw/<kind>`` (default ``~/.cache/bsnn-hw/<kind>``). Never the working directory: a
    build there would follow the user from project to project, and a space in its path breaks Verilator's make."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser() / kind
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "bsnn-hw" / kind
