"""SSH to lab nodes with paramiko, checking host keys strictly against the lab's known keys."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from labvirt.errors import LabvirtError

# paramiko logs failed attempts (a guest still booting) with tracebacks from its transport
# thread; labvirt reports reachability itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class HostKeyMismatch(LabvirtError):
    """The node presented a host key other than the one labvirt gave it."""


class Unreachable(LabvirtError):
    """No ssh session could be had; the subclasses say why, so a wait can tell a node that
    is still booting from one that will never let labvirt in."""


class NotListening(Unreachable):
    """Nothing accepts TCP on the node's ssh address (the domain or its forward is down)."""


class NoSshAnswer(Unreachable):
    """TCP is accepted but no ssh banner comes: sshd not started yet, or (through a QEMU
    forward, which always accepts) no network inside the guest."""


class AuthRefused(Unreachable):
    """sshd answered with the right host key and refused labvirt's client key."""


@dataclass(frozen=True)
class CommandResult:
    node: str
    exit_status: int
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Target:
    node: str
    host: str
    port: int
    user: str
    key_path: Path
    host_key_line: str  # "ssh-ed25519 AAAA..."


def _client(target: Target) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    keytype, b64 = target.host_key_line.split()[:2]
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    client.get_host_keys().add(name, keytype, paramiko.PKey.from_type_string(keytype,
                                                                            _b64(b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def connect(target: Target, timeout: float = 10.0) -> paramiko.SSHClient:
    client = _client(target)
    try:
        client.connect(
            target.host, port=target.port, username=target.user,
            key_filename=str(target.key_path), timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, allow_agent=False, look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyMismatch(
            f"{target.node} ({target.host}:{target.port}) presented host key "
            f"{exc.key.get_fingerprint().hex()} which is not the key labvirt gave it; "
            "refusing to connect",
            "if the node was rebuilt outside labvirt, run `labvirt up --recreate "
            f"{target.node}`; otherwise something else answers on that address",
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise AuthRefused(
            f"{target.node}: ssh refuses labvirt's key {target.key_path} for user "
            f"{target.user!r} ({exc})") from None
    except paramiko.SSHException as exc:
        client.close()
        if "banner" in str(exc).lower():
            raise NoSshAnswer(
                f"{target.node}: {target.host}:{target.port} accepts connections but "
                "nothing speaks ssh behind it") from None
        if "not found in known_hosts" in str(exc):
            raise HostKeyMismatch(
                f"{target.node} ({target.host}:{target.port}) presented an unknown host key "
                "type; refusing to connect") from None
        raise Unreachable(f"{target.node}: ssh failed: {exc}") from None
    except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError):
        client.close()
        raise NotListening(
            f"{target.node}: nothing listens on {target.host}:{target.port}") from None
    except (TimeoutError, OSError, EOFError) as exc:
        client.close()
        raise Unreachable(f"{target.node}: cannot reach {target.host}:{target.port}: {exc}") \
            from None
    return client


def run(target: Target, command: str, timeout: float = 600.0) -> CommandResult:
    t0 = time.monotonic()
    client = connect(target)
    try:
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
    except (TimeoutError, paramiko.SSHException, OSError) as exc:
        raise Unreachable(f"{target.node}: command failed over ssh: {exc}") from None
    finally:
        client.close()
    return CommandResult(target.node, status, out, err, time.monotonic() - t0)
