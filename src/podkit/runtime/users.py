"""Who a container's process runs as: /etc/passwd and /etc/group of its root, read as containerd
reads them (pkg/oci WithUser, WithAdditionalGIDs). Pure parsing; the launcher passes the texts.

Standard library only: the launcher imports this for every container.
"""

from __future__ import annotations


def _entries(text: str, fields: int) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            out.append(parts)
    return out


def process_ids(
    uid: int, gid: int | None, supplemental: list[int], passwd: str, group: str
) -> tuple[int, list[int]]:
    """(primary gid, all group ids) for `uid`.

    Without a runAsGroup the primary group is the user's in /etc/passwd (0 if the uid has no
    entry). The groups are the primary one, the groups of /etc/group that list the user's name
    as a member (not the group named after it), then supplementalGroups (fsGroup among them)."""
    name = None
    for entry in _entries(passwd, 4):
        if entry[2].isdigit() and int(entry[2]) == uid:
            name = entry[0]
            if gid is None and entry[3].isdigit():
                gid = int(entry[3])
            break
    primary = gid if gid is not None else 0
    groups = [primary]
    if name is not None:
        for entry in _entries(group, 4):
            members = entry[3].split(",") if entry[3] else []
            if entry[0] != name and name in members and entry[2].isdigit():
                groups.append(int(entry[2]))
    groups.extend(supplemental)
    return primary, list(dict.fromkeys(groups))


def resolve_user(spec: str, passwd: str, group: str) -> tuple[int, int | None]:
    """An image's User ("uid", "name", "uid:gid", "name:group"...) as (uid, gid); gid None
    means the user's own group from /etc/passwd (process_ids finds it). containerd's WithUser;
    ValueError for a name the image does not know."""
    parts = spec.split(":")
    if len(parts) > 2:
        raise ValueError(f"invalid USER value {spec}")
    user = parts[0]
    if user.isdigit():
        uid = int(user)
        gid = None
    else:
        entry = next((e for e in _entries(passwd, 4) if e[0] == user), None)
        if entry is None or not entry[2].isdigit():
            raise ValueError(f"unable to find user {user}: no matching entries in passwd file")
        uid = int(entry[2])
        gid = int(entry[3]) if entry[3].isdigit() else None
    if len(parts) == 2:
        name = parts[1]
        if name.isdigit():
            gid = int(name)
        else:
            found = next((e for e in _entries(group, 3) if e[0] == name), None)
            if found is None or not found[2].isdigit():
                raise ValueError(f"unable to find group {name}: no matching entries in group file")
            gid = int(found[2])
    return uid, gid
