"""Results on disk: atomic output (nothing half-written is ever left under a final name) and
CSV cells read back."""

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

# Errors of the filesystem, not of the program: a full disk, `ulimit -f`, a read-only mount.
_WRITE_ERRNOS = {errno.EFBIG, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
# The same as HDF5 words them in the RuntimeErrors and OSErrors of h5py ("unable to extend file
# properly, errno = 27, error message = 'File too large'").
_HDF5_WRITE_ERROR = re.compile(r"errno = (\d+), error message = '([^']*)'")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.
    A path that cannot be written (a directory, a missing or read-only place, a full disk or
    `ulimit -f` while writing) is one UserError naming it; nothing lands under its name."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a directory, not a file (give the file's path)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(f"{path}: cannot write there ({err.strerror or err})") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs are for sharing
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        why = _write_failure(err)
        if why is None:
            raise
        raise UserError(f"{path}: writing it failed ({why}); nothing was written under this name") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_failure(err: BaseException) -> str | None:
    """Why writing failed, when `err` is the filesystem's doing; None for other errors."""
    if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
        return err.strerror or os.strerror(err.errno)
    found = _HDF5_WRITE_ERROR.search(str(err))
    return found[2] if found and int(found[1]) in _WRITE_ERRNOS else None


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) the same inode
    (a hard link, a symlink)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwrite(outputs: Sequence[Path | str | None], inputs: Sequence[Path | str | None]) -> None:
    """An output never replaces an input: UserError naming both when one of `outputs` is one of `inputs`."""
    for out in outputs:
        for given in inputs:
            if out is not None and given is not None and same_file(out, given):
                raise UserError(f"{out}: this output would replace the input {given}; give the output another path")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def float_or_nan(x: Any) -> float:
    """float(x), or NaN for what is not a number (None, "", text): CSV cells read back."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
