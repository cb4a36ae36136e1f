"""A small Debian 12 (bookworm) cloud image, built from Debian's packages for the system tier.

Why it lives in the tests and not in labvirt: labvirt's users deploy TripleO on CentOS Stream or
RHEL GenericCloud images (`labvirt image fetch`); a Debian image is of no use to them, and
building one needs root, a chroot and mmdebstrap, which nothing else in labvirt needs. What the
test tier needs is a *real* distribution booting the way those images boot (firmware -> grub ->
kernel + initramfs -> systemd -> cloud-init reading labvirt's NoCloud seed), with no download
other than Debian's packages. Run it alone with

    .venv/bin/python tests/system/debian_image.py       # prints the image's path

What it makes (the layout of Debian's own cloud images, debian-cloud-images):

- a GPT disk of DISK_BYTES: partition 1 the ext4 root (last on the disk, so growpart can grow
  it), 14 the BIOS boot partition holding grub's core.img, 15 the EFI system partition holding
  grub as the removable-media loader EFI/BOOT/BOOTX64.EFI: one image boots with SeaBIOS and
  with OVMF, and needs no NVRAM boot entry;
- packages: systemd, udev, cloud-init, openssh-server, sudo, the cloud kernel, grub's BIOS and
  EFI modules (grub-pc-bin, grub-efi-amd64-bin: the images are made with the image's own
  grub-mkimage), cloud-guest-utils (growpart), ifupdown + isc-dhcp-client (cloud-init's
  renderer on Debian 12);
- no ssh host keys and an empty machine-id (every clone gets its own), cloud-init limited to
  the NoCloud datasource, serial console on ttyS0.

No mount and no loop device: the root file system is written with `mkfs.ext4 -d`, the EFI
partition with mtools, grub's boot sector and core image are placed the way grub-bios-setup
places them, and the raw disk is converted to a compressed qcow2.

The result is cached in CACHE_DIR (outside the clone, kept between CI runs on one machine) under
a name keyed by the hash of everything that goes into it: this file's text (package list,
suite, customisation script, disk layout) and the mirrors.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("LABVIRT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("LABVIRT_DEBIAN_SECURITY_MIRROR",
                                 "http://deb.debian.org/debian-security")
CACHE_DIR = Path(os.environ.get("LABVIRT_TEST_IMAGE_CACHE", "/var/cache/labvirt-tests"))

PACKAGES = (
    "systemd-sysv", "udev", "dbus", "cloud-init", "openssh-server", "sudo",
    "linux-image-cloud-amd64", "grub-pc-bin", "grub-efi-amd64-bin", "cloud-guest-utils",
    "e2fsprogs", "fdisk", "ifupdown", "isc-dhcp-client", "iproute2", "netbase", "locales",
    "procps", "util-linux",
)  # fmt: skip

MIB = 1024**2
DISK_BYTES = 2048 * MIB
BIOS_BOOT = (2048, 2048)  # (first sector, sectors): 1 MiB
ESP = (4096, 32 * 2048)  # 32 MiB FAT16
ROOT_START = ESP[0] + ESP[1]
SECTOR = 512

# Run by mmdebstrap inside its chroot setup ($1 is the root directory), after the packages
# are installed. ROOT_UUID, ESP_ID come from the environment.
CUSTOMIZE = r"""
set -eu
root="$1"
kver=$(ls "$root"/boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1)
[ -n "$kver" ] || { echo "no kernel in /boot" >&2; exit 1; }
mkdir -p "$root/.labvirt"
echo "$kver" > "$root/.labvirt/kernel"

cat > "$root/etc/fstab" <<EOF
UUID=$ROOT_UUID / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1
UUID=$ESP_UUID /boot/efi vfat defaults,nofail 0 0
EOF
mkdir -p "$root/boot/efi"
# the initramfs was made before there was an fstab: again, now that it knows the root's
# file system (so it carries fsck.ext4 and checks the root before mounting it)
chroot "$root" update-initramfs -u -k "$kver"
echo debian > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# network: loopback only; cloud-init writes the rest from the seed (ENI renderer)
printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' \
    > "$root/etc/network/interfaces"

# cloud-init: only NoCloud (no probing of metadata services that do not exist here)
cat > "$root/etc/cloud/cloud.cfg.d/90-labvirt-datasource.cfg" <<EOF
datasource_list: [ NoCloud, None ]
EOF

# locale: C.UTF-8 is built into glibc; say so, so cloud-init finds it configured
echo 'LANG=C.UTF-8' > "$root/etc/default/locale"

# grub: its modules where the core images look for them, and one boot entry
mkdir -p "$root/boot/grub"
cp -r "$root/usr/lib/grub/i386-pc" "$root/usr/lib/grub/x86_64-efi" "$root/boot/grub/"
rm -f "$root"/boot/grub/*/*.image "$root"/boot/grub/*/*.module
cat > "$root/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
menuentry 'Debian GNU/Linux 12 ($kver)' {
    insmod part_gpt
    insmod ext2
    search --no-floppy --fs-uuid --set=root $ROOT_UUID
    linux /boot/vmlinuz-$kver root=UUID=$ROOT_UUID ro console=tty0 console=ttyS0,115200n8
    initrd /boot/initrd.img-$kver
}
EOF
# mmdebstrap empties /tmp at the end: the boot images go to /.labvirt, taken out by the builder
mkdir -p "$root/.labvirt"
cat > "$root/.labvirt/embed.cfg" <<EOF
search.fs_uuid $ROOT_UUID root
set prefix=(\$root)/boot/grub
EOF
chroot "$root" grub-mkimage -O i386-pc -o /.labvirt/core.img -c /.labvirt/embed.cfg \
    -p /boot/grub \
    biosdisk part_gpt ext2 search_fs_uuid normal
chroot "$root" grub-mkimage -O x86_64-efi -o /.labvirt/BOOTX64.EFI -c /.labvirt/embed.cfg \
    -p /boot/grub \
    part_gpt fat ext2 search_fs_uuid normal
cp "$root/usr/lib/grub/i386-pc/boot.img" "$root/.labvirt/"

# every clone is a new machine: no host keys (cloud-init installs labvirt's), no machine-id
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/*.log "$root"/var/cache/apt/*.bin
"""

# Keep the image small: no manual pages, documentation (but the copyright files) or
# translations.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/info/*",
)


TOOLS = ("mmdebstrap", "sfdisk", "mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "qemu-img")


class MirrorUnreachable(RuntimeError):
    """The Debian mirror did not answer: the image cannot be built here."""


@dataclass(frozen=True)
class DebianImage:
    path: Path
    kernel: str
    build_seconds: float  # of the build that made the cached file
    cached: bool  # True when this call found it built


def sources() -> list[str]:
    return [f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {SUITE}-updates main",
            f"deb {SECURITY_MIRROR} {SUITE}-security main"]


def input_key() -> str:
    """Hash of everything the image is made of: this file (packages, suite, script, disk
    layout) and the package sources."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update("\n".join(sources()).encode())
    return h.hexdigest()[:16]


def image_path(key: str | None = None) -> Path:
    return CACHE_DIR / f"debian-12-{key or input_key()}.qcow2"


def check_mirror(timeout: float = 20.0) -> None:
    """Raise MirrorUnreachable when the mirror's release file cannot be read."""
    url = f"{MIRROR}/dists/{SUITE}/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read(64)
    except OSError as exc:
        raise MirrorUnreachable(f"the Debian mirror {MIRROR} does not answer ({url}: {exc})") \
            from None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another session building the same image: wait
        yield


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode} (log {log}):\n{tail}")


def _uuids(key: str) -> tuple[str, str, str]:
    """Root file system UUID, EFI volume id (as UUID text XXXX-XXXX and as 8 hex digits)."""
    root = str(uuid.UUID(hashlib.sha256(f"root-{key}".encode()).hexdigest()[:32]))
    esp = hashlib.sha256(f"esp-{key}".encode()).hexdigest()[:8].upper()
    return root, f"{esp[:4]}-{esp[4:]}", esp


def _write_at(disk: Path, offset: int, data: bytes) -> None:
    with disk.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def _place_grub_bios(disk: Path, boot_img: bytes, core_img: bytes) -> None:
    """What grub-bios-setup does for a GPT disk with a BIOS boot partition: the first 440
    bytes of boot.img into the protective MBR, told where core.img starts (offset 0x5c), and
    core.img into the partition, its first sector told where the rest of it starts."""
    start, sectors = BIOS_BOOT
    if len(core_img) > sectors * SECTOR:
        raise RuntimeError(f"grub core.img is {len(core_img)} bytes, larger than the BIOS "
                           "boot partition")
    mbr = bytearray(boot_img[:440])
    mbr[0x5C:0x64] = start.to_bytes(8, "little")
    core = bytearray(core_img)
    # struct grub_pc_bios_boot_blocklist {u64 start; u16 len; u16 segment} at the end of
    # diskboot.img's sector; grub-mkimage already set len
    blocklist = SECTOR - 12
    core[blocklist:blocklist + 8] = (start + 1).to_bytes(8, "little")
    _write_at(disk, 0, bytes(mbr))
    _write_at(disk, start * SECTOR, bytes(core))


def build(progress: Callable[[str], None] = lambda _m: None) -> DebianImage:
    """The cached image, built first when missing. Raises MirrorUnreachable."""
    key = input_key()
    target = image_path(key)
    manifest = target.with_suffix(".json")
    with _locked(CACHE_DIR):
        if target.exists() and manifest.exists():
            info = json.loads(manifest.read_text())
            return DebianImage(target, info["kernel"], info["build_seconds"], True)
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise RuntimeError(f"building the Debian image needs {', '.join(missing)}: "
                               "run scripts/setup.sh (it installs them)")
        check_mirror()
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE_DIR))
        log = work / "build.log"
        try:
            kernel = _build_into(work, key, log, progress)
            seconds = time.monotonic() - t0
            tmp = work / "image.qcow2"
            os.replace(tmp, target)
            manifest.write_text(json.dumps({
                "kernel": kernel, "build_seconds": round(seconds, 1), "suite": SUITE,
                "packages": list(PACKAGES), "sources": sources(),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=2) + "\n")
            for old in CACHE_DIR.glob("debian-12-*.qcow2"):  # earlier inputs: not needed
                if old != target:
                    old.unlink(missing_ok=True)
                    old.with_suffix(".json").unlink(missing_ok=True)
            return DebianImage(target, kernel, seconds, False)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _build_into(work: Path, key: str, log: Path, progress: Callable[[str], None]) -> str:
    root = work / "root"
    root_uuid, esp_uuid, esp_id = _uuids(key)
    script = work / "customize.sh"
    script.write_text(CUSTOMIZE)
    env = {**os.environ, "ROOT_UUID": root_uuid, "ESP_UUID": esp_uuid}
    progress("mmdebstrap: installing packages")
    _run(["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
          f"--include={','.join(PACKAGES)}",
          "--aptopt=Acquire::Retries \"3\"",
          *[f"--dpkgopt={o}" for o in DPKG_OPTIONS],
          f"--customize-hook=sh {script} \"$1\"",
          SUITE, str(root), *sources()], log, env)
    out = root / ".labvirt"
    kernel = (out / "kernel").read_text().strip()
    boot_img = (out / "boot.img").read_bytes()
    core_img = (out / "core.img").read_bytes()
    shutil.copy(out / "BOOTX64.EFI", work / "BOOTX64.EFI")
    shutil.rmtree(out)

    progress("file systems")
    root_sectors = DISK_BYTES // SECTOR - ROOT_START - 34  # the backup GPT at the end
    rootfs = work / "root.ext4"
    _run(["mkfs.ext4", "-q", "-L", "root", "-U", root_uuid, "-d", str(root), "-E",
          "root_owner=0:0", str(rootfs), f"{root_sectors * SECTOR // 1024}k"], log)
    espfs = work / "esp.vfat"
    _run(["mkfs.vfat", "-F", "16", "-n", "ESP", "-i", esp_id, "-C", str(espfs),
          str(ESP[1] * SECTOR // 1024)], log)
    mtools = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    _run(["mmd", "-i", str(espfs), "::/EFI", "::/EFI/BOOT"], log, mtools)
    _run(["mcopy", "-i", str(espfs), str(work / "BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"],
         log, mtools)

    progress("disk")
    disk = work / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(DISK_BYTES)
    disk_id = uuid.UUID(hashlib.sha256(f"disk-{key}".encode()).hexdigest()[:32])
    table = (
        "label: gpt\n"
        f"label-id: {disk_id}\n"
        "unit: sectors\n"
        f"{disk}1 : start={ROOT_START}, size={root_sectors}, "
        "type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n"
        f"{disk}14 : start={BIOS_BOOT[0]}, size={BIOS_BOOT[1]}, "
        "type=21686148-6449-6E6F-744E-656564454649, name=bios\n"
        f"{disk}15 : start={ESP[0]}, size={ESP[1]}, "
        "type=C12A7328-F81F-11D2-BA4B-00A0C93EC3B8, name=esp\n"
    )
    with log.open("a") as out:
        subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)],
                       input=table.encode(), stdout=out, stderr=subprocess.STDOUT, check=True)
    _run(["dd", f"if={rootfs}", f"of={disk}", "bs=1M", f"seek={ROOT_START * SECTOR}",
          "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"], log)
    _run(["dd", f"if={espfs}", f"of={disk}", "bs=1M", f"seek={ESP[0] * SECTOR}",
          "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"], log)
    _place_grub_bios(disk, boot_img, core_img)

    progress("qcow2 (compressed)")
    _run(["qemu-img", "convert", "-c", "-O", "qcow2", str(disk), str(work / "image.qcow2")],
         log)
    return kernel


if __name__ == "__main__":
    started = time.monotonic()
    image = build(progress=lambda m: print(f"debian-image: {m}", file=sys.stderr))
    print(image.path)
    what = "cached" if image.cached else "built"
    print(f"debian-image: {what}, kernel {image.kernel}, build took {image.build_seconds:.0f} s, "
          f"this call {time.monotonic() - started:.1f} s", file=sys.stderr)
