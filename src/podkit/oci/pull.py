"""Pulling an image into the store: manifest (resolved to this platform), config, layers.

    resolve   GET manifests/<tag|digest>; an index -> the manifest for this platform
    config    the image config blob (small), checked
    layers    up to `concurrency` (3) at a time: download (resumable, checked), then unpack
              into layers/<ChainID> and check the DiffID; a layer already there is skipped
    record    images.db: name -> manifest digest

Concurrent pulls, in this process or another, download and unpack each blob and layer once:
each is done under its own flock (store.py), and whoever gets the lock second finds it done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from podkit.common import subids
from podkit.common.userns import remove_tree
from podkit.oci import manifest as mf
from podkit.oci.reference import Reference
from podkit.oci.registry import PullError, RegistryClient
from podkit.oci.store import ImageRecord, Store
from podkit.oci.unpack import LayerError, UnpackStats, unpack_layer
from podkit.oci.unpack_mapped import unpack_mapped


class PullProgress(Protocol):
    """What a pull reports as it goes (a progress bar, or one line an image)."""

    def layer(self, digest: str, size: int, present: bool) -> None: ...
    def advance(self, digest: str, nbytes: int) -> None: ...
    def layer_done(self, digest: str) -> None: ...


class _Quiet:
    def layer(self, digest: str, size: int, present: bool) -> None:
        return None

    def advance(self, digest: str, nbytes: int) -> None:
        return None

    def layer_done(self, digest: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Pulled:
    record: ImageRecord
    config: mf.ImageConfig
    downloaded: int  # bytes fetched in this pull (0: everything was there)


class Puller:
    def __init__(
        self,
        store: Store,
        client: RegistryClient,
        *,
        concurrency: int = 3,
        platform: mf.Platform | None = None,
        rootless: bool | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.platform = platform or mf.this_platform()
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        # Rootless with subordinate ids, layers are unpacked with their owners (unpack_mapped).
        self.mapping = subids.current()[0] if self.rootless else None
        self._slots = asyncio.Semaphore(concurrency)

    async def pull(self, ref: Reference, progress: PullProgress | None = None) -> Pulled:
        async with self._locked("gc", shared=True):  # no prune while this pull is unnamed
            self.store.remove_stale_tmp()
            return await self._pull(ref, progress or _Quiet())

    async def _pull(self, ref: Reference, progress: PullProgress) -> Pulled:
        digest, manifest = await self._resolve(ref)
        config_data = await self._config(ref, manifest.config)
        config = mf.parse_config(config_data)
        if len(config.diff_ids) != len(manifest.layers):
            raise PullError(
                f"{ref}: the manifest has {len(manifest.layers)} layers, the config "
                f"{len(config.diff_ids)} diff_ids"
            )
        chains = mf.chain_ids(config.diff_ids)
        tasks = [
            asyncio.create_task(self._layer(ref, desc, diff, chain, progress))
            for desc, diff, chain in zip(manifest.layers, config.diff_ids, chains, strict=True)
        ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # One layer failed: stop the others and let them clean up (a download keeps what
            # it has for the next pull; an unpack removes its directory) before saying so.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        size = len(self.store.read_blob(digest)) + manifest.config.size
        size += sum(d.size for d in manifest.layers)
        record = ImageRecord(
            str(ref), digest, manifest.config.digest, size, config.created, time.time()
        )
        self.store.put_image(record)
        return Pulled(record, config, sum(results))

    async def _resolve(self, ref: Reference) -> tuple[str, mf.Manifest]:
        """The manifest for this platform, stored, and its digest."""
        body, content_type, digest = await self.client.manifest(ref, ref.target)
        kind = mf.media_type(body, content_type)
        mf.check_supported(kind)
        if kind in mf.INDEXES:
            self.store.put_blob(digest, body)
            chosen = mf.choose(body, self.platform)
            body, content_type, digest = await self.client.manifest(ref, chosen.digest)
            kind = mf.media_type(body, content_type)
            mf.check_supported(kind)
            if kind not in mf.MANIFESTS:
                raise PullError(f"{ref}: an index inside an index is not supported")
        self.store.put_blob(digest, body)
        return digest, mf.parse_manifest(body)

    async def _config(self, ref: Reference, desc: mf.Descriptor) -> bytes:
        if self.store.has_blob(desc.digest):
            return self.store.read_blob(desc.digest)
        data = await self.client.blob(ref, desc)
        self.store.put_blob(desc.digest, data)
        return data

    async def _layer(
        self, ref: Reference, desc: mf.Descriptor, diff_id: str, chain: str, progress: PullProgress
    ) -> int:
        """Make layers/<chain> exist; the bytes downloaded for it."""
        if self.store.has_layer(chain):
            progress.layer(desc.digest, desc.size, True)
            return 0
        async with self._slots, self._locked(f"layer-{chain[7:]}"):
            if self.store.has_layer(chain):  # unpacked meanwhile, by another pull
                progress.layer(desc.digest, desc.size, True)
                return 0
            progress.layer(desc.digest, desc.size, False)
            fetched = await self._blob(ref, desc, progress)
            tmp = self.store.new_layer_dir()
            blob = self.store.blob_path(desc.digest)
            unpacking = asyncio.ensure_future(asyncio.to_thread(self._unpack, blob, tmp))
            try:
                got = await asyncio.shield(unpacking)
            except BaseException as exc:
                # A thread cannot be stopped: on cancel, wait for it before removing its work.
                with contextlib.suppress(BaseException):
                    await unpacking
                await asyncio.to_thread(remove_tree, tmp)
                if isinstance(exc, LayerError):
                    raise PullError(f"{ref}: layer {desc.digest}: {exc}") from None
                raise
            if got.diff_id != diff_id:
                await asyncio.to_thread(remove_tree, tmp)
                raise PullError(
                    f"{ref}: layer {desc.digest} unpacks to {got.diff_id}, the config says "
                    f"{diff_id}: not used"
                )
            self.store.commit_layer(tmp, chain)
            progress.layer_done(desc.digest)
            return fetched

    def _unpack(self, blob: Path, dest: Path) -> UnpackStats:
        if self.mapping is not None:
            return unpack_mapped(blob, dest, self.mapping)
        return unpack_layer(blob, dest, rootless=self.rootless)

    async def _blob(self, ref: Reference, desc: mf.Descriptor, progress: PullProgress) -> int:
        if self.store.has_blob(desc.digest):
            return 0
        async with self._locked(f"blob-{desc.digest[7:]}"):
            if self.store.has_blob(desc.digest):
                return 0
            path = self.store.ingest_path(desc.digest)
            before = path.stat().st_size if path.exists() else 0
            if before:
                progress.advance(desc.digest, before)  # resumed: counted as there
            await self.client.download(ref, desc, path, lambda n: progress.advance(desc.digest, n))
            self.store.commit_ingest(desc.digest)
            return desc.size - before

    @contextlib.asynccontextmanager
    async def _locked(self, name: str, *, shared: bool = False) -> AsyncIterator[None]:
        """The flock `name`, waited for in a thread. Pulls of this process queue on an asyncio
        lock first: a flock conflicts between two fds of one process too, and pods pulling
        the same layers would otherwise fill the thread pool with waits for each other."""
        if shared:  # shared flocks do not conflict with each other
            fd = await asyncio.to_thread(self.store.acquire, name, shared=True)
            try:
                yield
            finally:
                os.close(fd)
            return
        local = self.store.process_locks.setdefault(name, asyncio.Lock())
        async with local:
            fd = await asyncio.to_thread(self.store.acquire, name)
            try:
                yield
            finally:
                os.close(fd)
