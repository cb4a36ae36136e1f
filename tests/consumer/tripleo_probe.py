"""Runs INSIDE a subprocess: TripleO's own code (the pinned tripleo-ansible and
tripleo-common wheels, imported from where tests/consumer/fetch-tripleo.sh put them) on
labvirt's bundles; prints, as JSON on stdout, what that code makes of them.

    python tripleo_probe.py UNPACKED_DIR BUNDLE_DIR

Faked, because the services cannot exist here, and only at their client boundary:
- Neutron: an in-memory `conn.network` (networks, subnets, ports, tags) holding the
  undercloud's ctlplane network and subnet; tripleo-ansible's modules create the ports.
- Ironic/metalsmith: no baremetal nodes (every node is `managed: false`); the `metalsmith`,
  `openstack` and `keystoneauth1` modules are stubs with the names the code imports.
- Heat: a stack whose outputs are what THT's overcloud.j2.yaml computes for these nodes
  (RoleNetHostnameMap, RoleNetIpMap, VipMap, EnabledServices from the roles file and the
  registry of the pinned THT), server ids made up; `heatclient.exc` is a stub.
- the openstack.cloud collection's module_utils (argument-spec helpers only).
Everything else is TripleO's code, unmodified: module_utils/baremetal_deploy.py `expand`
and `check_existing`, the modules tripleo_overcloud_network_ports,
tripleo_unmanaged_populate_environment, tripleo_network_ports_populate_environment,
tripleo_overcloud_network_vip_provision / _populate_environment, ceph_spec_bootstrap's
spec functions, tripleo_common.inventory / inventories, tripleo_common.utils.roles.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import yaml

PLUGINS = "tripleo_ansible-6.0.0.data/data/share/ansible/plugins"


def stub(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


class _Err(Exception):
    pass


def install_stubs() -> None:
    exc = stub("openstack.exceptions", ResourceNotFound=_Err)
    conn_mod = stub("openstack.connection", exceptions=types.SimpleNamespace(
        EndpointNotFound=_Err), Connection=None)
    stub("openstack", exceptions=exc, connection=conn_mod, connect=None)
    catalog = types.SimpleNamespace(EndpointNotFound=_Err)
    stub("keystoneauth1", exceptions=types.SimpleNamespace(catalog=catalog))
    # metalsmith.sources.detect only names the image source; unmanaged nodes get none
    sources = types.SimpleNamespace(detect=lambda **kw: types.SimpleNamespace(**kw))
    stub("metalsmith", sources=sources, exceptions=types.SimpleNamespace(
        Error=_Err), InstanceState=types.SimpleNamespace(ACTIVE="active"), Provisioner=None)
    stub("heatclient")
    stub("heatclient.exc", HTTPNotFound=_Err)
    for name in ("ansible_collections", "ansible_collections.openstack",
                 "ansible_collections.openstack.cloud",
                 "ansible_collections.openstack.cloud.plugins",
                 "ansible_collections.openstack.cloud.plugins.module_utils"):
        stub(name)
    stub("ansible_collections.openstack.cloud.plugins.module_utils.openstack",
         openstack_full_argument_spec=lambda **kw: kw, openstack_module_kwargs=dict,
         openstack_cloud_from_module=None)


def load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# --- fake Neutron -------------------------------------------------------------------------

class Res(dict):
    """A Neutron resource as openstacksdk gives it: attributes and item access."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


class FakeNetwork:
    def __init__(self, cidr: str, gateway: str) -> None:
        self.nets = [Res(id="ctlplane-id", name="ctlplane", tags=[cidr], mtu=1500,
                         dns_domain="ctlplane.localdomain.", subnet_ids=["ctlplane-subnet-id"])]
        self.subs = [Res(id="ctlplane-subnet-id", name="ctlplane-subnet", network_id="ctlplane-id",
                         cidr=cidr, ip_version=4, gateway_ip=gateway, host_routes=[],
                         dns_nameservers=[gateway], tags=[])]
        self.ports_: list[Res] = []
        self.cidr = ipaddress.ip_network(cidr)
        self.next_ip = iter(self.cidr.hosts())

    def networks(self, **_: Any) -> list[Res]:
        return list(self.nets)

    def subnets(self, network_id: str | None = None, **_: Any) -> list[Res]:
        return [s for s in self.subs if network_id in (None, s.network_id)]

    def get_network(self, id: str) -> Res:
        return next(n for n in self.nets if n.id == id)

    def get_subnet(self, id: str) -> Res:
        return next(s for s in self.subs if s.id == id)

    def find_network(self, name_or_id: str, **_: Any) -> Res | None:
        return next((n for n in self.nets if name_or_id in (n.id, n.name)), None)

    def ports(self, tags: list[str] | None = None, network_id: str | None = None, **_: Any):
        return iter([p for p in self.ports_ if set(tags or []) <= set(p.tags)
                     and network_id in (None, p.network_id)])

    def create_port(self, **d: Any) -> Res:
        fixed = []
        for f in d.get("fixed_ips", [{}]):
            address = f.get("ip_address") or str(next(self.next_ip))
            assert ipaddress.ip_address(address) in self.cidr, address
            assert all(address != x["ip_address"] for p in self.ports_ for x in p.fixed_ips), (
                f"{address} is already in use")
            fixed.append({"ip_address": address, "subnet_id": "ctlplane-subnet-id"})
        port = Res(id=str(uuid.uuid4()), name=d.get("name"), dns_name=d.get("dns_name", ""),
                   network_id=d["network_id"], fixed_ips=fixed, tags=[])
        self.ports_.append(port)
        return port

    def create_ports(self, defs: list[dict[str, Any]]) -> list[Res]:
        return [self.create_port(**d) for d in defs]

    def set_tags(self, port: Res, tags: list[str]) -> None:
        port["tags"] = sorted(tags)

    def update_port(self, *a: Any, **k: Any) -> None:
        raise AssertionError("a fresh undercloud has no ports to update")


# --- the provisioning chain of `openstack overcloud node provision` ------------------------

def provision(root: Path, stack: str, roles: list[dict[str, Any]], env_b: dict[str, Any]):
    plugins = root / "ansible" / PLUGINS
    bd = sys.modules["ansible.module_utils.baremetal_deploy"]
    ports_mod = load(plugins / "modules/tripleo_overcloud_network_ports.py", "tripleo_ports")
    unmanaged = load(plugins / "modules/tripleo_unmanaged_populate_environment.py", "tripleo_um")
    netpop = load(plugins / "modules/tripleo_network_ports_populate_environment.py", "tripleo_np")
    vip_prov = load(plugins / "modules/tripleo_overcloud_network_vip_provision.py", "tripleo_vp")
    vip_pop = load(plugins / "modules/tripleo_overcloud_network_vip_populate_environment.py",
                   "tripleo_vpe")
    n_utils = sys.modules["ansible.module_utils.network_data_v2"]
    cidr = env_b["parameter_defaults"]["CtlplaneNetworkAttributes"]["network"]["tags"][0]
    gw = env_b["parameter_defaults"]["ControlPlaneDefaultRoute"]
    conn = types.SimpleNamespace(network=FakeNetwork(cidr, gw))
    tht = "/usr/share/openstack-tripleo-heat-templates"
    # tripleo_baremetal_expand_roles (state present), as the playbook calls it
    instances, env, role_net_map, hostname_role_map = bd.expand(
        roles=roles, stack_name=stack, expand_provisioned=True,
        default_image={"href": "overcloud-full"}, default_network=None,
        user_name="tripleo-admin", ssh_public_keys="ssh-ed25519 AAAA labvirt")
    # tripleo_baremetal_check_existing: no Ironic nodes (baremetal None = no endpoint)
    found, not_found, pre_provisioned = bd.check_existing(instances, None, None)
    assert (found, not_found) == ([], []), (found, not_found)
    # metalsmith reserves and provisions nothing; tripleo_overcloud_network_ports
    result: dict[str, Any] = {"changed": False, "node_port_map": {}}
    net_maps = n_utils.create_name_id_maps(conn)
    ports_mod.manage_instances_ports(result, conn, stack, instances, 0, "present", {},
                                     hostname_role_map, net_maps)
    # tripleo_baremetal_populate_environment with no provisioned instances
    env = bd.populate_environment([], None, env, "ctlplane", tht)
    unmanaged.update_environment(env, "ctlplane", result["node_port_map"], pre_provisioned)
    netpop.update_environment(env, result["node_port_map"],
                              {k: sorted(v) for k, v in role_net_map.items()},
                              {"ctlplane": "ctlplane"}, tht)
    # `network vip provision` of THT's vip_data_default.yaml with labvirt's address, then
    # the VIP environment (tripleo_overcloud_network_vip_populate_environment)
    vip = env_b["parameter_defaults"]["ControlPlaneVipData"]["fixed_ips"][0]["ip_address"]
    vip_data = [{"network": "ctlplane", "dns_name": "overcloud", "ip_address": vip}]
    managed: list[str] = []
    for spec in vip_data:
        vip_prov.provision_vip_port(conn, stack, net_maps, dict(spec), managed)
    vip_env: dict[str, Any] = {}
    vip_pop.populate_net_vip_env(conn, stack, net_maps, vip_data, vip_env, tht)
    return env, vip_env


# --- Heat faked as THT would output for these nodes ----------------------------------------

def enabled_services(root: Path, roles_file: list[dict[str, Any]], envs: list[str]) -> dict:
    """EnabledServices as Heat computes it: each role's ServicesDefault through THT's
    registry (rendered with these roles, as the client's process-templates does) and the
    environments' registries, to each template's role_data service_name."""
    import jinja2
    tht = root / "tht"
    reg_text = jinja2.Template((tht / "overcloud-resource-registry-puppet.j2.yaml").read_text()
                               ).render(roles=roles_file, networks=[])
    registry = yaml.safe_load(reg_text)["resource_registry"]
    resolved = {k: str((tht / v).resolve()) if "::" not in v else v for k, v in registry.items()}
    for env in envs:
        path = Path(env)
        data = yaml.safe_load(path.read_text())
        for k, v in (data.get("resource_registry") or {}).items():
            if "::" in v or v.startswith("/"):
                resolved[k] = v.replace("/usr/share/openstack-tripleo-heat-templates", str(tht))
            else:
                resolved[k] = str((path.parent / v).resolve())

    def name_of(template: str, depth: int = 0) -> str | None:
        p = Path(template)
        if depth > 4 or not p.is_file():
            return None
        t = yaml.safe_load(p.read_text()) or {}
        value = (t.get("outputs") or {}).get("role_data", {}).get("value")
        stack = [value]
        while stack:
            v = stack.pop(0)
            if isinstance(v, dict):
                if "service_name" in v:
                    n = v["service_name"]
                    if isinstance(n, str):
                        return n
                    if isinstance(n, dict) and "get_attr" in n:
                        res = (t.get("resources") or {}).get(n["get_attr"][0], {})
                        return name_of(str(p.parent / res.get("type", "")), depth + 1)
                    return None
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
        return None

    out = {}
    for role in roles_file:
        names = set()
        for svc in role.get("ServicesDefault", []):
            target = resolved.get(svc)
            while target in resolved and target != svc:
                svc, target = target, resolved[target]
            if target and "::" not in target:
                n = name_of(target)
                if n:
                    names.add(n)
        out[role["name"]] = sorted(names)
    return out


class FakeStack:
    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = [{"output_key": k, "output_value": v} for k, v in outputs.items()]


class FakeHeat:
    def __init__(self, stacks: dict[str, FakeStack]) -> None:
        self.stacks = self
        self._stacks = stacks

    def get(self, name: str) -> FakeStack:
        return self._stacks[name]

    def environment(self, name: str) -> dict[str, Any]:
        # environments/podman.yaml, which the client always passes
        return {"parameter_defaults": {"ContainerCli": "podman"}}


def heat_outputs(stack: str, env_b: dict[str, Any], roles_file: list[dict[str, Any]],
                 services: dict[str, list[str]], domain: str) -> dict[str, Any]:
    params = env_b["parameter_defaults"]
    host_ip = {h: m["ctlplane"]["ip_address"] for h, m in params["NodePortMap"].items()}
    hostname_map, ip_map, server_ids = {}, {}, {}
    for role in roles_file:
        name = role["name"]
        fmt = params[f"{name}HostnameFormat"].replace("%stackname%", stack)
        hosts = [params["HostnameMap"][fmt.replace("%index%", str(i))]
                 for i in range(params[f"{name}Count"])]
        hostname_map[name] = {"ctlplane": [f"{h}.ctlplane.{domain}" for h in hosts],
                              "canonical": [f"{h}.{domain}" for h in hosts]}
        ip_map[name] = {"ctlplane": [host_ip[h] for h in hosts]}
        server_ids[name] = [str(uuid.uuid5(uuid.NAMESPACE_DNS, h)) for h in hosts]
    vip = params["ControlPlaneVipData"]["fixed_ips"][0]["ip_address"]
    first = roles_file[0]["name"]
    return {
        "RoleNetHostnameMap": hostname_map,
        "RoleNetIpMap": ip_map,
        "ServerIdData": {"server_ids": server_ids, "bootstrap_server_id": server_ids[first][0]},
        "VipMap": {"ctlplane": vip, "redis": vip},
        "EnabledServices": services,
    }


def deploy_envs(bundle: Path, stack: str, tht: Path) -> list[str]:
    """The -e files deploy-order.sh passes to this stack's (first) deploy."""
    text = (bundle / "deploy-order.sh").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("openstack overcloud deploy ") and f"--stack {stack} " in line:
            envs = re.findall(r'-e "([^"]+)"', line)
            return [e.replace("$BUNDLE", str(bundle)).replace("$THT", str(tht))
                    for e in envs if not e.startswith("$HOME")]
    raise AssertionError(f"no deploy of {stack} in deploy-order.sh")


def main() -> None:
    root, bundle = Path(sys.argv[1]), Path(sys.argv[2])
    install_stubs()
    plugins = root / "ansible" / PLUGINS
    for mod in ("baremetal_deploy", "network_data_v2", "ceph_spec"):
        load(plugins / "module_utils" / f"{mod}.py", f"ansible.module_utils.{mod}")
    sys.path.insert(0, str(root / "common"))
    from tripleo_common import inventories, inventory
    from tripleo_common.utils import roles as tc_roles
    ceph_bootstrap = load(plugins / "modules/ceph_spec_bootstrap.py", "tripleo_ceph_spec")

    stacks = sorted(p.parent.parent.parent.name
                    for p in bundle.glob("*/overcloud-deploy/*/tripleo-ansible-inventory.yaml"))
    report: dict[str, Any] = {"stacks": {}}
    invs = {}
    for stack in stacks:
        d = bundle / stack
        env_b = yaml.safe_load((d / "deployed-server-environment.yaml").read_text())
        roles_file = yaml.safe_load((d / "roles_data.yaml").read_text())
        r: dict[str, Any] = {}
        try:
            r["provisioned_env"], r["vip_env"] = provision(
                root, stack, yaml.safe_load((d / "baremetal-deployment.yaml").read_text()), env_b)
        except Exception as exc:  # reported, the test says which stack and why
            r["provision_error"] = f"{type(exc).__name__}: {exc}"
        names = [x["name"] for x in roles_file]
        r["roles_generate"] = tc_roles.generate_roles_data_from_directory(
            str(root / "tht" / "roles"), names, validate=True)
        services = enabled_services(root, roles_file, deploy_envs(bundle, stack, root / "tht"))
        r["enabled_services"] = services
        heat = FakeHeat({stack: FakeStack(heat_outputs(stack, env_b, roles_file, services,
                                                       "localdomain"))})
        invs[stack] = inventory.TripleoInventory(
            hclient=heat, plan_name=stack, ansible_ssh_user="tripleo-admin",
            ansible_python_interpreter="/usr/bin/python3", host_network="ctlplane")
        r["inventory"] = json.loads(json.dumps(
            inventories.TripleoInventories({stack: invs[stack]}).list(dynamic=False)))
        # what `openstack overcloud ceph deploy` builds its Ceph spec from
        inv_path = d / "overcloud-deploy" / stack / "tripleo-ansible-inventory.yaml"
        try:
            env_path = str(d / "deployed-server-environment.yaml")
            hosts_to_ips = ceph_bootstrap.get_deployed_hosts_to_ips(env_path)
            roles_to_svcs = ceph_bootstrap.get_roles_to_svcs_from_roles(str(d / "roles_data.yaml"))
            roles_to_hosts = ceph_bootstrap.get_deployed_roles_to_hosts(
                env_path, list(roles_to_svcs))
            inv_hosts = ceph_bootstrap.get_inventory_hosts_to_ips(
                yaml.safe_load(inv_path.read_text()), list(roles_to_svcs))
            r["ceph"] = {"hosts_to_ips": hosts_to_ips, "roles_to_hosts": roles_to_hosts,
                         "inventory_hosts_to_ips": inv_hosts,
                         "roles_to_svcs": {k: sorted(v) for k, v in roles_to_svcs.items()}}
        except Exception as exc:
            r["ceph_error"] = f"{type(exc).__name__}: {exc}"
        report["stacks"][stack] = r
    report["merged_inventory"] = json.loads(json.dumps(
        inventories.TripleoInventories(invs).list(dynamic=False)))
    json.dump(report, sys.stdout, default=str)


if __name__ == "__main__":
    main()
