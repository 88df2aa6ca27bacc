"""CRI container log files (pure): records back into lines, pod metadata from the path.

A record is `<RFC 3339 nano time> <stdout|stderr> <P|F> <content>`. The runtime cuts a long
output line into P(artial) records ended by an F(ull) one (containerd at 16 KiB); the parts are
joined per stream, since stdout and stderr records interleave. Files live at
`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` (kubelet), podkit's
`<state>/pods/<namespace>_<pod>_<uid>/logs/<container>/<restart>.log`, and are linked from
`/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from podkit.images.log_agent.lines import Line

_STREAMS = frozenset({"stdout", "stderr"})
# Namespace and pod names are DNS names (no "_"), so the directory splits unambiguously.
_POD_DIR = re.compile(r"^([a-z0-9][a-z0-9.-]*)_([a-z0-9][a-z0-9.-]*)_([0-9a-fA-F-]+)$")
_CONTAINERS_LINK = re.compile(
    r"^([a-z0-9][a-z0-9.-]*)_([a-z0-9][a-z0-9-]*)_([a-z0-9][a-z0-9-]*)-[0-9a-f]{64}\.log$"
)


@dataclass(slots=True)
class _Partial:
    offset: int  # where the first part's record starts: a restart re-reads from here
    time: str
    parts: list[str] = field(default_factory=list)
    size: int = 0


class CriAssembler:
    """CRI records in, whole lines out: (offset of the first record, its time, stream, text).

    A record that is not CRI is passed on whole, with the read's time and no stream. Joined
    parts longer than `max_bytes` are delivered in pieces (`cut` counts the lines cut).
    """

    __slots__ = ("_held", "max_bytes", "cut")

    def __init__(self, max_bytes: int) -> None:
        self._held: dict[str, _Partial] = {}
        self.max_bytes = max_bytes
        self.cut = 0

    def held_start(self) -> int | None:
        """The first record of a line still missing its end: a restart must read from there."""
        return min((p.offset for p in self._held.values()), default=None)

    def feed(self, offsets: list[int], texts: list[str], received: str) -> list[Line]:
        out: list[Line] = []
        append = out.append
        held = self._held
        for offset, text in zip(offsets, texts, strict=False):
            fields = text.split(" ", 3)
            if not held and len(fields) == 4 and fields[2] == "F" and fields[1] in _STREAMS:
                append((offset, fields[0], fields[1], fields[3]))  # the usual: a whole line
                continue
            if len(fields) < 3 or fields[1] not in _STREAMS or fields[2] not in ("F", "P"):
                out.append((offset, received, None, text))
                continue
            time, stream, tag = fields[0], fields[1], fields[2]
            content = fields[3] if len(fields) == 4 else ""
            partial = held.get(stream)
            if tag == "F":
                if partial is None:
                    out.append((offset, time, stream, content))
                else:
                    del held[stream]
                    partial.parts.append(content)
                    out.append((partial.offset, partial.time, stream, "".join(partial.parts)))
                continue
            if partial is None:
                partial = held[stream] = _Partial(offset, time)
            partial.parts.append(content)
            partial.size += len(content)
            if partial.size > self.max_bytes:  # a runaway line: deliver what we have
                del held[stream]
                self.cut += 1
                out.append((partial.offset, partial.time, stream, "".join(partial.parts)))
                # The rest of the line starts at the next record: not held from here.
        return out

    def flush(self) -> list[Line]:
        """Lines whose F record never came: the file is finished."""
        out = [(p.offset, p.time, s, "".join(p.parts)) for s, p in self._held.items()]
        self._held.clear()
        return sorted(out)


def pod_metadata(path: str, container_name: str | None = None) -> dict[str, str]:
    """kubernetes.* fields from a CRI log file's path ({} when the path is no known layout)."""
    parts = path.split("/")
    link = _CONTAINERS_LINK.match(parts[-1])
    if link:
        pod, namespace, container = link.groups()
        return {"namespace_name": namespace, "pod_name": pod, "container_name": container}
    # <pod dir>/[logs/]<container>/<n>.log
    for i in (len(parts) - 3, len(parts) - 4):
        m = _POD_DIR.match(parts[i]) if i >= 0 else None
        if m is None or (i == len(parts) - 4 and parts[i + 1] != "logs"):
            continue
        namespace, pod, uid = m.groups()
        return {
            "namespace_name": namespace,
            "pod_name": pod,
            "pod_id": uid,
            "container_name": parts[-2],
        }
    return {"container_name": container_name} if container_name else {}
