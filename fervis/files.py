"""Whole-file writes: a reader (or a run killed mid-write) sees the old file or the new one."""

import os
import pathlib

__all__ = ["write_atomic"]


def write_atomic(path, data, encoding="utf-8"):
    """Write ``data`` (``str`` or ``bytes``) to ``path`` whole.

    The data goes to a temporary file beside ``path`` (same folder, so the same file system),
    which then replaces ``path`` with ``os.replace``; if writing fails, the temporary file is
    removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or path-like
    data : str or bytes
    encoding : str, default "utf-8"
        Used for ``str`` data.

    Returns
    -------
    pathlib.Path
        ``path``.

    Example
    -------
    >>> import tempfile
    >>> p = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hello")
    >>> p.read_text()
    'hello'
    """
    path = pathlib.Path(os.fspath(path))
    if not isinstance(data, (str, bytes)):
        raise TypeError(f"write_atomic writes str or bytes to {str(path)!r}. Got {type(data).__name__} instead.")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
