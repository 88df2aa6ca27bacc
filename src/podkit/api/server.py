"""The Kubernetes REST API of `podkit serve`, over aiohttp: discovery, OpenAPI v3, the served
kinds' verbs, Tables for kubectl, watches; HTTPS with client-certificate authentication.

What kubectl 1.37 asks for and accepts was captured from the real binary (see the issue's
notes): legacy discovery with plain application/json is read fully; `/apis` must never be 404;
every kind needs a PATCH operation with an inline `fieldValidation` parameter and
`x-kubernetes-group-version-kind` in its group-version's OpenAPI v3 document, or kubectl falls
back to /openapi/v2 as protobuf and refuses to apply; a watch must answer `sendInitialEvents`
(kubectl delete/wait) with the current objects and a bookmark, or loop forever.
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from podkit import __version__
from podkit.api import (
    discovery,
    exec_ws,
    paging,
    pod_logs,
    portforward_ws,
    protobuf,
    selectors,
    service_accounts,
    status,
    tables,
    tokens,
    watch,
)
from podkit.api.kinds import BY_RESOURCE, KINDS, POD, Kind, Obj
from podkit.api.rest import Rest
from podkit.api.tables import JSON
from podkit.manifest import schema
from podkit.runtime import statedir

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0"}


def _json(doc: Any, code: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=code, content_type=content_type)


def _error(exc: status.ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except status.ApiError as exc:
        return _error(exc)
    except selectors.SelectorError as exc:
        return _error(status.bad_request(str(exc)))


def _fixed(doc: Any) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler that always answers `doc` (JSON, or text for a str)."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=doc) if isinstance(doc, str) else _json(doc)

    return handler


def _authenticated(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


class Api:
    def __init__(
        self, rest: Rest, state_dir: Path | None = None, require_client_cert: bool = True
    ) -> None:
        self.rest = rest
        self.state_dir = state_dir  # the node's: its pods' directories (logs, exec, sandbox)
        self.require_client_cert = require_client_cert
        self.sa_writes = False  # service accounts may write in their namespace (no RBAC yet)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth, _errors])
        r = app.router
        version = {**KUBE_VERSION, "platform": "linux/amd64", "podkit": __version__}
        r.add_get("/version", _fixed(version))
        r.add_get("/api", self.api)
        r.add_get("/apis", self.apis)
        r.add_get("/api/{version}", self.resources)
        r.add_get("/apis/{group}", self.group)
        r.add_get("/apis/{group}/{version}", self.resources)
        r.add_get("/openapi/v3", self.openapi_root)
        r.add_get("/openapi/v3/api/{version}", self.openapi)
        r.add_get("/openapi/v3/apis/{group}/{version}", self.openapi)
        r.add_get("/healthz", _fixed("ok"))
        r.add_get("/readyz", _fixed("ok"))
        r.add_get("/livez", _fixed("ok"))
        prefix = "/api/v1"
        r.add_get(prefix + "/namespaces/{namespace}/pods/{name}/log", self.on_log)
        r.add_get(prefix + "/namespaces/{namespace}/pods/{name}/exec", self.on_exec)
        r.add_post(prefix + "/namespaces/{namespace}/pods/{name}/exec", self.on_exec)
        r.add_get(prefix + "/namespaces/{namespace}/pods/{name}/attach", self.on_exec)
        r.add_post(prefix + "/namespaces/{namespace}/pods/{name}/attach", self.on_exec)
        r.add_get(prefix + "/namespaces/{namespace}/pods/{name}/portforward", self.on_forward)
        r.add_post(prefix + "/namespaces/{namespace}/pods/{name}/portforward", self.on_forward)
        one = ("/namespaces/{namespace}/{resource}/{name}", "/{resource}/{name}")
        reads_writes = {"GET": self.on_get, "PUT": self.on_replace, "PATCH": self.on_patch}
        routes = (
            # /namespaces/x/status is namespace x's status: before the namespaced lists.
            ([path + "/{subresource:status|scale}" for path in one], reads_writes),
            (one, {**reads_writes, "DELETE": self.on_delete}),
            (
                ("/namespaces/{namespace}/{resource}", "/{resource}"),
                {"GET": self.on_list, "POST": self.on_create, "DELETE": self.on_delete_collection},
            ),
        )
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            for paths, verbs in routes:
                for path in paths:
                    for method, handler in verbs.items():
                        r.add_route(method, prefix + path, handler)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The admin's client certificate may do anything; a service account's bearer token
        what service_accounts.forbidden allows; anyone, what the apiserver lets anyone read
        (system:public-info-viewer)."""
        public = request.path in ("/healthz", "/readyz", "/livez", "/version")
        if public or not self.require_client_cert or _authenticated(request):
            return await handler(request)
        who = self._bearer(request)
        if who is None:
            return _error(status.UNAUTHORIZED)
        refusal = self._refused(request, who)
        return _error(refusal) if refusal is not None else await handler(request)

    def _bearer(self, request: web.Request) -> tokens.Identity | None:
        """The service account a valid token names, while the pod it is bound to exists."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self.rest.signer is None:
            return None
        who = self.rest.signer.check(token.strip())
        if who is None:
            return None
        pod = self.rest.store.get(self.rest.key(POD, who.namespace, who.pod))
        return who if pod is not None and pod["metadata"]["uid"] == who.pod_uid else None

    def _refused(self, request: web.Request, who: tokens.Identity) -> status.ApiError | None:
        info = request.match_info
        if "resource" not in info and "name" not in info:
            return None  # discovery and OpenAPI: what every authenticated client reads
        resource = info.get("resource") or request.path.split("/")[-3]  # pods/NAME/log...
        sub = info.get("subresource") or request.path.rsplit("/", 1)[-1]
        verb = _VERBS.get(request.method, "get")
        if request.method == "GET" and "name" not in info:
            verb = "watch" if request.query.get("watch") in ("true", "1") else "list"
        if request.method == "DELETE" and "name" not in info:
            verb = "deletecollection"
        if sub in ("exec", "attach", "portforward"):
            verb = "create"  # a shell in a container is a write
        namespace = info.get("namespace", "")
        if not service_accounts.forbidden(verb, namespace, who.namespace, self.sa_writes):
            return None
        group = info.get("group", "")
        message = service_accounts.forbidden_message(who.user, verb, resource, group, namespace)
        return status.ApiError(403, "Forbidden", message, {"kind": resource, "group": group})

    # --- discovery and OpenAPI --------------------------------------------------------------

    async def resources(self, request: web.Request) -> web.Response:
        """/api/v1 or /apis/<group>/<version>: the legacy APIResourceList."""
        group, version = request.match_info.get("group", ""), request.match_info["version"]
        if (group, version) not in discovery.group_versions():
            raise _not_found()
        return _json(discovery.legacy_resources(group, version))

    async def group(self, request: web.Request) -> web.Response:
        doc = discovery.legacy_group(request.match_info["group"])
        if doc is None:
            raise _not_found()
        return _json(doc)

    async def api(self, request: web.Request) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept", "")):
            return _json(discovery.aggregated_core(), content_type=discovery.AGGREGATED)
        return _json({"kind": "APIVersions", "versions": ["v1"]})

    async def apis(self, request: web.Request) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept", "")):
            return _json(discovery.aggregated_groups(), content_type=discovery.AGGREGATED)
        return _json(discovery.legacy_groups())

    async def openapi_root(self, _: web.Request) -> web.Response:
        hash_ = __version__.replace(".", "")
        paths = {
            _root(group, version): {"serverRelativeURL": f"/openapi/v3/{_root(group, version)}"
                                                          f"?hash={hash_}"}
            for group, version in discovery.group_versions()
        }  # fmt: skip
        return _json({"paths": paths})

    async def openapi(self, request: web.Request) -> web.Response:
        """A group-version's document: a PATCH operation per kind with the inline
        fieldValidation parameter, enough for kubectl to leave validation to this server
        (which does it, api/rest.py), and the kinds' schemas, which `kubectl explain` reads."""
        group, version = request.match_info.get("group", ""), request.match_info["version"]
        kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
        if not kinds:
            raise _not_found()
        paths = {}
        for k in kinds:
            scope = "/namespaces/{namespace}" if k.namespaced else ""
            paths[f"/{_root(group, version)}{scope}/{k.resource}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {
                        "group": k.group,
                        "version": k.version,
                        "kind": k.kind,
                    },
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    ],
                }
            }
        served = tuple((k.group, k.version, k.kind) for k in kinds)
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"},
               "paths": paths,
               "components": {"schemas": schema.openapi_schemas(served)}}  # fmt: skip
        return _json(doc)

    # --- verbs --------------------------------------------------------------------------

    def _kind(self, request: web.Request) -> tuple[Kind, str]:
        info = request.match_info
        kind = BY_RESOURCE.get((info.get("group", ""), info["resource"]))
        namespace = info.get("namespace", "")
        if (
            kind is None
            or kind.version != info["version"]
            or (namespace and not kind.namespaced)
            or (info.get("subresource") == "status" and not kind.status)
            or (info.get("subresource") == "scale" and not kind.scale)
        ):
            raise _not_found()
        return kind, namespace

    async def on_get(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request)
        name = request.match_info["name"]
        if request.match_info.get("subresource") == "scale":
            return _json(self.rest.get_scale(kind, namespace, name))
        obj = self.rest.get(kind, namespace, name)
        return self._respond(request, kind, [obj], single=True)

    async def on_list(self, request: web.Request) -> web.StreamResponse:
        kind, namespace = self._kind(request)
        q = request.query
        labels = selectors.parse_labels(q.get("labelSelector", ""))
        fields = selectors.parse_fields(q.get("fieldSelector", ""))
        scope = namespace if kind.namespaced and namespace else None
        if q.get("watch") in ("true", "1"):
            return await watch.stream(request, self.rest, kind, scope, labels, fields)
        items, rv = self.rest.list_objects(kind, scope)
        items = [o for o in items if selectors.matches(o, labels, fields)]
        limit = int(q.get("limit") or 0)
        items, token, remaining = paging.page(items, limit, q.get("continue", ""))
        more = {"continue": token, "remainingItemCount": remaining} if token else {}
        return self._respond(request, kind, items, rv=rv, more=more)

    async def on_delete_collection(self, request: web.Request) -> web.Response:
        """deletecollection: every object the selectors match, each deleted as one delete."""
        kind, namespace = self._kind(request)
        labels = selectors.parse_labels(request.query.get("labelSelector", ""))
        fields = selectors.parse_fields(request.query.get("fieldSelector", ""))
        items, _ = self.rest.list_objects(kind, namespace if kind.namespaced else None)
        for obj in items:
            if selectors.matches(obj, labels, fields):
                meta = obj["metadata"]
                with contextlib.suppress(status.ApiError):  # gone meanwhile
                    self.rest.delete(kind, meta.get("namespace", ""), meta["name"])
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    async def on_create(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request)
        body = await self._body(request)
        return self._write(request, lambda v: self.rest.create(kind, namespace, body, v), 201)

    async def on_replace(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request)
        body, name = await self._body(request), request.match_info["name"]
        sub = request.match_info.get("subresource", "")
        return self._write(
            request, lambda v: self.rest.replace(kind, namespace, name, body, v, sub)
        )

    async def on_patch(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request)
        body, name, media = (
            await self._body(request),
            request.match_info["name"],
            request.content_type,
        )
        sub = request.match_info.get("subresource", "")
        return self._write(
            request, lambda v: self.rest.patch(kind, namespace, name, media, body, v, sub)
        )

    def _write(
        self, request: web.Request, write: Callable[[str], Obj], code: int = 200
    ) -> web.Response:
        """Runs a write with the request's fieldValidation; its warnings become Warning
        headers, which kubectl prints. Nothing awaits from here to the response, so no other
        request's warnings mix in."""
        self.rest.warnings = []
        self.rest.dry_run = request.query.get("dryRun") == "All"
        try:
            response = _json(write(request.query.get("fieldValidation", "Strict")), code)
        finally:
            self.rest.dry_run = False
        for text in self.rest.warnings:
            quoted = text.replace("\\", "\\\\").replace('"', '\\"')  # RFC 7230 quoted-string
            response.headers.add("Warning", f'299 - "{quoted}"')
        return response

    async def on_delete(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request)
        options = await self._body(request) if request.can_read_body else {}
        rv = (options.get("preconditions") or {}).get("resourceVersion") if options else None
        grace = options.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        name = request.match_info["name"]
        propagation = options.get("propagationPolicy") or request.query.get("propagationPolicy")
        orphan = options.get("orphanDependents", request.query.get("orphanDependents"))
        if propagation is None and orphan in (True, "true"):  # the deprecated spelling
            propagation = "Orphan"
        obj = self.rest.delete(
            kind, namespace, name, rv, None if grace is None else int(grace), propagation
        )
        return _json(obj)

    async def on_exec(self, request: web.Request) -> web.StreamResponse:
        """`kubectl exec` and `attach` over WebSocket v5 (api/exec_ws.py). kubectl's
        fallback, SPDY over a POST, gets a Status that says so rather than a half-made
        upgrade."""
        namespace, name = self._names(request)
        pod = self.rest.get(POD, namespace, name)
        verb = request.path.rsplit("/", 1)[1]
        spec = pod["spec"]
        containers = {c["name"]: c for c in spec.get("containers", [])}
        first = next(iter(containers), "")
        containers.update((c["name"], c) for c in spec.get("initContainers") or [])
        container = containers.get(request.query.get("container") or first)
        if container is None:
            raise status.bad_request(
                f"container {request.query.get('container')} is not valid for pod {name}"
            )
        if verb == "attach":  # a refusal kubectl's SPDY retry repeats, not hides
            exec_ws.check_attach(request, container)
        if request.method == "POST":
            raise status.bad_request(
                f"podkit serve speaks {verb} over WebSocket ({exec_ws.PROTOCOL}) only, not SPDY"
            )
        pod_dir = self._pod_dir(pod)
        if verb == "attach":
            key = self.rest.key(POD, namespace, name)

            def running() -> bool:
                now = self.rest.store.get(key)
                return bool(now) and (now or {}).get("status", {}).get("phase") == "Running"

            return await exec_ws.attach(request, pod_dir, container, running)
        return await exec_ws.serve(request, pod_dir, container["name"])

    async def on_forward(self, request: web.Request) -> web.StreamResponse:
        """`kubectl port-forward`: SPDY inside a WebSocket (api/portforward_ws.py)."""
        namespace, name = self._names(request)
        pod = self.rest.get(POD, namespace, name)
        if request.method == "POST":
            raise status.bad_request(
                f"podkit serve speaks port-forward over WebSocket ({portforward_ws.PROTOCOL})"
            )
        pod_dir = self._pod_dir(pod)
        try:
            sandbox_pid = int((pod_dir / "sandbox").read_text())
        except (OSError, ValueError):
            raise status.bad_request(f'pod "{name}" is not running') from None
        return await portforward_ws.serve(request, sandbox_pid)

    async def on_log(self, request: web.Request) -> web.StreamResponse:
        pod = self.rest.get(POD, *self._names(request))
        return await pod_logs.serve(request, self.rest, pod, self._pod_dir(pod))

    def _pod_dir(self, pod: Obj) -> Path:
        if self.state_dir is None:
            raise status.bad_request("this server runs no pods")
        meta = pod["metadata"]
        return statedir.pod_dir(self.state_dir, meta["namespace"], meta["name"], meta["uid"])

    @staticmethod
    def _names(request: web.Request) -> tuple[str, str]:
        return request.match_info["namespace"], request.match_info["name"]

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if request.content_type == protobuf.MEDIA_TYPE:  # kubectl create <generator>
            try:
                return protobuf.decode(raw)
            except protobuf.ProtobufError as exc:
                raise status.bad_request(f"the protobuf request body: {exc}") from None
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise status.bad_request(f"the request body is not JSON: {exc}") from None

    # --- responses ----------------------------------------------------------------------

    def _respond(
        self,
        request: web.Request,
        kind: Kind,
        items: list[Obj],
        single: bool = False,
        rv: int | None = None,
        more: dict[str, Any] | None = None,
    ) -> web.Response:
        meta = {"resourceVersion": str(rv), **(more or {})} if rv is not None else {}
        if tables.wanted(request.headers.get("Accept", "")):
            table = tables.table(kind, items, datetime.datetime.now(datetime.UTC))
            table["metadata"] = meta
            return _json(table, content_type=JSON)
        if single:
            return _json(items[0])
        return _json(
            {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": meta,
                "items": items,
            }  # fmt: skip
        )


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _not_found() -> status.ApiError:
    return status.ApiError(404, "NotFound", "the server could not find the requested resource")


def _root(group: str, version: str) -> str:
    """A group-version's URL path: api/v1 for the core group, apis/<group>/<version> else."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """TLS with client certificates asked for (not required at the handshake, so that a request
    without one gets the apiserver's 401 Status instead of a TLS alert)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
