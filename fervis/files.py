"""Files fervis writes: whole-file writes that a kill cannot leave half done, and the cache folder."""

import os
import pathlib
import tempfile

__all__ = ["write_atomic", "temporary_path", "fervis_home"]


# Read once, at import: os.umask can only be read by setting it, which changes it for every thread
# of the process for that moment (a file another thread creates then would get mode 0666).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temporary_path(path, suffix=".tmp"):
    """A new, empty, private temporary file beside ``path`` (same folder, so ``os.replace`` works).

    Made with :func:`tempfile.mkstemp` (``O_CREAT | O_EXCL``, an unpredictable name), so it never
    follows a symlink planted under a guessed name. The caller writes it, then replaces ``path``
    with it or removes it.

    Parameters
    ----------
    path : str or path-like
        The file the temporary one will replace.
    suffix : str, default ".tmp"
        Keras, for one, wants ``".keras"``.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> tmp = temporary_path(p)
    >>> tmp.name.startswith(".a.txt.") and tmp.stat().st_size == 0
    True
    """
    path = pathlib.Path(os.fspath(path))
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        # mkstemp makes the file private (0600); give it the mode of the file it will replace,
        # or the usual one for a new file (0666 less the umask).
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o666 & ~_UMASK
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return pathlib.Path(name)


def write_atomic(path, data, encoding="utf-8", suffix=".tmp", what="file"):
    """Write ``path`` whole: ``data`` (``str``, ``bytes``, or a function that writes a file).

    The data goes to a new temporary file beside ``path`` (:func:`temporary_path`), which then
    replaces ``path`` with ``os.replace`` (a symlink at ``path`` is replaced, not followed); if
    writing fails, the temporary file is removed and ``path`` is left as it was. This is the one
    atomic write of fervis: the data cache, checkpoints, models, histories and monitoring logs.

    Parameters
    ----------
    path : str or path-like
    data : str, bytes or callable
        A callable is called with the temporary file's path (a ``pathlib.Path``) and writes it
        (Keras' ``model.save``; ``np.savez`` into ``open(tmp, "wb")``).
    encoding : str, default "utf-8"
        Used for ``str`` data.
    suffix : str, default ".tmp"
        Of the temporary file (Keras wants ``".keras"``).
    what : str, default "file"
        Names the file in the error of a failed write: ``"Cannot write checkpoint '...' (via
        .checkpoint.keras.x1y2.keras): No space left on device"``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OSError
        A failed write (a full disk), naming ``what``, ``path`` and the temporary file, with the
        original ``errno``.

    Example
    -------
    >>> p = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "hello")
    >>> p.read_text()
    'hello'
    """
    path = pathlib.Path(os.fspath(path))
    if not isinstance(data, (str, bytes)) and not callable(data):
        raise TypeError(f"write_atomic writes str or bytes, or calls a function that writes, to {str(path)!r}. "
                        f"Got {type(data).__name__} instead.")
    if isinstance(data, str):
        data = data.encode(encoding)
    tmp = temporary_path(path, suffix=suffix)
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        message = f"Cannot write {what} {str(path)!r} (via {tmp.name}): {err.strerror or err}"
        raise (OSError(err.errno, message) if err.errno is not None else OSError(message)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def fervis_home():
    """The fervis cache folder, absolute: ``$FERVIS_HOME``, else the user's cache folder for fervis.

    A relative ``$FERVIS_HOME`` is resolved against the working folder the first time it is read
    and written back to the environment as an absolute path, so processes started later (the
    report's notebook kernels, which run in ``notebooks/``) use the same folder.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> fervis_home().is_absolute()
    True
    """
    home = os.environ.get("FERVIS_HOME")
    if home:
        absolute = os.path.abspath(os.path.expanduser(home))
        if absolute != home:
            os.environ["FERVIS_HOME"] = absolute
        return pathlib.Path(absolute)
    import platformdirs

    return pathlib.Path(platformdirs.user_cache_dir("fervis")).absolute()
