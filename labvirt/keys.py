"""The lab's ssh keys: one client key pair per lab, one host key per node, known_hosts.

Host keys are generated before a node first boots and handed to it in its seed, so labvirt
knows every node's host key in advance: connections check it strictly (no trust on first
use). Keys live in the lab's state directory; private keys are mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from labvirt.errors import InputError
from labvirt.model import Lab, Node
from labvirt.outputs.access import endpoint
from labvirt.state import write_atomic


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    private_pem: str
    public_line: str  # "ssh-ed25519 AAAA... comment"


def _generate(comment: str) -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode()
    return private, f"{public} {comment}"


def _load_or_create(path: Path, comment: str) -> KeyPair:
    pub_path = path.with_name(path.name + ".pub")
    if path.exists():
        private = path.read_text()
        if pub_path.exists():
            public = pub_path.read_text().strip()
        else:
            try:
                key = serialization.load_ssh_private_key(private.encode(), password=None)
            except (ValueError, TypeError) as exc:
                raise InputError(f"cannot read the ssh key {path}: {exc}",
                                 "labvirt needs an unencrypted OpenSSH private key") from None
            public = key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        return KeyPair(path, private, public)
    private, public = _generate(comment)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, private, mode=0o600)
    write_atomic(pub_path, public + "\n", mode=0o644)
    return KeyPair(path, private, public)


def lab_key(lab: Lab, key_path: Path) -> KeyPair:
    """The lab's client key: the layout's `labvirt.ssh.key`, or one generated once."""
    if lab.ssh_key and not key_path.exists():
        raise InputError(f"the ssh key {key_path} named in labvirt.ssh.key does not exist",
                         "create it with ssh-keygen -t ed25519, or remove the setting")
    return _load_or_create(key_path, f"labvirt-{lab.name}")


def host_key(state_dir: Path, node: Node) -> KeyPair:
    path = state_dir / "hostkeys" / node.hostname / "ssh_host_ed25519_key"
    return _load_or_create(path, f"root@{node.hostname}")


def known_hosts_text(lab: Lab, state_dir: Path) -> str:
    """Entries for ssh's HostKeyAlias (the node name) and for the address and port used."""
    lines = []
    for node in lab.nodes:
        key = host_key(state_dir, node).public_line.split()
        ep = endpoint(lab, node)
        addr = ep.host if ep.port == 22 else f"[{ep.host}]:{ep.port}"
        names = ",".join(dict.fromkeys([node.hostname, addr]))
        lines.append(f"{names} {key[0]} {key[1]}")
    return "\n".join(lines) + "\n"


def write_known_hosts(lab: Lab, state_dir: Path, path: Path) -> Path:
    text = known_hosts_text(lab, state_dir)
    if not path.exists() or path.read_text() != text:
        write_atomic(path, text)
    return path


def ensure_private_mode(path: Path) -> None:
    if path.exists() and (path.stat().st_mode & 0o077):
        os.chmod(path, 0o600)
