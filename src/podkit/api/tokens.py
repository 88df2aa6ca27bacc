"""Bound service account tokens, as the apiserver issues them (TokenRequest) and the kubelet
projects them into pods: an ES256 JWT naming the ServiceAccount and the pod it is bound to,
with an expiry; valid only while that pod exists. Signed with a key of serve's own
(`pki/sa.key`), kept across restarts. joserfc (authlib's JOSE, already a dependency) signs
and checks them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

ISSUER = "https://kubernetes.default.svc.cluster.local"
LIFETIME = 3607  # seconds: what the kubelet asks for a projected token


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    pod: str
    pod_uid: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


class Signer:
    def __init__(self, key_file: Path) -> None:
        if key_file.exists():
            self.key = ECKey.import_key(key_file.read_bytes())
        else:
            self.key = ECKey.generate_key("P-256")
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key_file.touch(mode=0o600)
            key_file.write_bytes(self.key.as_pem(private=True))

    def issue(self, who: Identity, sa_uid: str, lifetime: int = LIFETIME) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER, "aud": [ISSUER], "sub": who.user, "iat": now, "nbf": now,
            "exp": now + lifetime,
            "kubernetes.io": {
                "namespace": who.namespace,
                "serviceaccount": {"name": who.service_account, "uid": sa_uid},
                "pod": {"name": who.pod, "uid": who.pod_uid},
            },
        }  # fmt: skip
        return jwt.encode({"alg": "ES256"}, claims, self.key)

    def check(self, token: str) -> Identity | None:
        """The identity a token carries, if this serve signed it for its audience and it has
        not expired; None otherwise (the caller checks the pod still exists)."""
        try:
            claims = jwt.decode(token, self.key, algorithms=["ES256"]).claims
        except (JoseError, ValueError):
            return None
        now = time.time()
        if claims.get("iss") != ISSUER or ISSUER not in (claims.get("aud") or []):
            return None
        if not claims.get("nbf", 0) - 60 <= now < claims.get("exp", 0):
            return None
        bound = claims.get("kubernetes.io") or {}
        pod = bound.get("pod") or {}
        return Identity(
            str(bound.get("namespace", "")),
            str((bound.get("serviceaccount") or {}).get("name", "")),
            str(pod.get("name", "")),
            str(pod.get("uid", "")),
        )
