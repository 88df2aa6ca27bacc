"""Server-side TLS for listeners: modern defaults (TLS 1.2+, forward-secret AEAD ciphers), a
certificate per SNI name, ALPN, optional client certificates (mTLS)."""

from __future__ import annotations

import ssl

from podkit.proxy.config import ListenerTls

# TLS 1.2 suites with forward secrecy and AEAD only (Mozilla's "intermediate" list); TLS 1.3
# suites are all fine and are not affected by this setting.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def _context(config: ListenerTls, cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if config.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except OSError as exc:  # ssl.SSLError is one too; "PEM lib" alone says nothing of where
        raise OSError(f"certificate {cert_file}, key {key_file}: {exc.strerror or exc}") from None
    if config.alpn:
        ctx.set_alpn_protocols(config.alpn)
    if config.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(config.client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if config.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def _name_matches(pattern: str, name: str) -> bool:
    pattern = pattern.lower()
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return name == pattern


Contexts = list[tuple[list[str], ssl.SSLContext]]  # (SNI names, context), the default first
Loaded = tuple[ListenerTls, Contexts]  # certificates read, not yet in use


def _build(config: ListenerTls) -> Contexts:
    built = [
        (cert.server_names, _context(config, str(cert.cert_file), str(cert.key_file)))
        for cert in config.certificates
    ]
    # The default (no SNI, or an unknown name) is the first certificate without names.
    built.sort(key=lambda item: bool(item[0]))
    return built


class ServerTls:
    """The listener's TLS: `context` is handed to the server once; a new handshake takes the
    certificates as they are on disk now (reload() rebuilds them when their files change), and
    SNI picks among several."""

    def __init__(self, config: ListenerTls) -> None:
        self.config = config
        self._stamp = self._files_stamp()
        self._contexts = _build(config)
        self.context = self._contexts[0][1]
        self.context.sni_callback = self._pick  # type: ignore[assignment]

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for cert in self.config.certificates:
            for path in (cert.cert_file, cert.key_file):
                try:
                    st = path.stat()
                    out.append((st.st_mtime_ns, st.st_size))
                except OSError:
                    out.append((0, 0))
        return tuple(out)

    def same_settings(self, config: ListenerTls) -> bool:
        """Only the certificates differ: a handshake can switch to them (SNI callback), while
        versions, ciphers and client verification are fixed when the listener is made."""
        keep = {"certificates"}
        return self.config.model_dump(exclude=keep) == config.model_dump(exclude=keep)

    def load(self, config: ListenerTls) -> Loaded:
        """New certificates (a config reload), loaded but not in use until install(); raises
        ssl.SSLError / OSError."""
        return config, _build(config)

    def install(self, loaded: Loaded) -> None:
        self.config, self._contexts = loaded
        self._stamp = self._files_stamp()

    def reload(self) -> bool:
        """Rebuild from the files when they changed; on a bad file keep serving the old ones."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self._contexts = _build(self.config)  # raises ssl.SSLError / OSError: the caller logs it
        return True

    def _pick(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        contexts = self._contexts
        if server_name:
            name = server_name.lower()
            for names, ctx in contexts:
                if any(_name_matches(p, name) for p in names):
                    sock.context = ctx
                    return
        sock.context = contexts[0][1]
