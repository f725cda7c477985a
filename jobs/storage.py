"""Read and write one artifact file by URI: a local path, or a ``tf.io.gfile`` URL.

Local files are written atomically (a temporary file in the same folder, then a rename), so a
reader never sees half a file. TensorFlow is imported only for URLs (``gs://``, ``s3://``, …):
an API process on a local artifact root never loads it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def is_url(uri: str) -> bool:
    """Whether ``uri`` is a URL (``gs://…``, ``s3://…``, ``file://…``) rather than a local path.

    The one test of it: the artifact store, the launcher, the API's model cache and the model
    routes all decide "local file or shared storage" here.
    """
    return "://" in uri


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, creating its folder; replaces an existing file."""
    if is_url(uri):
        import tensorflow as tf

        tf.io.gfile.makedirs(uri.rsplit("/", 1)[0])
        with tf.io.gfile.GFile(uri, "wb") as f:
            f.write(data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bytes(uri: str) -> bytes:
    """The whole file at ``uri``.

    Raises:
        FileNotFoundError: nothing is there.
    """
    if is_url(uri):
        import tensorflow as tf

        if not tf.io.gfile.exists(uri):
            raise FileNotFoundError(uri)
        with tf.io.gfile.GFile(uri, "rb") as f:
            data: bytes = f.read()
            return data
    return Path(uri).read_bytes()
