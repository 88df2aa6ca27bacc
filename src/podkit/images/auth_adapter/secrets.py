"""Secrets from files or environment variables, and a holder that never shows its value.

Kubernetes updates a Secret volume by writing a new timestamped directory and swapping the
`..data` symlink to it; the file the pod names (`/secrets/client_secret`) is itself a symlink
through `..data`. An inotify watch on that path never fires, so a file secret is checked with
stat() (which follows the symlinks to the current real file) each time it is needed and read
again when its identity, size or mtime changed. Token requests are rare, so the syscall is free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"


class Secret:
    """A secret value. repr(), str() and format() show only "[REDACTED]"; `reveal()` gives the
    value to the one place that sends it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value wherever the pickle goes.
        raise TypeError("a Secret cannot be pickled")


class SecretError(Exception):
    """A secret that cannot be had; the message names where it was looked for, never a value."""


Stamp = tuple[int, int, int, int]


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class SecretSource:
    """One secret's origin: a file (read again when it changes) or an environment variable.

    `what` names the setting for messages (`client_secret_file`). A file's trailing newlines are
    dropped (`echo secret > file` and `kubectl create secret --from-file` often leave one); any
    other character, spaces included, is part of the secret.
    """

    def __init__(
        self,
        what: str,
        *,
        path: Path | None = None,
        env: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (path is None) == (env is None):
            raise ValueError("a SecretSource needs exactly one of path and env")
        self.what = what
        self.path = path
        self.env = env
        self._environ = os.environ if environ is None else environ
        self._stamp: Stamp | None = None
        self._value: Secret | None = None

    def __repr__(self) -> str:
        return f"SecretSource({self.describe()})"

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.what} {self.path}"
        return f"{self.what} (environment variable {self.env})"

    def changed(self) -> bool:
        """Whether get() would read something new: a file whose stat differs from the last read
        (or that could not be read last time). Environment variables never change."""
        if self.path is None:
            return False
        try:
            return _stamp(os.stat(self.path)) != self._stamp
        except OSError:
            return self._stamp is not None

    def get(self) -> Secret:
        if self.env is not None:
            value = self._environ.get(self.env)
            if not value:
                raise SecretError(f"{self.describe()}: not set or empty")
            return Secret(value)
        assert self.path is not None
        try:
            if self._value is not None and _stamp(os.stat(self.path)) == self._stamp:
                return self._value
            # fstat of the file actually read: a swap between stat and read cannot pair the old
            # stamp with the new content (it would be read again next time, harmlessly).
            with open(self.path, "rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                raw = f.read()
        except OSError as exc:
            self._stamp, self._value = None, None
            raise SecretError(f"{self.describe()}: cannot read it: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise SecretError(f"{self.describe()}: not UTF-8 text") from None
        if not text:
            raise SecretError(f"{self.describe()}: the file is empty")
        self._stamp, self._value = stamp, Secret(text)
        return self._value


def scrub(text: str, secrets: Iterable[str | Secret | None]) -> str:
    """`text` with every occurrence of each secret value replaced by "[REDACTED]": for messages
    that quote what a server answered (a server may echo the credentials it was sent, as sent:
    so the form-urlencoded and percent-encoded spellings are replaced too)."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        # Very short values would mangle ordinary words and are not worth hiding that way.
        if not value or len(value) < 4:
            continue
        for spelling in sorted({value, quote_plus(value), quote(value, safe="")}, key=len)[::-1]:
            text = text.replace(spelling, REDACTED)
    return text
