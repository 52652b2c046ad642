"""The `gridedge` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from drivers.parts import PARTS, load_config
from edge import __version__
from edge.health import exit_if_stuck
from edge.i18n import from_env, localised, problem_text, translator
from edge.listeners import MIN_FDS, quiet_accept_errors, raise_fd_limit
from edge.reconfig import applied_dir, applied_state, read_pending, reset, start_config
from floor.config import default_path
from floor.errors import ConfigError, EdgeError
from tools.checks import SERVICE_USER, examine
from tools.provision import SYSTEM_DIR

log = logging.getLogger("gridedge")


def _run_until_signal(coro: Coroutine[Any, Any, Any]) -> int:
    """Run `coro`; SIGTERM and SIGINT cancel it, so shutdown goes through its cleanups."""

    async def main() -> int:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            logging.getLogger("gridedge").info("stopping: %s", sig.name)  # the journal says why it went
            task.cancel()
            exit_if_stuck("asked to stop", 0)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        try:
            await task
        except asyncio.CancelledError:
            # Our own signal handler cancelled it: a requested stop, not a failure.
            if not task.cancelled():
                raise
        except BaseException:
            exit_if_stuck("the gateway failed", 70)  # whatever the loop's own cleanup waits for
            raise
        return 0

    return asyncio.run(main())


def cmd_receive(args: argparse.Namespace) -> int:
    try:
        from tools.receive.service import main as receive_main
    except ImportError as exc:
        print(f"gridedge receive: {exc.name} is missing: pip install 'gridedge[platform]'", file=sys.stderr)
        return 1
    return receive_main(args.rest)


def cmd_platform(args: argparse.Namespace) -> int:
    from tools.platform import main as platform_main

    return platform_main(args.rest)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import run_forever  # the CLI is the one place that wires the app

    cfg = start_config(args.config, parts=PARTS.catalog)
    found = examine(cfg, None)
    for w in (*found.uplink, *found.warnings):
        logging.getLogger("gridedge").warning("%s", w)  # runs anyway; `gridedge status` shows the link
    limit = raise_fd_limit()
    if limit < MIN_FDS:
        log.warning("only %d open files allowed (LimitNOFILE): the listeners' caps assume %d", limit, MIN_FDS)
    quiet_accept_errors()
    # Everything imported and built so far lives as long as the process: moved out of the
    # collector's sight, so its full collections walk what traffic makes, not every module.
    gc.collect()
    gc.freeze()
    return _run_until_signal(run_forever(cfg))


def cmd_check(args: argparse.Namespace) -> int:
    from drivers.ble.transport import resolve_factory
    from tools.checks import service_user

    cfg = start_config(args.config, parts=PARTS.catalog)  # as `run` would start (the unit runs this first)
    resolve_factory(cfg.ble.backend, dict(cfg.ble.options))  # the BLE backend can be loaded
    user = service_user(args.user)
    found = examine(cfg, user)
    lang = from_env()
    _ = translator(lang).gettext
    for w in found.warnings:
        print(_("warning: {what}").format(what=problem_text(w, lang)), file=sys.stderr)
    # At the unit's start a broken uplink only warns: the gateway runs, stores every alarm
    # and retries the broker; a technician's check fails on it.
    uplink_fatal = not args.starting
    for u in found.uplink:
        line = (
            _("error: {what} (the uplink cannot start)")
            if uplink_fatal
            else _("warning: {what} (the uplink cannot start)")
        )
        print(line.format(what=problem_text(u, lang)), file=sys.stderr)
    for e in found.errors:
        print(_("error: {what}").format(what=problem_text(e, lang)), file=sys.stderr)
    if found.errors or (uplink_fatal and found.uplink):
        msg = _("{file}: not ok for user {user}") if user else _("{file}: not ok")
        print(msg.format(file=args.config, user=user), file=sys.stderr)
        return 1
    print(
        _("{file}: ok (gateway {gw}; stream devices: {devices}; wearables: {wearables})").format(
            file=args.config, gw=cfg.gateway.id, devices=len(cfg.devices), wearables=len(cfg.wearables)
        )
    )
    if cfg.applied:
        print(_("the platform's {path} is in effect").format(path=cfg.applied))
    if user:
        print(_("its files are readable by {user}").format(user=user))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    base = load_config(args.config, check_files=False)
    state = applied_state(base)
    applied = applied_dir(base.gateway.state_dir) / "gateway.toml"
    _ = translator(from_env()).gettext
    if state == "in_effect":
        print(
            _("in effect: {applied} (applied by the platform over {file})").format(
                applied=applied, file=args.config
            )
        )
        if read_pending(base.gateway.state_dir) is not None:
            print(_("pending: waiting for its health check; rolled back if it fails"))
        print(applied.read_text(encoding="utf-8"), end="")
    else:
        print(_("in effect: {file}").format(file=args.config))
        if state == "superseded":
            print(
                _("({applied} is older than your edit of {file}; the next start sets it aside)").format(
                    applied=applied, file=args.config
                )
            )
    return 0


def cmd_config_reset(args: argparse.Namespace) -> int:
    base = load_config(args.config, check_files=False)
    _ = translator(from_env()).gettext
    if reset(base.gateway.state_dir):
        print(
            _("removed the platform's applied config; {file} is in effect at the next start").format(
                file=args.config
            )
        )
    else:
        print(_("no applied config; {file} is in effect").format(file=args.config))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from tools.provision import ProvisionError, provision_fleet, provision_one, qr_terminal

    _ = translator(from_env()).gettext
    try:
        if args.stations is not None:
            done = provision_fleet(
                args.stations,
                args.out,
                template=args.template,
                csr=args.csr,
                force=args.force,
                owner=args.owner,
                state_dir=args.state_dir,
            )
        elif args.id is None:
            print(_("gridedge provision: --id or --from is required"), file=sys.stderr)
            return 2
        else:
            done = [
                provision_one(
                    args.out,
                    args.id,
                    csr=args.csr,
                    force=args.force,
                    owner=args.owner,
                    state_dir=args.state_dir,
                )
            ]
    except ProvisionError as exc:
        for problem in exc.problems:  # every bad row of a sheet, not only the first
            print(f"gridedge provision: {problem_text(problem)}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        msg = _("gridedge provision: {path} exists; use --force to replace it")
        print(msg.format(path=exc.args[0]), file=sys.stderr)
        return 1
    for p in done:
        print(_("wrote {files}").format(files=", ".join(p.written)))
        print(_("gateway {gw}: key fingerprint (SHA-256) {fp}").format(gw=p.gw_id, fp=p.fingerprint))
        if (page := page_address(p.out / "gateway.toml")) is not None:
            print(_("status page: {address}").format(address=page))
        if args.stations is not None or args.qr:
            print(qr_terminal(p), end="")
    if args.stations is not None:
        print(_("registration sheet: {path}").format(path=args.out / "registration.csv"))
    return 0


def page_address(config: Path) -> str | None:
    """Where a provisioned gateway's page is, with how to give it the token (read from the
    file on the gateway, never printed here)."""
    from drivers.parts import load_config

    try:
        web = load_config(config, check_files=False).web
    except ConfigError:
        return None
    if not web.listen:
        return None
    host, port = web.host_port
    shown = "GATEWAY" if host in ("0.0.0.0", "::", "") else host  # the address it is reached at
    token = f"?token=$(sudo cat {web.token_file})" if web.token_file is not None else ""
    return f"http://{shown}:{port}/{token}"


def cmd_verify(args: argparse.Namespace) -> int:
    from edge.mqtt import TlsSettings
    from tools.verify import run_verify, verify_sms

    if args.sms is not None:
        with contextlib.ExitStack() as stack:
            src = sys.stdin if args.sms == "-" else stack.enter_context(open(args.sms, encoding="ascii"))
            summary = verify_sms(src, pubkeys=args.pubkey)
        return 0 if summary["invalid"] == 0 else 1
    summary = asyncio.run(
        run_verify(
            host=args.host,
            port=args.port,
            pubkeys=args.pubkey,
            prefix=args.topic_prefix,
            count=args.count,
            timeout=args.timeout,
            until_idle=args.until_idle,
            client_id=args.client_id,
            tls=None if args.tls_ca is None else TlsSettings(args.tls_ca, args.tls_cert, args.tls_key),
        )
    )
    return 0 if summary["invalid"] == 0 and summary["missing"] == 0 else 1


def cmd_status(args: argparse.Namespace) -> int:
    from edge.health import read_status
    from tools.status_table import render

    cfg = load_config(args.config, check_files=False)
    sock = cfg.gateway.status_socket
    lang = from_env()
    _ = translator(lang).gettext
    while True:
        try:
            doc = read_status(sock)
        except OSError as exc:
            msg = _("gridedge status: no running gateway at {sock}: {why}")
            print(msg.format(sock=sock, why=exc.strerror or exc), file=sys.stderr)
            return 1
        text = json.dumps(doc, indent=2) + "\n" if args.json else render(doc, lang)
        if args.watch is None:
            print(text, end="")
            return 0
        print("\x1b[H\x1b[2J" + text, end="", flush=True)  # home, clear: a terminal's refresh
        time.sleep(max(0.2, args.watch))


def cmd_firmware_push(args: argparse.Namespace) -> int:
    from firmware_bridge.push import push

    return push(load_config(args.config), args.manifest, args.image, args.device)


def cmd_demo(args: argparse.Namespace) -> int:
    from tools.demo import run_demo

    return _run_until_signal(run_demo(duration=args.duration, workdir=args.dir))


def _with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("-c", "--config", type=Path, default=default_path(), help="config file (TOML)")
    return sp


def _provision_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--id", default=None, help="gateway id ([A-Za-z0-9._-]{1,64})")
    sp.add_argument(
        "--from",
        dest="stations",
        type=Path,
        default=None,
        metavar="CSV",
        help="a fleet: one directory per gateway of this stations file (docs/operations.md)",
    )
    sp.add_argument(
        "--template",
        type=Path,
        default=None,
        help="with --from: TOML merged into every config ({id}: the gateway's id)",
    )
    sp.add_argument("--qr", action="store_true", help="print the key fingerprint's QR code too")
    sp.add_argument(
        "--out", type=Path, default=SYSTEM_DIR, help=f"directory to write into (default {SYSTEM_DIR})"
    )
    sp.add_argument(
        "--state-dir",
        default=None,
        help="the configs' state_dir (default /var/lib/gridedge for /etc/gridedge and --from, else 'state')",
    )
    sp.add_argument(
        "--owner",
        default=SERVICE_USER,
        help=f"run as root: the user whose keys they are (default {SERVICE_USER}, when it exists)",
    )
    sp.add_argument("--force", action="store_true", help="replace an existing key")
    sp.add_argument("--csr", action="store_true", help="also a TLS key and a CSR (CN = id) for mutual TLS")


def _verify_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=1883)
    sp.add_argument(
        "--pubkey",
        action="append",
        required=True,
        metavar="[GW=]PATH",
        help="a gateway's public key (PEM), bound to gateway GW; repeatable (several keys must be bound)",
    )
    sp.add_argument(
        "--tls-ca", default=None, help="the broker's CA (TLS); with --tls-cert/--tls-key: mutual TLS"
    )
    sp.add_argument("--tls-cert", default=None, help="this client's certificate")
    sp.add_argument("--tls-key", default=None, help="this client's key")
    sp.add_argument("--topic-prefix", default="gridedge/v1")
    sp.add_argument("--count", type=int, default=None, help="stop after N messages")
    sp.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    sp.add_argument("--until-idle", type=float, default=None, help="stop after S quiet seconds")
    sp.add_argument(
        "--client-id", default=None, help="persistent session id: survive broker restarts without gaps"
    )
    sp.add_argument(
        "--sms",
        default=None,
        metavar="FILE",
        help="verify SMS a second bearer carried instead (one SMS's user data in hex a line; - for stdin)",
    )


def _firmware_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--manifest", type=Path, required=True, help="the platform-signed manifest (COSE_Sign1)")
    sp.add_argument("--image", type=Path, required=True, help="the firmware image it describes")
    sp.add_argument("--device", required=True, help="wearable id (needs fw_class and smp_port)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridedge", description="gridedge edge gateway")
    p.add_argument("--version", action="version", version=f"gridedge {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="cmd", required=True)
    _with_config(sub.add_parser("run", help="run the gateway")).set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a config; exit 0 if good, 1 if not")
    _with_config(check).set_defaults(func=cmd_check)
    check.add_argument(
        "--user",
        help="check that this user can read the key and TLS files (default: as root, the "
        f"service user {SERVICE_USER!r} when it exists; otherwise yourself)",
    )
    check.add_argument(
        "--starting",
        action="store_true",
        help="as the unit starts: TLS file problems warn (the gateway runs with its uplink down)",
    )
    sp = sub.add_parser("provision", help="make a gateway key pair and a starter config")
    _provision_args(sp)
    sp.set_defaults(func=cmd_provision)
    sp = sub.add_parser("verify", help="subscribe, verify signatures, report gaps and duplicates")
    _verify_args(sp)
    sp.set_defaults(func=cmd_verify)
    sp = _with_config(sub.add_parser("status", help="queue depth, devices and link of the running gateway"))
    sp.add_argument("--json", action="store_true", help="the status document as JSON (for scripts)")
    sp.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="S",
        help="refresh every S seconds (2)",
    )
    sp.set_defaults(func=cmd_status)
    conf = sub.add_parser("config", help="the config in effect (yours or the platform's)").add_subparsers(
        dest="config_cmd", required=True
    )
    show = conf.add_parser("show", help="which file is in effect, and the platform's applied config")
    _with_config(show).set_defaults(func=cmd_config_show)
    reset_ = conf.add_parser("reset", help="drop the platform's applied config: yours is in effect again")
    _with_config(reset_).set_defaults(func=cmd_config_reset)
    fw = sub.add_parser("firmware", help="firmware for the wearables").add_subparsers(
        dest="fw_cmd", required=True
    )
    sp = _with_config(
        fw.add_parser("push", help="flash one wearable on site (same checks as a platform update)")
    )
    _firmware_args(sp)
    sp.set_defaults(func=cmd_firmware_push)
    for name, func, what in (
        ("platform", cmd_platform, "sign (and send) what the platform owns: commands, bundles, manifests"),
        (
            "receive",
            cmd_receive,
            "the platform's receiver: the fleet's messages into PostgreSQL (platform extra)",
        ),
    ):  # their own parsers take the rest of the line
        sp = sub.add_parser(name, help=what, add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(func=func)
    sp = sub.add_parser("demo", help="everything local: broker, simulated devices, live view")
    sp.add_argument(
        "--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)"
    )
    sp.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if args.cmd == "run":
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
    except EdgeError as exc:
        print(f"gridedge {args.cmd}: {localised(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
