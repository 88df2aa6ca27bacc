"""The generic REST path every kind shares (the apiserver's generic registry): create, get,
list, replace, patch and delete over the object store, with the apiserver's defaulting of
metadata, name rules, field validation and errors. No HTTP here (api/server.py)."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import re
import secrets
import uuid
from typing import Any

from podkit.api import patch as patches
from podkit.api import pods, service_accounts, services, smp, status, tokens, workloads
from podkit.api.kinds import (
    CONFIGMAP,
    KINDS,
    NAMESPACE,
    POD,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    Kind,
    Obj,
)
from podkit.manifest import schema
from podkit.store import objects
from podkit.store.objects import ObjectStore, StoreError

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# What the server owns in metadata: kept from the stored object on update.
_SERVER_FIELDS = ("uid", "creationTimestamp", "generation", "selfLink")

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String: no vowels, no look-alikes


def random_suffix(n: int = 5) -> str:
    """What generateName appends, as the apiserver's name generator writes it."""
    return "".join(secrets.choice(_SUFFIX) for _ in range(n))


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Rest:
    def __init__(
        self, store: ObjectStore, node_name: str = "", service_cidr: str = services.SERVICE_CIDR
    ) -> None:
        self.store = store
        self.service_cidr = service_cidr  # where Services' cluster IPs come from
        # With a node (podkit serve), pods are bound to it and deleted gracefully: the node
        # stops the containers, then removes the object (finish_delete).
        self.node_name = node_name
        self.warnings: list[str] = []  # of the request being handled: Warning headers
        self.dry_run = False  # the request's dryRun=All: everything but the write
        self._emptying: set[str] = set()  # namespaces whose contents are being deleted now
        # serve's: service account tokens are signed, and pods get them (service_accounts.py)
        self.signer: tokens.Signer | None = None
        self.root_ca = ""  # the CA every namespace's kube-root-ca.crt ConfigMap holds

    # --- reads -------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        obj = self.store.get(self.key(kind, namespace, name))
        if obj is None:
            raise status.not_found(kind, name)
        return self.outward(kind, obj)

    def prefix(self, kind: Kind, namespace: str | None) -> str:
        """The store's key prefix of a kind's objects: in one namespace, or (None) in all."""
        scope = namespace if kind.namespaced else ""
        return objects.prefix(kind.store_group, kind.stored.resource, scope)

    def list_objects(self, kind: Kind, namespace: str | None) -> tuple[list[Obj], int]:
        items, rv = self.store.list_prefix(self.prefix(kind, namespace))
        return ([self.outward(kind, o) for o in items] if kind.view else items), rv

    @staticmethod
    def outward(kind: Kind, stored: Obj) -> Obj:
        """A stored object as `kind` shows it (another kind's, for a view)."""
        return kind.view.outward(stored) if kind.view else stored

    def _write(self, kind: Kind, namespace: str, name: str, obj: Obj) -> Obj:
        """Stores a new version of an object that exists; returns it as `kind` shows it."""
        key = self.key(kind, namespace, name)
        return self.outward(
            kind, self.store.update(key, kind.view.inward(obj) if kind.view else obj)
        )

    # --- writes ------------------------------------------------------------------------

    def create(self, kind: Kind, namespace: str, body: Any, validation: str = "Strict") -> Obj:
        creating = kind.create_problems
        problems = creating(body) if creating is not None and isinstance(body, dict) else []
        obj = self._checked_body(kind, namespace, body, None, validation, problems)
        name = given = obj["metadata"].get("name") or ""
        if not name and obj["metadata"].get("generateName"):
            name = obj["metadata"]["generateName"] + random_suffix()
            obj["metadata"]["name"] = name
        self._check_name(kind, name)
        if kind.namespaced:
            self._namespace_exists(namespace)
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        if kind.generation:
            meta["generation"] = 1
        if kind is POD:
            obj = pods.defaulted(obj, self.node_name, meta["creationTimestamp"])
            if self.signer is not None:
                account_name = obj["spec"].get("serviceAccountName", "default")
                account = self.store.get(self.key(SERVICE_ACCOUNT, namespace, account_name))
                if account is None:  # the ServiceAccount admission plugin's refusal
                    raise status.forbidden(
                        POD, given or meta.get("generateName", ""),
                        f"error looking up service account {namespace}/{account_name}: "
                        f'serviceaccount "{account_name}" not found',
                    )  # fmt: skip
                obj = service_accounts.admitted(obj, account, random_suffix())
        if kind.prepare is not None:
            obj = kind.prepare(obj)
        if kind.validate is not None and (causes := kind.validate(obj, None)):
            raise status.invalid(kind, name, causes)
        if kind is SERVICE:
            obj = self._allocate(obj, None)
        if kind is NAMESPACE:
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if self.dry_run:
            if self.store.get(self.key(kind, namespace, name)) is not None:
                raise status.already_exists(kind, name)
            return obj
        try:
            stored = kind.view.inward(obj) if kind.view else obj
            made = self.outward(kind, self.store.create(self.key(kind, namespace, name), stored))
        except StoreError:
            raise status.already_exists(kind, name) from None
        if kind is NAMESPACE:  # every namespace has its `default` ServiceAccount
            account = {"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "default", "namespace": name}}  # fmt: skip
            with contextlib.suppress(status.ApiError):
                self.create(SERVICE_ACCOUNT, name, account)
            self.publish_root_ca(name)
        return made

    def publish_root_ca(self, namespace: str) -> None:
        """The namespace's kube-root-ca.crt ConfigMap (the root CA publisher's), for the
        service account volumes' ca.crt."""
        if not self.root_ca:
            return
        ca = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": service_accounts.ROOT_CA, "namespace": namespace},
              "data": {"ca.crt": self.root_ca}}  # fmt: skip
        with contextlib.suppress(status.ApiError):
            self.create(CONFIGMAP, namespace, ca)

    def replace(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Any,
        validation: str = "Strict",
        subresource: str = "",
    ) -> Obj:
        if subresource == "scale":
            return self._replace_scale(kind, namespace, name, body)
        current = self.get(kind, namespace, name)
        obj = self._checked_body(kind, namespace, body, name, validation)
        if subresource == "status":
            return self._update_status(kind, namespace, name, current, obj)
        return self._update(kind, namespace, name, current, obj)

    def get_scale(self, kind: Kind, namespace: str, name: str) -> Obj:
        return workloads.scale_of(self.get(kind, namespace, name))

    def _replace_scale(self, kind: Kind, namespace: str, name: str, body: Any) -> Obj:
        """A write through the scale subresource: only spec.replicas changes."""
        if not isinstance(body, dict) or body.get("kind", "Scale") != "Scale":
            raise status.bad_request("the body of a scale request must be an autoscaling/v1 Scale")
        current = self.get(kind, namespace, name)
        obj, causes = workloads.scaled(current, body)
        if causes:
            raise status.invalid(kind, name, causes)
        return workloads.scale_of(self._update(kind, namespace, name, current, obj))

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        validation: str = "Strict",
        subresource: str = "",
    ) -> Obj:
        """Applies the patch to the current object; on a write race, to the newer one (the
        apiserver retries the same way), unless the patch names a resourceVersion. Through
        the status subresource only the patched status is kept."""
        pinned = isinstance(body, dict) and "resourceVersion" in (body.get("metadata") or {})
        for _ in range(5):
            if subresource == "scale":
                scale = self.get_scale(kind, namespace, name)
                patched = _patched(scale, content_type, body, SCALE_SCHEMA)
                if not pinned:
                    patched["metadata"]["resourceVersion"] = scale["metadata"]["resourceVersion"]
                try:
                    return self._replace_scale(kind, namespace, name, patched)
                except status.ApiError as exc:
                    if exc.reason != "Conflict" or pinned:
                        raise
                continue
            current = self.get(kind, namespace, name)
            patched = _patched(current, content_type, body, kind.schema)
            obj = self._checked_body(kind, namespace, patched, name, validation)
            if not pinned:
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                if subresource == "status":
                    return self._update_status(kind, namespace, name, current, obj)
                return self._update(kind, namespace, name, current, obj)
            except status.ApiError as exc:
                if exc.reason != "Conflict" or pinned:
                    raise
        raise status.conflict(kind, name, "too many concurrent writes")

    def update_status(self, kind: Kind, namespace: str, name: str, new_status: Obj) -> Obj:
        """The status subresource: only status changes (the node's writes)."""
        for _ in range(5):
            current = self.get(kind, namespace, name)
            if current.get("status") == new_status:
                return current
            try:
                return self._write(kind, namespace, name, {**current, "status": new_status})
            except StoreError as exc:
                if exc.reason == "NotFound":
                    raise status.not_found(kind, name) from None
        raise status.conflict(kind, name, "too many concurrent writes")

    def _update_status(self, kind: Kind, namespace: str, name: str, current: Obj, obj: Obj) -> Obj:
        """A write through the status subresource: the status is the body's, everything else
        stays (the apiserver's status strategies); a stale resourceVersion is a conflict."""
        new = {**current, "status": obj.get("status") or {}}
        rv = obj["metadata"].get("resourceVersion")
        new["metadata"] = {**current["metadata"], **({"resourceVersion": rv} if rv else {})}
        if new == current or self.dry_run:
            return new
        try:
            return self._write(kind, namespace, name, new)
        except StoreError as exc:
            if exc.reason == "NotFound":
                raise status.not_found(kind, name) from None
            raise status.conflict(kind, name, str(exc)) from None

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        rv: str | None = None,
        grace: int | None = None,
        propagation: str | None = None,
    ) -> Obj:
        """Deletes the object; a pod on a node is only marked (deletionTimestamp and its grace
        period), for the node to stop it and then call finish_delete, as the kubelet does.
        grace 0 (kubectl delete --force --grace-period=0) removes it at once. Propagation
        Foreground or Orphan holds the object under that finalizer for the garbage collector
        (controllers/gc.py); Background, the default, leaves its dependents to it."""
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise status.bad_request(
                f'propagationPolicy "{propagation}": expected Background, Foreground or Orphan'
            )
        if propagation in ("Foreground", "Orphan"):
            current = self.get(kind, namespace, name)
            meta = current["metadata"]
            finalizer = "foregroundDeletion" if propagation == "Foreground" else "orphan"
            on_node = kind is POD and bool(self.node_name)  # the node's graceful path marks it
            if finalizer not in (meta.get("finalizers") or []):
                meta["finalizers"] = [*(meta.get("finalizers") or []), finalizer]
                if not on_node:
                    meta.setdefault("deletionTimestamp", now())
                    meta.setdefault("deletionGracePeriodSeconds", 0)
                current = self._write(kind, namespace, name, current)
            if not on_node:
                return current
        if kind is POD and self.node_name:
            current = self.get(kind, namespace, name)
            meta = current["metadata"]
            if grace is None:
                grace = int(current["spec"].get("terminationGracePeriodSeconds", 30))
            finished = current.get("status", {}).get("phase") in ("Succeeded", "Failed")
            if grace > 0 and not finished:
                if "deletionTimestamp" in meta and grace >= meta["deletionGracePeriodSeconds"]:
                    return current  # already going, with no less time
                meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
                return self._write(kind, namespace, name, current)
        return self.finish_delete(kind, namespace, name, rv)

    def finish_delete(self, kind: Kind, namespace: str, name: str, rv: str | None = None) -> Obj:
        current = self.get(kind, namespace, name)
        meta = current["metadata"]
        if meta.get("finalizers"):
            # Finalizers hold it: it is only marked, and goes when the last is removed.
            if "deletionTimestamp" in meta:
                return current
            meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            return self._write(kind, namespace, name, current)
        key = self.key(kind, namespace, name)
        if kind is NAMESPACE and not self._emptied(name, current):
            return self.get(kind, namespace, name)  # Terminating until its pods are gone
        try:
            gone = self.outward(kind, self.store.delete(key, rv))
        except StoreError as exc:
            if exc.reason == "NotFound":
                raise status.not_found(kind, name) from None
            raise status.conflict(kind, name, str(exc)) from None
        if kind.namespaced:
            self._namespace_may_go(namespace)
        return gone

    def ensure_namespace(self, name: str) -> None:
        if self.store.get(self.key(NAMESPACE, "", name)) is None:
            self.create(NAMESPACE, "", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": name}})  # fmt: skip

    # --- inside ------------------------------------------------------------------------

    def key(self, kind: Kind, namespace: str, name: str) -> str:
        return objects.key(
            kind.store_group, kind.stored.resource, namespace if kind.namespaced else "", name
        )

    def _update(self, kind: Kind, namespace: str, name: str, current: Obj, obj: Obj) -> Obj:
        meta = obj["metadata"]
        for field in _SERVER_FIELDS:
            if field in current["metadata"]:
                meta[field] = current["metadata"][field]
        if kind.status:  # only the status subresource writes status
            obj["status"] = current.get("status", {})
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):  # only delete sets them
            meta.pop(field, None)
            if field in current["metadata"]:
                meta[field] = current["metadata"][field]
        if kind is POD:  # spec is fixed but for images
            why = pods.spec_change_refused(current, obj)
            if why:
                raise status.invalid(kind, name, [("spec", why)])
        if kind is SERVICE:
            obj = self._allocate(services.defaulted(obj), current)
        if kind.validate is not None and (causes := kind.validate(obj, current)):
            raise status.invalid(kind, name, causes)
        if "generation" in current["metadata"] and obj.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"]["generation"]) + 1
        if obj == current or self.dry_run:
            return obj  # nothing changed: no new resourceVersion, as the apiserver does
        try:
            stored = self._write(kind, namespace, name, obj)
        except StoreError as exc:
            if exc.reason == "NotFound":
                raise status.not_found(kind, name) from None
            raise status.conflict(kind, name, str(exc)) from None
        if "deletionTimestamp" in meta and not meta.get("finalizers") and _done(kind, stored):
            return self.finish_delete(kind, namespace, name)  # its last finalizer went: it goes
        return stored

    def _allocate(self, svc: Obj, current: Obj | None) -> Obj:
        """A Service's cluster IP and node ports, unique among all Services'."""
        every, _ = self.store.list_prefix(objects.prefix("core", "services", None))
        skip = (current or {}).get("metadata", {}).get("uid", "")
        ips, ports = services.allocated(every, skip)
        made, causes = services.allocate(svc, current, ips, ports, self.service_cidr)
        if causes:
            raise status.invalid(SERVICE, svc["metadata"].get("name", ""), causes)
        return made

    def _checked_body(
        self,
        kind: Kind,
        namespace: str,
        body: Any,
        name: str | None,
        validation: str,
        problems: list[tuple[str, str]] | None = None,
    ) -> Obj:
        """The body as an object of `kind` for this URL, validated; `problems` are the kind's
        own (field, reason)s, refused with the schema's missing fields in one 422."""
        if not isinstance(body, dict):
            raise status.bad_request(f"the body of a {kind.kind} must be a JSON object")
        obj: Obj = dict(body)
        if (
            obj.get("kind", kind.kind) != kind.kind
            or obj.get("apiVersion", kind.api_version) != kind.api_version
        ):
            raise status.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                f"expected API version ({kind.api_version})"
                if obj.get("apiVersion", kind.api_version) != kind.api_version
                else f"{obj.get('kind')} in version {kind.version!r} cannot be handled as a "
                f"{kind.kind}"
            )
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        meta = obj["metadata"] = dict(obj.get("metadata") or {})
        if kind.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise status.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if name is not None and meta.get("name", name) != name:
            raise status.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        if name is not None:
            meta["name"] = name
        causes = self._validate(kind, obj, validation) if kind.schema else []
        causes += [p for p in problems or [] if p[0] not in {f for f, _ in causes}]
        if causes:
            raise status.invalid(kind, meta.get("name", ""), causes)
        if kind is SECRET:
            _secret_data(obj)
        return obj

    def _validate(self, kind: Kind, obj: Obj, validation: str) -> list[tuple[str, str]]:
        """fieldValidation as the apiserver does it: a wrong type is always a 400; unknown
        fields are a 400 (Strict), or dropped with a warning (Warn) or silently (Ignore).
        Returns the missing required fields as (field, reason) causes."""
        if validation not in ("Strict", "Warn", "Ignore"):
            raise status.bad_request(
                f'fieldValidation "{validation}": expected Strict, Warn or Ignore'
            )
        unknown, missing, other = schema.field_problems(kind.schema, copy.deepcopy(obj))
        cannot = f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}'
        if other:
            raise status.bad_request(f"{cannot}: {'; '.join(other)}")
        names = [f'unknown field "{schema.dotted(path)}"' for path in unknown]
        if names and validation == "Strict":
            raise status.bad_request(f"{cannot}: strict decoding error: {', '.join(names)}")
        for path in unknown:
            schema.prune(obj, path)
        if validation == "Warn":
            self.warnings.extend(names)
        # Missing fields are the apiserver's validation, after decoding: a 422 with each.
        return [(schema.dotted(path), "Required value") for path in missing]

    def _check_name(self, kind: Kind, name: str) -> None:
        rule = _DNS_LABEL if kind is NAMESPACE else _DNS_SUBDOMAIN
        what = "RFC 1123 label" if kind is NAMESPACE else "RFC 1123 subdomain"
        if not name:
            raise status.invalid(kind, name, [("metadata.name", "Required value: name or "
                                               "generateName is required")])  # fmt: skip
        if len(name) > (63 if kind is NAMESPACE else 253) or not rule.match(name):
            raise status.invalid(
                kind,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase {what} must consist of lower '
                        "case alphanumeric characters, '-' or '.', and must start and end "
                        "with an alphanumeric character",
                    )
                ],
            )

    def _namespace_exists(self, namespace: str) -> None:
        ns = self.store.get(self.key(NAMESPACE, "", namespace))
        if ns is None:
            raise status.not_found(NAMESPACE, namespace)
        if ns.get("status", {}).get("phase") == "Terminating":
            raise status.ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _emptied(self, namespace: str, current: Obj) -> bool:
        """Deletes what the namespace holds and marks it Terminating; True once it is empty
        (pods take their grace periods: the namespace goes with the last, _namespace_may_go)."""
        if current.get("status", {}).get("phase") != "Terminating":
            current["metadata"].setdefault("deletionTimestamp", now())
            current["status"] = {"phase": "Terminating"}
            self.store.update(self.key(NAMESPACE, "", namespace), current)
        left = 0
        self._emptying.add(namespace)
        try:
            for kind in KINDS:
                if kind.namespaced and kind.view is None:  # a view's objects are another's
                    items, _ = self.list_objects(kind, namespace)
                    for item in items:
                        with contextlib.suppress(status.ApiError):
                            self.delete(kind, namespace, item["metadata"]["name"])
                    left += len(self.list_objects(kind, namespace)[0])
        finally:
            self._emptying.discard(namespace)
        return left == 0

    def _namespace_may_go(self, namespace: str) -> None:
        ns = self.store.get(self.key(NAMESPACE, "", namespace))
        if namespace in self._emptying or ns is None:
            return
        if ns.get("status", {}).get("phase") != "Terminating":
            return
        if all(
            not self.list_objects(k, namespace)[0] for k in KINDS if k.namespaced and not k.view
        ):
            with contextlib.suppress(status.ApiError):
                self.finish_delete(NAMESPACE, "", namespace)


SCALE_SCHEMA = "scale-autoscaling-v1.json"


def _patched(current: Obj, content_type: str, body: Any, schema_key: str) -> Obj:
    """`current` with the patch applied, by its media type (strategic merge with the schema's
    merge keys); a patch that cannot apply is a 422."""
    try:
        if content_type == MERGE:
            return patches.merge_patch(current, body)
        if content_type == STRATEGIC:
            root, defs = schema.kind_definition(schema_key)
            return smp.apply(current, body, root, defs)
        if content_type == JSON_PATCH:
            return patches.json_patch(current, body)
    except patches.PatchError as exc:
        raise status.ApiError(422, "Invalid", str(exc)) from None
    raise status.ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{MERGE}, {STRATEGIC}, {JSON_PATCH}"
        + (
            " (server-side apply is not supported yet: use `kubectl apply` without --server-side)"
            if content_type == APPLY
            else ""
        ),
    )


def _secret_data(obj: Obj) -> None:
    """stringData is written into data, base64-encoded, and not kept (the apiserver's Secret
    strategy); the type defaults to Opaque."""
    strings = obj.pop("stringData", None) or {}
    if strings:
        data = dict(obj.get("data") or {})
        for key, value in strings.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    obj.setdefault("type", "Opaque")


def _done(kind: Kind, obj: Obj) -> bool:
    """Whether a deleted object may go: a pod only once the node has stopped it (its phase is
    then terminal), anything else at once."""
    return kind is not POD or obj.get("status", {}).get("phase") in ("Succeeded", "Failed")
