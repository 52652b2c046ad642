"""Threat: the platform's command key is stolen. Each of the platform's keys has one role
(commands, firmware) and moves only by a statement its own current key and the new key
both signed: the command key cannot take the firmware role, nor hand itself on, nor
make one key hold two roles; a bundle changes nothing its statements do not cover."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.parts import PARTS
from edge.commands import CommandError
from edge.reconfig import BundleError, apply_bundle, confirm, load_effective, open_bundle
from floor.config import Config
from floor.envelope import Signer, load_public_key, private_pem, public_pem
from floor.fsutil import write_private

GW = "gw-1"


@dataclass
class Site:
    """A gateway's config directory: its own key, the platform's command and firmware keys."""

    dir: Path
    gateway: Signer
    command: Signer
    firmware: Signer

    @property
    def config(self) -> Path:
        return self.dir / "gateway.toml"

    def text(self, *, command: str = "command.pub", firmware: str = "firmware.pub", extra: str = "") -> str:
        return (
            f'[gateway]\nid = "{GW}"\nkey = "gateway.key"\nstate_dir = "state"\n'
            f'[mqtt]\nhost = "127.0.0.1"\n[outbox]\nbatch_ms = 250\n{extra}'
            f'[trust]\ncommand_key = "{command}"\nfirmware_key = "{firmware}"\n'
        )

    def current(self) -> Config:
        return load_effective(self.config, parts=PARTS.catalog)

    def pub(self, name: str, signer: Signer) -> str:
        (self.dir / name).write_bytes(public_pem(signer.public_key))
        return name

    def bundle(self, text: str, rotation: list[bytes] | None = None, *, by: Signer | None = None) -> bytes:
        return (by or self.command).sign({"v": 1, "gw": GW, "config": text, "rotation": rotation})

    def statement(self, role: str, new: Signer, *, by: Signer) -> bytes:
        pem = public_pem(new.public_key).decode()
        return by.sign({"v": 2, "type": "trust.rotation", "gw": GW, "role": role, "key": pem})

    def rotation(self, role: str, new: Signer, *, current: Signer) -> list[bytes]:
        return [self.statement(role, new, by=current), self.statement(role, new, by=new)]

    def open(self, data: bytes, trust: Signer | None = None) -> Any:
        return open_bundle(data, (trust or self.command).public_key, self.current())

    def refused(self, data: bytes, trust: Signer | None = None) -> str:
        with pytest.raises(BundleError) as err:
            self.open(data, trust)
        assert err.value.code == CommandError.TRUST_CHANGE_REFUSED, err.value
        return err.value.detail


def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path, signer(), signer(), signer())
    key = Ed25519PrivateKey.generate()
    s.gateway = Signer(key)
    write_private(tmp_path / "gateway.key", private_pem(key))
    s.pub("command.pub", s.command)
    s.pub("firmware.pub", s.firmware)
    (tmp_path / "state").mkdir()
    s.config.write_text(s.text())
    return s


def test_the_stolen_command_key_cannot_take_the_firmware_role(site: Site) -> None:
    """What was seen: a bundle by the command key moved firmware_key to the old command
    key's file and the command key to the attacker's, with a statement the command key
    signed; a firmware image signed by the attacker was then taken."""
    attacker = signer()
    text = site.text(command=site.pub("attacker.pub", attacker), firmware="command.pub")
    old_form = site.command.sign(
        {"v": 1, "type": "trust.rotation", "gw": GW, "command_key": public_pem(attacker.public_key).decode()}
    )
    site.refused(site.bundle(text, [old_form]))
    site.refused(site.bundle(text, site.rotation("command", attacker, current=site.command)))
    # the firmware role moved by the command key: its statement is not the firmware key's
    site.refused(site.bundle(site.text(), site.rotation("firmware", attacker, current=site.command)))
    # and a firmware key path pointed at another key without any statement
    site.refused(site.bundle(site.text(firmware=site.pub("other.pub", attacker))))


def test_a_role_moves_with_its_current_key_and_the_new_one_both(site: Site) -> None:
    new = signer()
    only_current = [site.statement("command", new, by=site.command)]
    only_new = [site.statement("command", new, by=new)]
    assert "signed by the current command key and by the new key" in site.refused(
        site.bundle(site.text(), only_current)
    )
    site.refused(site.bundle(site.text(), only_new))
    bundle = site.open(site.bundle(site.text(), site.rotation("command", new, current=site.command)))
    cfg = apply_bundle(bundle, site.current(), "c1", 60.0)
    confirm(site.dir / "state")
    assert load_public_key(cfg.trust.command_key.read_bytes()) == new.public_key  # type: ignore[union-attr]
    assert load_public_key(cfg.trust.firmware_key.read_bytes()) == site.firmware.public_key  # type: ignore[union-attr]
    # the old key's statement, replayed later, no longer moves anything: it is not current
    replay = site.bundle(site.text(), site.rotation("command", signer(), current=site.command), by=new)
    site.refused(replay, trust=new)
    # the firmware role, by its own key and the new one
    fw = signer()
    bundle = site.open(
        site.bundle(site.text(), site.rotation("firmware", fw, current=site.firmware), by=new), new
    )
    cfg = apply_bundle(bundle, site.current(), "c2", 60.0)
    assert load_public_key(cfg.trust.firmware_key.read_bytes()) == fw.public_key  # type: ignore[union-attr]
    assert load_public_key(cfg.trust.command_key.read_bytes()) == new.public_key  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("role", "becomes"),
    [("command", "firmware"), ("command", "gateway"), ("firmware", "command"), ("firmware", "gateway")],
)
def test_no_key_holds_two_roles(site: Site, role: str, becomes: str) -> None:
    keys = {"command": site.command, "firmware": site.firmware, "gateway": site.gateway}
    new, current = keys[becomes], keys[role]
    rotation = [site.statement(role, new, by=current), site.statement(role, new, by=new)]
    assert "no key holds two roles" in site.refused(site.bundle(site.text(), rotation))


def test_a_bundle_changes_nothing_its_statements_do_not_cover(site: Site) -> None:
    new = signer()
    rotation = site.rotation("command", new, current=site.command)
    moved_too = site.text(firmware=site.pub("elsewhere.pub", signer()))
    assert "trust.firmware_key changed" in site.refused(site.bundle(moved_too, rotation))
    # the same key under another file name changes no role: harmless
    same = site.text(firmware=site.pub("firmware-copy.pub", site.firmware))
    assert site.open(site.bundle(same)).cfg.trust.firmware_key.name == "firmware-copy.pub"


def test_the_gateways_own_anchors_are_the_technicians_alone(site: Site) -> None:
    """Who the gateway is, whom it trusts on the wire, where its floor and its status
    socket live: no statement moves them; only the technician's file."""
    rotation = site.rotation("command", signer(), current=site.command)
    elsewhere = site.text().replace(
        'state_dir = "state"\n', 'state_dir = "state"\nstatus_socket = "/run/x.sock"\n'
    )
    for text in (site.text(extra='[firmware]\nfloor_mirror = "/tmp/floor.json"\n'), elsewhere):
        for rot in (None, rotation):
            assert "only the technician's file" in site.refused(site.bundle(text, rot))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('state_dir = "state"\n', 'state_dir = "state"\nstatus_socket = "state/commands.json"\n'),
        ("[outbox]", '[web]\nlisten = "127.0.0.1:8080"\ntoken_file = "state/outbox.sqlite"\n[outbox]'),
        ("[outbox]", '[web]\nlisten = "127.0.0.1:8080"\ntoken_file = "link-into-state"\n[outbox]'),
    ],
)
def test_a_bundle_points_no_file_into_the_state_directory(site: Site, old: str, new: str) -> None:
    """What was seen: `status_socket` set by a bundle to the replay state's file turned it
    into a socket, and a captured command replayed after the restart."""
    (site.dir / "link-into-state").symlink_to(site.dir / "state" / "commands.json")
    with pytest.raises(BundleError) as err:
        site.open(site.bundle(site.text().replace(old, new)))
    assert err.value.code == CommandError.BAD_CONFIG and "state directory" in err.value.detail


def test_only_a_socket_is_removed_where_the_status_socket_goes(tmp_path: Path) -> None:
    import asyncio

    from edge.health import serve_status

    replay = tmp_path / "commands.json"
    replay.write_text('{"cseq": 41}')

    async def go() -> None:
        task = asyncio.get_running_loop().create_task(serve_status(replay, lambda: asyncio.sleep(0, {})))
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert replay.read_text() == '{"cseq": 41}'  # not ours to remove: the status socket did without


def test_a_relative_config_path_changes_nothing_a_bundle_is_judged_by(site: Site, monkeypatch: Any) -> None:
    """What was seen: `-c gateway.toml` (relative) made every bundle fail as `gateway.key
    changed`."""
    monkeypatch.chdir(site.dir)
    current = load_effective(Path("gateway.toml"), parts=PARTS.catalog)
    assert current.file.is_absolute() and current.gateway.key.is_absolute()
    same = site.text().replace("batch_ms = 250", "batch_ms = 100")
    assert open_bundle(site.bundle(same), site.command.public_key, current).cfg.outbox.batch_ms == 100
