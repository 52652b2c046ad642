"""What `gridedge check` looks at beyond "the config parses": the files the service user
must read, and listeners open to the whole LAN.

Problems with the uplink's TLS files are kept apart from the rest: a technician's
`gridedge check` fails on them, but the unit's start (`check --starting`) only warns,
since a gateway with its uplink down still stores every alarm and works locally (the
publisher retries and says why in the status).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path

from drivers.parts import PARTS
from floor.config import OPEN_TO_OTHERS, Config, NetSource, SerialPort
from floor.errors import N_, Problem

SERVICE_USER = "gridedge"  # the user the packaged unit runs as


@dataclass(slots=True)
class Findings:
    """What check found, as Problems a technician reads in their language (edge/i18n.py)."""

    errors: list[Problem] = field(default_factory=list)  # the gateway cannot run
    uplink: list[Problem] = field(default_factory=list)  # it runs, but cannot reach the broker
    warnings: list[Problem] = field(default_factory=list)  # it runs, but something is unwise


def service_user(requested: str | None) -> str | None:
    """Whose access to check: `requested`; else, for root, the packaged service user
    when it exists (root reads anything, the service does not); else None (ourselves)."""
    if requested:
        return requested
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return None
        return SERVICE_USER
    return None


MISSING = N_("{file_path} does not exist")


def unreadable(path: Path, user: str | None) -> Problem | None:
    """Why `user` (None: this process) cannot read `path`, or None when it can."""
    if user is None:
        if not path.exists():
            return Problem(MISSING, {"file_path": path})
        if not os.access(path, os.R_OK):
            return Problem(N_("{file_path} is not readable by this user"), {"file_path": path})
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return Problem(N_("no user {user} on this machine"), {"user": repr(user)})
    if pw.pw_uid == 0:
        return None if path.exists() else Problem(MISSING, {"file_path": path})
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    # every directory on the way needs search (x), the file itself read (r)
    p = path.absolute()
    chain = [*reversed(p.parents), p]
    for i, step in enumerate(chain):
        try:
            st = step.stat()
        except OSError as exc:
            return Problem("{file_path}: {why}", {"file_path": step, "why": exc.strerror})
        last = i == len(chain) - 1
        if not _may(st, pw.pw_uid, groups, read=last):
            return _refused(user, step, st, read=last)
    return None


def _may(st: os.stat_result, uid: int, groups: set[int], *, read: bool) -> bool:
    """Whether a user may read (a file) or enter (a directory) what `st` describes."""
    by_owner, by_group, by_other = (
        (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH) if read else (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    )
    if st.st_uid == uid:
        return bool(st.st_mode & by_owner)
    if st.st_gid in groups:
        return bool(st.st_mode & by_group)
    return bool(st.st_mode & by_other)


def _refused(user: str, step: Path, st: os.stat_result, *, read: bool) -> Problem:
    template = (
        N_(
            "{user} cannot read {file_path} (owner {owner}, group {group}, mode {mode}); "
            "chown {user} it, or chgrp {user} and chmod g+r"
        )
        if read
        else N_(
            "{user} cannot enter {file_path} (owner {owner}, group {group}, mode {mode}); "
            "chown {user} it, or chgrp {user} and chmod g+x"
        )
    )
    values = {"user": user, "file_path": step, "owner": _owner(st.st_uid), "group": _group(st.st_gid)}
    return Problem(template, values | {"mode": stat.filemode(st.st_mode)})


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _private(path: Path) -> Problem | None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # told as unreadable
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Problem(OPEN_TO_OTHERS, {"file_path": path, "mode": stat.filemode(mode)})
    return None


def examine(cfg: Config, user: str | None) -> Findings:
    """Everything `gridedge check` reports about `cfg` for `user` (see `service_user`)."""
    f = Findings()
    for name, path, into, private in _key_files(cfg, f):
        why = unreadable(path, user)
        if why is None and private:
            why = _private(path)
        if why is not None:
            into.append(Problem(N_("{key}: {message}"), {"key": name, "message": why}))
    f.warnings.extend(_unwise(cfg))
    return f


def _key_files(cfg: Config, f: Findings) -> list[tuple[str, Path, list[Problem], bool]]:
    """(key, file, where a problem with it goes, must it be private) of every key and TLS file."""
    files = [("gateway.key", cfg.gateway.key, f.errors, True)]
    t, m = cfg.trust, cfg.mqtt
    for name, path in (("trust.command_key", t.command_key), ("trust.firmware_key", t.firmware_key)):
        if path is not None:
            files.append((name, path, f.errors, False))
    tls = (
        ("mqtt.tls_ca", m.tls_ca, False),
        ("mqtt.tls_cert", m.tls_cert, False),
        ("mqtt.tls_key", m.tls_key, True),
    )
    files += [(name, path, f.uplink, private) for name, path, private in tls if path is not None]
    return files


def _unwise(cfg: Config) -> list[Problem]:
    """What runs but is unwise: a listener open to anyone, a wearable believed on its address."""
    out = []
    for dev in cfg.devices:
        src = dev.source
        if isinstance(src, SerialPort) and not Path(src.port).exists():
            out.append(
                Problem(
                    N_(
                        "devices[{id}]: {port} does not exist (not plugged in, or another name?); "
                        "the gateway keeps trying it and says why in its status"
                    ),
                    {"id": dev.id, "port": src.port},
                )
            )
        if isinstance(src, NetSource) and src.wildcard and not src.allow:
            out.append(
                Problem(
                    N_(
                        "devices[{id}]: {url} takes datagrams from anyone on every network it is on; "
                        'set allow = ["<receiver address>"] to the senders it should believe'
                    ),
                    {"id": dev.id, "url": src.url},
                )
            )
    for b in cfg.bearers:
        if b.enabled and b.name in PARTS.bearers:
            out += PARTS.bearers[b.name].advice(b, cfg.gateway.id)
    for w in cfg.wearables:
        if w.insecure:
            out.append(
                Problem(
                    N_(
                        "devices[{id}]: insecure = true: its alarms are believed on its address alone; "
                        "anyone copying that address can raise or cancel them (docs/ble-profiles.md)"
                    ),
                    {"id": w.id},
                )
            )
    return out
