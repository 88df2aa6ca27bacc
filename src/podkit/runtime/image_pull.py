"""The kubelet's image manager (pkg/kubelet/images): pull policy, pulls with their events, and
what a container needs of an image to run (asyncio shell around oci/).

    policy    imagePullPolicy, defaulted as the API server does: Always for `:latest` or no tag,
              IfNotPresent otherwise; Never with an absent image is ErrImageNeverPull
    events    Pulling image "X"; Successfully pulled image "X" in 1.2s (1.3s including
              waiting). Image size: N bytes.; Container image "X" already present on machine
    failure   ErrImagePull, then ImagePullBackOff for the backoff (10 s doubling to 300 s)

One ImageManager serves a whole podkit run: the store is opened on the first registry image,
the registries file read once (at start when there is one, to refuse a bad one, else at the
first pull); a pod's imagePullSecrets add to the credentials of its own pulls only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from podkit.common import subids
from podkit.manifest.model import Bundle, Container, Pod
from podkit.oci import manifest as mf
from podkit.oci.lower_dirs import link_layers
from podkit.oci.reference import Reference
from podkit.oci.registries_path import default_path
from podkit.oci.store import ImageRecord, Store, StoreError

if TYPE_CHECKING:  # imported when a pull needs them: pydantic and aiohttp cost 60 ms a start
    from podkit.oci.hosts import Hosts
    from podkit.oci.pull import PullProgress

    class PullDisplay(PullProgress, Protocol):
        def close(self) -> None: ...


class PullFailed(Exception):
    """ErrImagePull: the message says why (never with a credential in it)."""


@dataclass(frozen=True, slots=True)
class OciImage:
    ref: Reference
    record: ImageRecord
    config: mf.ImageConfig
    store_root: Path
    lower: tuple[str, ...]  # overlay lower dirs relative to store_root, topmost first

    @property
    def image_id(self) -> str:
        """containerStatuses[].imageID, as containerd reports it: the repo digest."""
        return f"{self.ref.name}@{self.record.digest}"


def pull_policy(c: Container, ref: Reference) -> str:
    declared = c.raw.get("imagePullPolicy")
    if declared:
        return str(declared)
    if ref.digest is None and ref.tag in (None, "latest"):
        return "Always"
    return "IfNotPresent"


def go_duration(seconds: float) -> str:
    """A duration as Go prints a time.Duration truncated to milliseconds (the kubelet's)."""
    ms = int(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


class ImageManager:
    def __init__(
        self,
        state_dir: Path,
        registry_config: Path | None = None,
        progress: Callable[[Reference], PullDisplay] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.registry_config = registry_config
        self.progress = progress  # bars on a terminal (podkit run); None: the events only
        self._store: Store | None = None
        self._hosts: Hosts | None = None
        self._said_rootless = False

    def check_config(self) -> None:
        """Read the registries file now, to refuse a bad one before anything starts
        (hosts.RegistryConfigError); only when some image will come from a registry."""
        if self.registry_config is None and not os.path.exists(default_path()):
            return  # nothing to check (the pull makes its Hosts when it needs them)
        self._load_hosts()

    def _load_hosts(self) -> Hosts:
        from podkit.oci.hosts import Hosts, load

        self._hosts = self._hosts or Hosts(load(self.registry_config))
        return self._hosts

    def rootless_notice(self) -> str | None:
        """Once a run, when an ordinary user pulls without subordinate ids: what that means
        for the image's files (with them, the files keep their owners: nothing to say)."""
        mapping, why = subids.current()
        if os.geteuid() == 0 or mapping is not None or self._said_rootless:
            return None
        self._said_rootless = True
        return (
            f"rootless: the files of registry images belong to you (uid {os.getuid()}), root in "
            f"the pod; the owners the layers name are not kept ({why})"
        )

    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.state_dir / "oci")
        return self._store

    def present(self, ref: Reference) -> OciImage | None:
        """The image as stored under this name, if every layer of it is there."""
        store = self.store()
        record = store.get_image(str(ref))
        if record is None:
            return None
        try:
            config = mf.parse_config(store.read_blob(record.config))
        except (OSError, StoreError, mf.ManifestError):
            return None
        if not all(store.has_layer(c) for c in mf.chain_ids(config.diff_ids)):
            return None
        return self._image(ref, record, config)

    def _image(self, ref: Reference, record: ImageRecord, config: mf.ImageConfig) -> OciImage:
        root = self.store().root
        lower = link_layers(root, mf.chain_ids(config.diff_ids))
        return OciImage(ref, record, config, root, tuple(lower))

    async def pull(self, ref: Reference, pod: Pod, bundle: Bundle) -> OciImage:
        """Pull `ref` with the pod's imagePullSecrets (PullFailed)."""
        from podkit.oci.hosts import RegistryConfigError, pull_secret_credentials
        from podkit.oci.pull import Puller
        from podkit.oci.registry import PullError, RegistryClient

        try:
            known = self._load_hosts()
        except RegistryConfigError as exc:
            raise PullFailed(str(exc)) from None
        hosts = replace(known, secrets=pull_secret_credentials(_pull_secrets(pod, bundle)))
        client = RegistryClient(hosts)
        show = self.progress(ref) if self.progress is not None else None
        try:
            pulled = await Puller(self.store(), client).pull(ref, show)
        except (PullError, mf.ManifestError, StoreError, OSError) as exc:
            raise PullFailed(str(exc)) from None
        finally:
            if show is not None:
                show.close()
            await client.close()
        return self._image(ref, pulled.record, pulled.config)


def _pull_secrets(pod: Pod, bundle: Bundle) -> list[tuple[str, Mapping[str, bytes]]]:
    """The Secrets the pod's imagePullSecrets name (those absent are skipped, as the kubelet
    skips them with a warning event)."""
    out: list[tuple[str, Mapping[str, bytes]]] = []
    for item in pod.raw.get("spec", {}).get("imagePullSecrets") or []:
        secret = bundle.secrets.get((pod.namespace, str(item.get("name", ""))))
        if secret is not None:
            out.append((secret.type, secret.data))
    return out
