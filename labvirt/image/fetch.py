"""Cloud images fetched into labvirt's image cache: ``labvirt image fetch|list|rm``.

A fetched image lives in ``<cache>/images/`` (``<cache>`` is ``$LABVIRT_CACHE`` or
``~/.cache/labvirt``) as ``NAME.qcow2`` (or ``NAME.raw``) with ``NAME.json`` beside it (where
it came from, its size and SHA-256). ``labvirt.image: NAME`` in a layout names it
(:func:`resolve_base_image`).

Downloads go to ``NAME.part`` (with ``NAME.part.json``: the URL and the validators the server
gave) and resume with an HTTP ``Range`` request when run again. The publisher's checksum file
is read *before* the download; the file is renamed into place only once its SHA-256 matches.
On a mismatch both the ``.part`` and its record are removed: nothing half-written remains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labvirt.errors import InputError, LabvirtError

__all__ = [
    "KNOWN_IMAGES",
    "CachedImage",
    "ChecksumError",
    "KnownImage",
    "fetch_image",
    "images_dir",
    "list_images",
    "parse_checksum_file",
    "remove_image",
    "resolve_base_image",
]

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte before a download is given up (it resumes on rerun)
QCOW2_MAGIC = b"QFI\xfb"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
RESERVED_NAMES = frozenset({"tiny"})


@dataclass(frozen=True)
class KnownImage:
    name: str
    description: str
    url: str
    checksum_url: str


_CENTOS = "https://cloud.centos.org/centos/{v}-stream/x86_64/images/"
KNOWN_IMAGES: dict[str, KnownImage] = {
    image.name: image for image in (
        KnownImage(
            "centos-stream-9", "CentOS Stream 9 GenericCloud (x86_64, latest)",
            _CENTOS.format(v=9) + "CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2",
            _CENTOS.format(v=9) + "CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2.SHA256SUM",
        ),
        KnownImage(
            "centos-stream-10", "CentOS Stream 10 GenericCloud (x86_64, latest)",
            _CENTOS.format(v=10) + "CentOS-Stream-GenericCloud-10-latest.x86_64.qcow2",
            _CENTOS.format(v=10)
            + "CentOS-Stream-GenericCloud-10-latest.x86_64.qcow2.SHA256SUM",
        ),
    )
}


@dataclass(frozen=True)
class CachedImage:
    name: str
    path: str
    format: str  # qcow2 | raw
    size: int
    sha256: str
    url: str
    checksum_url: str | None
    verified: bool  # False only when fetched with --no-verify

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChecksumError(LabvirtError):
    """The downloaded bytes are not the ones the publisher's checksum names."""


class DownloadError(LabvirtError):
    """The transfer failed part way (network, server); what arrived is kept to resume."""


Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


def images_dir(cache: Path) -> Path:
    return cache / "images"


# ---------------------------------------------------------------------------- checksums

_BSD = re.compile(r"^SHA256 ?\((?P<file>.+)\) ?= ?(?P<hex>[0-9a-fA-F]{64})$")
_GNU = re.compile(r"^(?P<hex>[0-9a-fA-F]{64}) [ *]?(?P<file>.+)$")


def parse_checksum_file(text: str) -> dict[str, str]:
    """File name -> lower-case SHA-256 from a checksum file: BSD style (``SHA256 (f) = hex``,
    as CentOS publishes) or GNU style (``hex  f`` / ``hex *f``, sha256sum's output).
    Comments (``#``), blank lines and other algorithms' lines are skipped."""
    sums: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _BSD.match(line) or _GNU.match(line)
        if m:
            sums[m["file"].strip().lstrip("*").removeprefix("./")] = m["hex"].lower()
    return sums


def _expected_sha256(text: str, file_name: str, checksum_url: str) -> str:
    sums = parse_checksum_file(text)
    if file_name in sums:
        return sums[file_name]
    by_base = {Path(k).name: v for k, v in sums.items()}
    if file_name in by_base:
        return by_base[file_name]
    if len(sums) == 1:  # a per-file checksum (NAME.SHA256SUM) that names a dated file
        return next(iter(sums.values()))
    if not sums:
        raise InputError(f"{checksum_url} has no SHA-256 line",
                         "give the publisher's checksum file (BSD `SHA256 (file) = hex` or "
                         "GNU `hex  file`), or --sha256 HEX")
    raise InputError(f"{checksum_url} has no SHA-256 for {file_name} "
                     f"(it lists {', '.join(sorted(sums)[:5])}{' ...' if len(sums) > 5 else ''})",
                     "give the checksum file of this image, or --sha256 HEX")


# ---------------------------------------------------------------------------- HTTP


def _check_url(url: str, what: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {url!r} is not an http:// or https:// URL",
                         "give a full URL such as https://host/path/image.qcow2, or a known "
                         f"name: {', '.join(KNOWN_IMAGES)}")
    return parts


def _open(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "labvirt", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc  # Range past the end: the caller decides
        if 400 <= exc.code < 500:
            raise InputError(f"{url}: HTTP {exc.code} {exc.reason}",
                             "check the URL (open it in a browser); for RHEL, take a fresh "
                             "download link from the Red Hat customer portal") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}",
                            "the server failed; run the same command again later") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}",
                            "check the network and the URL; run the same command again "
                            "(a partial download resumes)") from None


def _read_text(url: str) -> str:
    with _open(url) as response:
        return response.read(1 << 20).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- cache


def _meta_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _load(directory: Path, name: str) -> CachedImage | None:
    meta = _meta_path(directory, name)
    try:
        data = json.loads(meta.read_text())
        image = CachedImage(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not Path(image.path).is_file():
        return None
    return image


def list_images(cache: Path) -> list[CachedImage]:
    """The fetched images, by name (partial downloads are not images)."""
    directory = images_dir(cache)
    if not directory.is_dir():
        return []
    found = []
    for meta in sorted(directory.glob("*.json")):
        if meta.name.endswith(".part.json"):
            continue
        image = _load(directory, meta.name[: -len(".json")])
        if image is not None:
            found.append(image)
    return found


def _check_name(name: str) -> str:
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise InputError(f"{name!r} is not a usable image name",
                         "use lower-case letters, digits, '.', '_' and '-' (at most 64), "
                         "not 'tiny'; choose one with --name")
    return name


def _name_from_url(url: str) -> str:
    base = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    for suffix in (".qcow2", ".img", ".raw"):
        base = base.removesuffix(suffix)
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-.")[:64]
    if not cleaned or not NAME_RE.match(cleaned):
        raise InputError(f"cannot make an image name from {url}", "give one with --name")
    return cleaned


def remove_image(cache: Path, name: str) -> list[Path]:
    """Remove image NAME (and any partial download of it); the paths removed."""
    directory = images_dir(cache)
    image = _load(directory, name)
    leftovers = [directory / f"{name}.part", directory / f"{name}.part.json"]
    if image is None and not any(p.exists() for p in leftovers):
        names = [i.name for i in list_images(cache)]
        raise InputError(f"no fetched image named {name!r}",
                         f"fetched: {', '.join(names)}" if names
                         else "nothing is fetched; see `labvirt image list`")
    removed = []
    paths = [*([Path(image.path), _meta_path(directory, name)] if image else []), *leftovers]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def resolve_base_image(value: str, cache: Path) -> Path:
    """``labvirt.image`` as a file: a path as given, or the file of a fetched image NAME."""
    path = Path(value).expanduser()
    if "/" in value or path.exists():
        return path
    image = _load(images_dir(cache), value)
    if image is not None:
        return Path(image.path)
    if value in KNOWN_IMAGES:
        raise InputError(f"labvirt.image {value!r} is not fetched yet",
                         f"run `labvirt image fetch {value}` first")
    fetched = [i.name for i in list_images(cache)]
    raise InputError(
        f"labvirt.image {value!r} is neither a file nor a fetched image",
        "give a path to a qcow2 file, `tiny`, or a name from `labvirt image list`"
        + (f" ({', '.join(fetched)})" if fetched else "")
        + f"; `labvirt image fetch NAME|URL` fetches one ({', '.join(KNOWN_IMAGES)})")


# ---------------------------------------------------------------------------- fetch


def _download(url: str, part: Path, record: Path, progress: Progress | None) -> str:
    """Download url into part (resuming what is there); the SHA-256 of the whole file."""
    digest = hashlib.sha256()
    have = 0
    validators: dict[str, str] = {}
    if part.exists():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("url") == url:
            validators = {k: v for k, v in saved.items() if k in ("etag", "last_modified")}
            with part.open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    have += len(chunk)
        else:
            part.unlink()
    headers = {}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validators:  # resume only if the file did not change meanwhile
            headers["If-Range"] = validators.get("etag") or validators["last_modified"]
    response = _open(url, headers)
    with response:
        status = getattr(response, "status", None) or response.getcode()
        length = response.headers.get("Content-Length")
        if status == 416:  # nothing after `have`: the part is the whole file
            total = have
        elif status == 206 and have:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not m or int(m[1]) != have:
                raise DownloadError(f"{url}: the server answered the resume with a "
                                    "different range", "run `labvirt image rm` on it and fetch "
                                    "again")
            total = int(m[2]) if m[2] != "*" else None
        else:  # 200: the whole file (the server cannot resume, or it changed)
            if have:
                digest, have = hashlib.sha256(), 0
            total = int(length) if length and length.isdigit() else None
        _write_json(record, {"url": url,
                             "etag": response.headers.get("ETag") or "",
                             "last_modified": response.headers.get("Last-Modified") or ""})
        if status != 416:
            with part.open("ab" if have else "wb") as out:
                if progress:
                    progress(have, total)
                try:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        if progress:
                            progress(have, total)
                except (OSError, urllib.error.URLError) as exc:
                    raise DownloadError(
                        f"the download of {url} broke off after {have} bytes: {exc}",
                        "run the same command again: it resumes where it stopped") from None
    if total is not None and have != total:
        raise DownloadError(f"the download of {url} broke off after {have} of {total} bytes",
                            "run the same command again: it resumes where it stopped")
    return digest.hexdigest()


def fetch_image(ref: str, cache: Path, *, name: str | None = None,
                checksum_url: str | None = None, sha256: str | None = None,
                no_verify: bool = False, force: bool = False,
                progress: Progress | None = None,
                say: Callable[[str], None] | None = None) -> tuple[CachedImage, bool]:
    """Fetch a known image NAME or a URL into the cache: (the image, whether it was
    downloaded now). Already fetched and not ``force``: nothing is downloaded."""
    tell = say or (lambda _m: None)
    if "://" in ref:
        url = ref
        _check_url(url, "image URL")
        known = None
    elif ref in KNOWN_IMAGES:
        known = KNOWN_IMAGES[ref]
        url = known.url
    else:
        raise InputError(f"unknown image {ref!r}",
                         f"known names: {', '.join(KNOWN_IMAGES)}; or give the image's URL "
                         "(RHEL: the KVM guest image link from the Red Hat customer portal) "
                         "with --checksum-url or --sha256")
    name = _check_name(name or (known.name if known else _name_from_url(url)))
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not SHA256_RE.match(sha256):
            raise InputError(f"--sha256 {sha256!r} is not 64 hexadecimal digits",
                             "copy the SHA-256 from the publisher's download page")
    if checksum_url is None and known is not None and sha256 is None:
        checksum_url = known.checksum_url
    if checksum_url is not None:
        _check_url(checksum_url, "checksum URL")
    if checksum_url is None and sha256 is None and not no_verify:
        raise InputError(f"no checksum to verify {url} against",
                         "give --checksum-url URL (the publisher's SHA256SUM/CHECKSUM file) "
                         "or --sha256 HEX; --no-verify skips the check")

    directory = images_dir(cache)
    existing = _load(directory, name)
    if existing is not None and not force:
        if existing.url != url:
            raise InputError(f"an image named {name!r} is already fetched from {existing.url}",
                             f"choose another --name, or `labvirt image rm {name}` first")
        tell(f"{name} is already fetched: {existing.path}")
        return existing, False

    file_name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    expected = sha256
    if expected is None and checksum_url is not None:
        tell(f"reading {checksum_url}")
        expected = _expected_sha256(_read_text(checksum_url), file_name, checksum_url)

    directory.mkdir(parents=True, exist_ok=True)
    part = directory / f"{name}.part"
    record = directory / f"{name}.part.json"
    tell(f"downloading {url}")
    actual = _download(url, part, record, progress)
    if expected is not None and actual != expected:
        for path in (part, record):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise ChecksumError(
            f"{name}: SHA-256 of the download is {actual}, the publisher's checksum "
            f"{'(' + checksum_url + ') ' if checksum_url else ''}says {expected}; "
            "the download was removed",
            "run the same command again; if it fails again the mirror serves another file "
            "than its checksum names (a new release mid-way?) -- check the checksum URL")
    with part.open("rb") as f:
        fmt = "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"
    final = directory / f"{name}.{fmt}"
    if existing is not None and Path(existing.path) != final:
        with contextlib.suppress(FileNotFoundError):
            Path(existing.path).unlink()
    os.replace(part, final)
    with contextlib.suppress(FileNotFoundError):
        record.unlink()
    image = CachedImage(name=name, path=str(final), format=fmt, size=final.stat().st_size,
                        sha256=actual, url=url, checksum_url=checksum_url,
                        verified=expected is not None)
    _write_json(_meta_path(directory, name), image.to_dict())
    return image, True
