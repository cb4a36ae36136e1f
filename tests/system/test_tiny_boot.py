"""Bring-up of the tiny image: one TCG guest under plain QEMU, reached over a loopback hostfwd.

The guest gets a NoCloud seed on an IDE CD-ROM, a qcow2 root disk (vda) and a data disk
(vdb), a user-mode NIC (restrict=on, DHCP, hostfwd 127.0.0.1:PORT -> 22) and a second NIC on
a QEMU hub with no other port (static 192.168.24.30/24, no traffic leaves QEMU).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from labvirt.image.tiny import TinyImage, TinyImageError, build_tiny_image, default_cache_dir
from labvirt.seed import SeedInterface, SeedSpec, SeedUser, build_seed_iso, render_seed_files

pytestmark = pytest.mark.system

QEMU = "qemu-system-x86_64"
HOSTNAME = "oc0-ceph-4"
USER = "stack"
MGMT_MAC = "52:54:00:4c:00:01"
CTL_MAC = "52:54:00:4c:00:02"
BOOT_TIMEOUT = 600.0  # a limit for a wedged guest, not a speed check (speed: bench/)


def keypair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_image() -> TinyImage:
    for tool in (QEMU, "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install qemu-system-x86 qemu-utils)")
    started = time.monotonic()
    try:
        image = build_tiny_image(default_cache_dir())
    except TinyImageError as exc:
        pytest.skip(f"tiny image cannot be built here: {exc}")
    print(
        f"\ntiny image {image.version}: ready in {time.monotonic() - started:.2f}s, "
        f"initrd {image.initrd.stat().st_size / 1e6:.2f} MB"
    )
    return image


@dataclass
class Node:
    workdir: Path
    image: TinyImage
    port: int
    user_key: str
    host_public: str
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    last_stderr: str = ""

    @property
    def console(self) -> Path:
        return self.workdir / f"console-{self.boots}.log"

    def start(self) -> float:
        """Start QEMU; return seconds from start until ssh answers (banner + auth)."""
        assert self.proc is None
        self.boots += 1
        cmd = [
            QEMU,
            "-accel", "tcg",
            "-m", "256",
            "-smp", "1",
            "-nodefaults",
            "-display", "none",
            "-monitor", "none",
            "-serial", f"file:{self.console}",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", self.image.cmdline,
            "-drive", f"file={self.workdir / 'root.qcow2'},if=virtio,format=qcow2",
            "-drive", f"file={self.workdir / 'data.qcow2'},if=virtio,format=qcow2",
            "-drive", f"file={self.workdir / 'seed.iso'},media=cdrom,if=ide,readonly=on",
            "-netdev", f"user,id=mgmt0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", f"virtio-net-pci,netdev=mgmt0,mac={MGMT_MAC},romfile=",
            "-device", "virtio-rng-pci",  # host entropy: dropbear starts ~2 s sooner
            "-netdev", "hubport,id=ctl0,hubid=1",
            "-device", f"virtio-net-pci,netdev=ctl0,mac={CTL_MAC},romfile=",
        ]  # fmt: skip
        started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / f"qemu-{self.boots}.err").open("wb"),
        )
        deadline = started + BOOT_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu exited with {self.proc.returncode}: {self.diag()}")
            # Until init prints its ready line, slirp accepts and drops connections: wait for
            # the line first (fewer noisy banner errors), then for ssh itself.
            if "labvirt-tiny: ready" not in self.console_text():
                time.sleep(0.2)
                continue
            try:
                client = self.connect(timeout=3.0)
            except (OSError, paramiko.SSHException) as exc:
                last_error = exc
                time.sleep(0.25)
                continue
            client.close()
            return time.monotonic() - started
        raise AssertionError(f"ssh did not answer in {BOOT_TIMEOUT}s ({last_error}): {self.diag()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def diag(self) -> str:
        text = self.console_text()
        err = self.workdir / f"qemu-{self.boots}.err"
        return f"console:\n{text[-3000:]}\nqemu stderr:\n{err.read_text(errors='replace')}"

    def known_hosts(self, public: str) -> Path:
        path = self.workdir / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        return path

    def connect(
        self, *, timeout: float = 10.0, host_public: str | None = None
    ) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts(host_public or self.host_public)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                "127.0.0.1",
                port=self.port,
                username=USER,
                pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(self.user_key)),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    def run(self, command: str) -> tuple[int, str]:
        """Run command over ssh: (exit status, stdout); stderr is kept in last_stderr."""
        client = self.connect()
        try:
            _stdin, stdout, stderr = client.exec_command(command, timeout=30)
            out = stdout.read().decode()
            self.last_stderr = stderr.read().decode()
            return stdout.channel.recv_exit_status(), out
        finally:
            client.close()


@pytest.fixture
def node(tiny_image: TinyImage, tmp_path: Path) -> Iterator[Node]:
    user_private, user_public = keypair()
    host_private, host_public = keypair()
    spec = SeedSpec(
        instance_id=f"{HOSTNAME}-0001",
        hostname=HOSTNAME,
        fqdn=f"{HOSTNAME}.localdomain",
        users=(SeedUser(USER, (f"{user_public} labvirt-test",)),),
        host_keys={"ed25519": (host_private, host_public)},
        interfaces=(
            SeedInterface(MGMT_MAC, "mgmt0", dhcp4=True),
            SeedInterface(CTL_MAC, "ctlplane0", ("192.168.24.30/24",)),
        ),
    )
    (tmp_path / "seed.iso").write_bytes(build_seed_iso(render_seed_files(spec)))
    for disk, size in (("root.qcow2", "256M"), ("data.qcow2", "16M")):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / disk), size], check=True
        )
    node = Node(tmp_path, tiny_image, free_port(), user_private, host_public)
    try:
        yield node
    finally:
        node.stop()


def test_tiny_guest_boots_and_behaves(node: Node, record_property) -> None:
    first = node.start()
    record_property("ssh_seconds_first_boot", round(first, 2))

    assert "labvirt-tiny: ready oc0-ceph-4" in node.console_text()
    assert node.run("hostname") == (0, f"{HOSTNAME}\n")
    assert node.run("id -un") == (0, f"{USER}\n")
    assert node.run("whoami") == (0, f"{USER}\n")
    assert node.run("sudo -n true") == (0, "")
    assert node.run("sudo -n id -un; id -un") == (0, f"root\n{USER}\n")

    rc, out = node.run("ip -4 addr")
    assert rc == 0
    blocks = {
        block.split(":", 1)[0].strip(): block
        for block in re.split(r"^\d+: ", out, flags=re.MULTILINE)
        if block.strip()
    }
    assert "inet 192.168.24.30/24" in blocks["ctlplane0"], out
    assert "inet " in blocks["mgmt0"], out  # the DHCP lease from QEMU's user-mode stack

    rc, out = node.run("dd if=/dev/zero of=/dev/vdb bs=1M count=1 && [ -b /dev/vdb ] && echo blk")
    assert (rc, out) == (0, "blk\n"), node.last_stderr
    assert node.run("date -s '2030-01-02 03:04:05' >/dev/null && date +%Y")[1] == "2030\n"
    token = os.urandom(8).hex()
    assert node.run(f"echo {token} > /persist/f && sync && cat /persist/f") == (0, f"{token}\n")
    assert node.run("/bin/sh -c 'echo raw-ok'") == (0, "raw-ok\n")

    # a wrong known_hosts key: paramiko must refuse the host
    _other_private, other_public = keypair()
    with pytest.raises(paramiko.BadHostKeyException):
        node.connect(host_public=other_public).close()

    venv_ansible = Path(sys.executable).with_name("ansible")
    ansible = str(venv_ansible) if venv_ansible.exists() else shutil.which("ansible")
    if ansible and shutil.which("ssh"):
        key = node.workdir / "user_key"
        key.write_text(node.user_key)
        key.chmod(0o600)
        kh = node.known_hosts(node.host_public)
        inventory = node.workdir / "inventory"
        inventory.write_text(
            f"tiny ansible_host=127.0.0.1 ansible_port={node.port} ansible_user={USER} "
            f"ansible_ssh_private_key_file={key}\n"
        )
        env = dict(
            os.environ,
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_SSH_ARGS=f"-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes -o ControlMaster=no",
            ANSIBLE_LOCAL_TEMP=str(node.workdir / "ansible-tmp"),
            ANSIBLE_NOCOLOR="1",
        )
        proc = subprocess.run(
            [ansible, "-i", str(inventory), "tiny", "-m", "raw", "-a", "hostname"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert HOSTNAME in proc.stdout

    # reboot (the QEMU process): /persist survives, the host key stays the seed's
    node.stop()
    second = node.start()
    record_property("ssh_seconds_second_boot", round(second, 2))
    assert node.run("cat /persist/f") == (0, f"{token}\n")
    assert node.run("hostname") == (0, f"{HOSTNAME}\n")
    print(f"\nssh answered {first:.1f}s after qemu start (first boot), {second:.1f}s (reboot)")
