"""`labvirt image fetch|list|rm` against a local HTTP server on 127.0.0.1.

The server (http.server in a thread) stands in for cloud.centos.org / the Red Hat portal,
which tests never contact: it serves a small qcow2 made with the real qemu-img and its
checksum files, honours `Range` (206 with Content-Range, If-Range with the ETag), and can
break off a response after N bytes to make an interrupted download. Every command runs
through the real CLI (`labvirt ...` or its main() in this process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import pytest
from clitools import labvirt, run_main

from labvirt.errors import InputError
from labvirt.image import fetch as fetch_mod
from labvirt.image.fetch import parse_checksum_file, resolve_base_image

pytestmark = pytest.mark.unit

IMAGE = "CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2"


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    break_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, once
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    sent: int = 0
    base: str = ""


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path
            site.requests.append((path, self.headers.get("Range")))
            data = site.files.get(path)
            if data is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            start = 0
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if rng and (if_range is None or if_range == etag):
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            cut = site.break_after.pop(path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                site.sent += cut
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)
            site.sent += len(body)

    return Handler


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small real qcow2 (qemu-img), with data in it so that it is not all zeros."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is missing: run scripts/setup.sh (qemu-utils)")
    d = tmp_path_factory.mktemp("img")
    raw = d / "disk.raw"
    raw.write_bytes(os.urandom(1 << 20) + bytes(1 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                    str(d / "disk.qcow2")], check=True, capture_output=True)
    data = (d / "disk.qcow2").read_bytes()
    assert data[:4] == b"QFI\xfb" and len(data) > 1 << 20
    return data


@pytest.fixture
def site(qcow2: bytes) -> Iterator[Site]:
    s = Site()
    digest = hashlib.sha256(qcow2).hexdigest()
    s.files = {
        f"/images/{IMAGE}": qcow2,
        # what CentOS publishes beside each image: a comment and one BSD-style line
        f"/images/{IMAGE}.SHA256SUM": (f"# {IMAGE}: {len(qcow2)} bytes\n"
                                       f"SHA256 ({IMAGE}) = {digest}\n").encode(),
        # sha256sum's own (GNU) format, with another file listed first
        "/rhel/SHA256SUMS": (f"{'0' * 64}  other.qcow2\n{digest} *rhel-9.4-x86_64-kvm.qcow2\n"
                             ).encode(),
        "/rhel/rhel-9.4-x86_64-kvm.qcow2": qcow2,
        "/bad/SHA256SUM": f"SHA256 ({IMAGE}) = {'ab' * 32}\n".encode(),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(s))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    s.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield s
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the loopback server must not go to a proxy from the environment."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def run(cache: Path, *args: str, check: int | None = 0,
        process: bool = False) -> subprocess.CompletedProcess[str]:
    """`labvirt ARGS` with the image cache at `cache`: through main() in this process, or
    (process=True) as the installed `labvirt` program."""
    if process:
        env = {"LABVIRT_CACHE": str(cache), "no_proxy": "127.0.0.1",
               **dict.fromkeys(PROXY_VARS, "")}
        return labvirt(*args, env=env, check=check)
    with mock.patch("labvirt.ops.provision.cache_dir", lambda: cache):
        proc = run_main(*args)
    if check is not None:
        assert proc.returncode == check, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def cache_files(cache: Path) -> list[str]:
    d = cache / "images"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_fetch_by_url_with_a_bsd_checksum_file_then_list_and_use_by_name(
        site: Site, cache: Path, qcow2: bytes) -> None:
    url = f"{site.base}/images/{IMAGE}"
    proc = run(cache, "image", "fetch", url, "--name", "cs9", "--checksum-url",
               f"{url}.SHA256SUM", process=True)
    digest = hashlib.sha256(qcow2).hexdigest()
    assert "fetched cs9: qcow2" in proc.stdout and digest in proc.stdout
    assert cache_files(cache) == ["cs9.json", "cs9.qcow2"]
    assert (cache / "images" / "cs9.qcow2").read_bytes() == qcow2
    # checksum file first, then the image, each once
    assert [p for p, _ in site.requests] == [f"/images/{IMAGE}.SHA256SUM", f"/images/{IMAGE}"]

    listed = json.loads(run(cache, "image", "list", "--format", "json", process=True).stdout)
    assert [i["name"] for i in listed["images"]] == ["cs9"]
    (img,) = listed["images"]
    assert (img["format"], img["size"], img["sha256"], img["verified"]) == (
        "qcow2", len(qcow2), digest, True)
    assert img["url"] == url
    assert set(listed["known"]) == {"centos-stream-9", "centos-stream-10"}
    table = run(cache, "image", "list").stdout
    assert "cs9" in table and "can be fetched: centos-stream-9, centos-stream-10" in table

    # usable by name as labvirt.image (what provision.base_image reads)
    assert resolve_base_image("cs9", cache) == cache / "images" / "cs9.qcow2"

    # a second fetch downloads nothing
    before = len(site.requests)
    again = run(cache, "image", "fetch", url, "--name", "cs9", "--checksum-url",
                f"{url}.SHA256SUM")
    assert "already fetched cs9" in again.stdout and len(site.requests) == before


def test_gnu_checksum_file_and_name_from_the_url(site: Site, cache: Path) -> None:
    proc = run(cache, "image", "fetch", f"{site.base}/rhel/rhel-9.4-x86_64-kvm.qcow2",
               "--checksum-url", f"{site.base}/rhel/SHA256SUMS")
    assert "fetched rhel-9.4-x86_64-kvm" in proc.stdout
    assert cache_files(cache) == ["rhel-9.4-x86_64-kvm.json", "rhel-9.4-x86_64-kvm.qcow2"]


def test_known_name_uses_its_url_and_checksum(site: Site, cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The known table is data; here it points at the local server (never the real one)."""
    known = fetch_mod.KnownImage("centos-stream-9", "test", f"{site.base}/images/{IMAGE}",
                                 f"{site.base}/images/{IMAGE}.SHA256SUM")
    monkeypatch.setitem(fetch_mod.KNOWN_IMAGES, "centos-stream-9", known)
    proc = run(cache, "image", "fetch", "centos-stream-9")
    assert proc.returncode == 0, proc.stderr
    assert cache_files(cache) == ["centos-stream-9.json", "centos-stream-9.qcow2"]
    assert [p for p, _ in site.requests] == [f"/images/{IMAGE}.SHA256SUM", f"/images/{IMAGE}"]


def test_interrupted_download_resumes_with_range(site: Site, cache: Path,
                                                  qcow2: bytes) -> None:
    url = f"{site.base}/images/{IMAGE}"
    cut = len(qcow2) // 3
    site.break_after[f"/images/{IMAGE}"] = cut
    first = run(cache, "image", "fetch", url, "--name", "cs9",
                "--checksum-url", f"{url}.SHA256SUM", check=1, process=True)
    assert "broke off" in first.stderr and "resumes" in first.stderr, first.stderr
    assert "Traceback" not in first.stderr
    # only the partial download is there, and it is not an image
    assert cache_files(cache) == ["cs9.part", "cs9.part.json"]
    assert (cache / "images" / "cs9.part").stat().st_size == cut
    assert json.loads(run(cache, "image", "list", "--format", "json").stdout)["images"] == []
    with pytest.raises(InputError):
        resolve_base_image("cs9", cache)

    sent_before = site.sent
    second = run(cache, "image", "fetch", url, "--name", "cs9",
                 "--checksum-url", f"{url}.SHA256SUM")
    assert "fetched cs9" in second.stdout
    assert site.requests[-1] == (f"/images/{IMAGE}", f"bytes={cut}-")
    assert site.sent - sent_before < len(qcow2)  # the rest only, not the whole file again
    assert (cache / "images" / "cs9.qcow2").read_bytes() == qcow2
    assert cache_files(cache) == ["cs9.json", "cs9.qcow2"]


def test_checksum_mismatch_is_refused_and_nothing_is_kept(site: Site, cache: Path) -> None:
    url = f"{site.base}/images/{IMAGE}"
    proc = run(cache, "image", "fetch", url, "--name", "cs9",
               "--checksum-url", f"{site.base}/bad/SHA256SUM", check=1)
    assert "SHA-256 of the download is" in proc.stderr and "ab" * 32 in proc.stderr
    assert "the download was removed" in proc.stderr and "Traceback" not in proc.stderr
    assert cache_files(cache) == []
    # also when the mismatch shows only after a resume
    site.break_after[f"/images/{IMAGE}"] = 1000
    run(cache, "image", "fetch", url, "--name", "cs9", "--sha256", "ab" * 32, check=1)
    assert cache_files(cache) == ["cs9.part", "cs9.part.json"]
    run(cache, "image", "fetch", url, "--name", "cs9", "--sha256", "ab" * 32, check=1)
    assert cache_files(cache) == []


def test_rm(site: Site, cache: Path) -> None:
    url = f"{site.base}/images/{IMAGE}"
    run(cache, "image", "fetch", url, "--name", "cs9", "--checksum-url", f"{url}.SHA256SUM")
    proc = run(cache, "image", "rm", "cs9")
    assert "removed cs9 (2 file(s))" in proc.stdout
    assert cache_files(cache) == []
    again = run(cache, "image", "rm", "cs9", check=2)
    assert "no fetched image named 'cs9'" in again.stderr and "hint:" in again.stderr
    # rm also clears a partial download
    site.break_after[f"/images/{IMAGE}"] = 1000
    run(cache, "image", "fetch", url, "--name", "cs9", "--checksum-url", f"{url}.SHA256SUM",
        check=1)
    run(cache, "image", "rm", "cs9")
    assert cache_files(cache) == []


@pytest.mark.parametrize(("args", "message"), [
    (("centos-stream-8",), "unknown image 'centos-stream-8'"),
    (("ftp://example.invalid/x.qcow2", "--sha256", "0" * 64), "is not an http:// or https://"),
    (("http://",), "is not an http:// or https://"),
    (("https://example.invalid/x.qcow2",), "no checksum to verify"),
    (("https://example.invalid/x.qcow2", "--sha256", "xyz"), "is not 64 hexadecimal digits"),
    (("https://example.invalid/x.qcow2", "--no-verify", "--name", "Bad Name"),
     "is not a usable image name"),
    (("https://example.invalid/x.qcow2", "--checksum-url", "file:///etc/passwd"),
     "is not an http:// or https://"),
])
def test_bad_input_exits_2_with_a_hint(cache: Path, args: tuple[str, ...], message: str) -> None:
    proc = run(cache, "image", "fetch", *args, check=2)
    assert message in proc.stderr and "hint:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert cache_files(cache) == []


def test_http_404_is_bad_input(site: Site, cache: Path) -> None:
    proc = run(cache, "image", "fetch", f"{site.base}/nope.qcow2", "--checksum-url",
               f"{site.base}/nope.SHA256SUM", check=2)
    assert "HTTP 404" in proc.stderr and "hint:" in proc.stderr
    assert cache_files(cache) == []


def test_unreachable_server_exits_1_with_a_hint(cache: Path) -> None:
    with contextlib.closing(__import__("socket").socket()) as s:  # a closed port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run(cache, "image", "fetch", f"http://127.0.0.1:{port}/x.qcow2", "--sha256",
               "0" * 64, check=1)
    assert "cannot reach" in proc.stderr and "hint:" in proc.stderr


def test_layout_names_an_unfetched_known_image(cache: Path) -> None:
    with pytest.raises(InputError) as exc:
        resolve_base_image("centos-stream-10", cache)
    assert exc.value.hint == "run `labvirt image fetch centos-stream-10` first"
    with pytest.raises(InputError, match="neither a file nor a fetched image"):
        resolve_base_image("nosuch", cache)
    assert resolve_base_image("/some/path.qcow2", cache) == Path("/some/path.qcow2")


def test_parse_checksum_file_styles() -> None:
    h1, h2 = "a" * 64, "B" * 64
    text = (f"# comment\n\nSHA256 (one.qcow2) = {h1}\nMD5 (one.qcow2) = {'c' * 32}\n"
            f"{h2}  two.qcow2\n{h1} *three.qcow2\n{h2}  ./sub/four.qcow2\n")
    assert parse_checksum_file(text) == {"one.qcow2": h1, "two.qcow2": h2.lower(),
                                         "three.qcow2": h1, "sub/four.qcow2": h2.lower()}


def test_known_images_are_data_documented_in_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for known in fetch_mod.KNOWN_IMAGES.values():
        assert known.url.startswith("https://") and known.checksum_url.startswith("https://")
        assert known.name in readme and known.url in readme
