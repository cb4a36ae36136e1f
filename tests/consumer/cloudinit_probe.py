"""Runs INSIDE a subprocess whose PYTHONPATH holds one real cloud-init tree (from a Debian
package, see cloudinit_env.py): reads labvirt's seed ISOs the way cloud-init's NoCloud
datasource does and reports, as JSON on stdout, what cloud-init itself makes of them.

    python cloudinit_probe.py MANIFEST.json WORKDIR

MANIFEST is ``{"seeds": [{"name": ..., "iso": PATH}, ...], "raw": [{"name": ...,
"network-config": PATH, "user-data": PATH}, ...]}``. Nothing is faked except what has no
meaning on a build host (both are cloud-init's own hooks, replaced as its unit tests do):

- DMI serial and kernel command line: none (a guest without ``ds=nocloud`` hints);
- ``util.mount_cb``: the kernel here cannot mount iso9660, so the ISO is unpacked with
  ``bsdtar`` (libarchive, an ISO reader independent of pycdlib, which wrote it) into a
  directory and cloud-init's own callback reads that directory as if it were the mount.
  ``util.find_devs_with`` is the real one, running the real ``blkid`` on the ISO file.

Everything else -- the datasource's ``_get_data``, the cloud-config schema (strict, with
deprecations), the network-config v2 schema where this version has one, ``network_state``
parsing, the eni/netplan/sysconfig renderers through ``cloud-init devel net-convert``'s own
argument parser and handler, ``ug_util.normalize_users_groups``, ``util.get_hostname_fqdn``,
``cc_ssh``'s key table -- is cloud-init's code, unmodified.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml
from cloudinit import helpers, util
from cloudinit import version as ci_version
from cloudinit.config import schema as ci_schema
from cloudinit.net import network_state

VERSION = ci_version.version_string()


def _capture(fn: Any, *args: Any) -> dict[str, Any]:
    """Run fn, returning its exit status, stdout, stderr and any exception text."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    status: int | str = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rv = fn(*args)
                status = rv if isinstance(rv, int) else 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
                if not isinstance(exc.code, int) and exc.code:
                    err.write(str(exc.code))
    except Exception as exc:  # report, do not die: the test decides
        status = f"{type(exc).__name__}: {exc}"
        err.write(traceback.format_exc())
    finally:
        logging.getLogger().removeHandler(handler)
    return {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


# ------------------------------------------------------------------ NoCloud datasource


def read_nocloud(iso: Path, work: Path) -> dict[str, Any]:
    from cloudinit.sources import DataSourceNoCloud as nocloud

    real_find = util.find_devs_with
    mounted: list[str] = []

    def find_devs_with(criteria: str | None = None, *args: Any, **kwargs: Any) -> list[str]:
        kwargs["path"] = str(iso)  # the real blkid, asked about our ISO only
        return real_find(criteria, *args, **kwargs)

    def mount_cb(device: str, callback: Any, data: Any = None, *args: Any, **kwargs: Any) -> Any:
        mp = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
        subprocess.run(["bsdtar", "-xf", device, "-C", str(mp)], check=True)
        mounted.append(device)
        return callback(str(mp) + "/", data)

    saved = (util.find_devs_with, util.mount_cb, util.get_cmdline, nocloud.dmi.read_dmi_data)
    util.find_devs_with = find_devs_with
    util.mount_cb = mount_cb
    util.get_cmdline = lambda: ""
    nocloud.dmi.read_dmi_data = lambda key: None
    try:
        cloud_dir = work / "cloud"
        paths = helpers.Paths({"cloud_dir": str(cloud_dir), "run_dir": str(work / "run"),
                               "seed_dir": str(work / "no-seed")})
        ds = nocloud.DataSourceNoCloud(sys_cfg={}, distro=None, paths=paths)
        ok = ds._get_data()
    finally:
        util.find_devs_with, util.mount_cb, util.get_cmdline, nocloud.dmi.read_dmi_data = saved
    if not ok:
        return {"ok": False}
    ud = ds.userdata_raw
    return {
        "ok": True,
        "seed": ds.seed,
        "mounted": mounted,
        "meta-data": ds.metadata,
        "user-data": ud.decode() if isinstance(ud, bytes) else ud,
        "network-config": ds._network_config,
    }


# ------------------------------------------------------------------ checks


def schema_problems(config: dict[str, Any], kind: str) -> list[str] | None:
    """Strict validation (errors AND deprecations); None when this version has no schema."""
    st = getattr(ci_schema, "SchemaType", None)
    kwargs: dict[str, Any] = {"strict": True}
    if kind == "network-config":
        if st is None or not hasattr(st, "NETWORK_CONFIG_V2"):
            return None
        schema = ci_schema.get_schema(st.NETWORK_CONFIG_V2)
        kwargs["schema_type"] = st.NETWORK_CONFIG_V2
    else:
        schema = ci_schema.get_schema()
    try:
        ci_schema.validate_cloudconfig_schema(config, schema, **kwargs)
    except ci_schema.SchemaValidationError as exc:
        return [str(exc)]
    return []


def schema_cli(user_data: Path) -> dict[str, Any]:
    """`cloud-init schema -c FILE`: its own parser and handler."""
    parser = ci_schema.get_parser()
    args = parser.parse_args(["-c", str(user_data)])
    return _capture(ci_schema.handle_schema_args, "schema", args)


def parsed_state(config: dict[str, Any]) -> dict[str, Any]:
    try:
        ns = network_state.parse_net_config_data(config, skip_broken=False)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    interfaces = {}
    for iface in ns.iter_interfaces():
        interfaces[iface["name"]] = {
            "mac_address": iface.get("mac_address"),
            "subnets": [
                {k: v for k, v in s.items() if k in ("type", "address", "prefix", "netmask",
                                                     "gateway", "routes", "dns_nameservers")}
                for s in iface.get("subnets", [])
            ],
        }
    return {
        "interfaces": interfaces,
        "routes": [dict(r) for r in ns.iter_routes()],
        "dns_nameservers": list(ns.dns_nameservers),
    }


RENDERERS = {"eni": "debian", "netplan": "ubuntu", "sysconfig": "rhel"}


def net_convert(netcfg: Path, out: Path, kind: str) -> dict[str, Any]:
    """`cloud-init devel net-convert -p FILE -k yaml -D DISTRO -O KIND -d OUT`."""
    from cloudinit.cmd.devel import net_convert as nc

    parser = nc.get_parser()
    args = parser.parse_args(["-p", str(netcfg), "-k", "yaml", "-d", str(out),
                              "-D", RENDERERS[kind], "-O", kind])
    result = _capture(nc.handle_args, "net-convert", args)
    args.network_data.close()
    files = {}
    if out.is_dir():
        for path in sorted(out.rglob("*")):
            if path.is_file():
                files[str(path.relative_to(out))] = path.read_text(errors="replace")
    result["files"] = files
    return result


def interpret_user_data(text: str) -> dict[str, Any]:
    from cloudinit import distros
    from cloudinit.config import cc_ssh
    from cloudinit.distros import ug_util

    cfg = yaml.safe_load(text)
    distro = distros.fetch("rhel")("rhel", {}, helpers.Paths({}))
    users, _groups = ug_util.normalize_users_groups(cfg, distro)
    names = util.get_hostname_fqdn(cfg, None)
    ssh_keys = cfg.get("ssh_keys") or {}
    return {
        "hostname": names[0],
        "fqdn": names[1],
        "users": users,
        "ssh_key_files": {k: cc_ssh.CONFIG_KEY_TO_FILE[k][0] for k in ssh_keys
                          if k in cc_ssh.CONFIG_KEY_TO_FILE},
        "ssh_keys_unknown": sorted(k for k in ssh_keys if k not in cc_ssh.CONFIG_KEY_TO_FILE),
    }


def check(name: str, ud_text: str, netcfg: Any, work: Path) -> dict[str, Any]:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "user-data").write_text(ud_text)
    (d / "network-config").write_text(yaml.safe_dump(netcfg))
    report: dict[str, Any] = {
        "user-data-schema": schema_problems(yaml.safe_load(ud_text), "user-data"),
        "schema-cli": schema_cli(d / "user-data"),
        "network-config-schema": schema_problems(netcfg, "network-config"),
        "network-state": parsed_state(netcfg),
        "render": {kind: net_convert(d / "network-config", d / kind, kind) for kind in RENDERERS},
    }
    try:
        report["interpreted"] = interpret_user_data(ud_text)
    except Exception as exc:
        report["interpreted"] = {"error": f"{type(exc).__name__}: {exc}"}
    return report


def main() -> int:
    manifest = json.loads(Path(sys.argv[1]).read_text())
    work = Path(sys.argv[2])
    os.environ.setdefault("TZ", "UTC")
    results: dict[str, Any] = {"version": VERSION, "seeds": {}, "raw": {}}
    for seed in manifest.get("seeds", []):
        sub = work / "iso" / seed["name"]
        sub.mkdir(parents=True, exist_ok=True)
        ds = read_nocloud(Path(seed["iso"]), sub)
        entry: dict[str, Any] = {"nocloud": ds}
        if ds.get("ok"):
            entry.update(check(seed["name"], ds["user-data"], ds["network-config"],
                               work / "seeds"))
        results["seeds"][seed["name"]] = entry
    for raw in manifest.get("raw", []):
        ud = Path(raw["user-data"]).read_text()
        net = yaml.safe_load(Path(raw["network-config"]).read_text())
        results["raw"][raw["name"]] = check(raw["name"], ud, net, work / "raw")
    json.dump(results, sys.stdout, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
