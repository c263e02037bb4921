"""MLflow store addresses, checked without importing MLflow: a SQLite file (`sqlite:///<path>`, the default beside
runs/ and multirun/) or a tracking server (`http(s)://host:port`)."""

import os
import pathlib
import urllib.parse

from fedlab.errors import FedlabError

DATABASE = 'mlflow.db'
ARTIFACTS = 'artifacts'
ALLOWED = 'sqlite:///<path>.db or http(s)://<host>:<port> of a running tracking server'


def default_uri(store_dir: pathlib.Path) -> str:
    return f'sqlite:///{store_dir.resolve() / DATABASE}'


def sqlite_path(uri: str) -> pathlib.Path | None:
    """The database file of a sqlite:/// URI, or None for another scheme."""
    if not uri.startswith('sqlite:///'):
        return None
    return pathlib.Path(uri[len('sqlite:///'):]).expanduser()


def check(uri: str) -> None:
    """FedlabError unless `uri` is one fedlab can open: a SQLite file whose folder exists or can be made and written,
    or an http(s) address with a host."""
    uri = str(uri)
    path = sqlite_path(uri)
    if path is not None:
        folder = _existing_ancestor(path.parent)
        if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            raise FedlabError(f'tracker.uri={uri}: cannot write the SQLite store {path} (allowed: {ALLOWED})')
        return
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise FedlabError(f'tracker.uri={uri} is not allowed: {ALLOWED}')


def _existing_ancestor(folder: pathlib.Path) -> pathlib.Path:
    """`folder` or its nearest ancestor that exists (a file there: the store's folder cannot be made)."""
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    return folder
