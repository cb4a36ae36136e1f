#!/usr/bin/env python3
"""Benchmark: lab snapshots on the ten-node demo lab.

1. `snapshot create` and `snapshot restore` over all ten running nodes (graceful shutdown,
   freeze, restart and ssh-ready included), per node and in total.
2. Restore time of one node after writing 100 MB and after 2 GB to its OSD disk: with
   overlay chains a restore drops a layer instead of copying data, so it stays flat.

    .venv/bin/python bench/snapshots.py
"""

from __future__ import annotations

from benchlab import bench_lab


def per_node(report: dict) -> str:
    rows = sorted(report["nodes"].items())
    return "\n".join(
        f"    {h:<18} {n['seconds']:5.1f} s"
        + (f"  (ssh-ready {n['ready_seconds']:.1f} s later)" if n["ready_seconds"] else "")
        for h, n in rows)


def main() -> None:
    with bench_lab({"resize": {"osd_size": "3GiB"}}) as lab:
        lab.run("image", "tiny")
        lab.run("up", "--timeout", "300")
        print(f"lab {lab.name}: 10 tiny nodes up")

        wall, rep = lab.json("snapshot", "create", "clean", "--shutdown-timeout", "30")
        print(f"snapshot create, 10 running nodes: {rep['seconds']:.1f} s (wall {wall:.1f} s)")
        print(per_node(rep))
        wall, rep = lab.json("snapshot", "restore", "clean", "--yes")
        print(f"snapshot restore, 10 nodes: {rep['seconds']:.1f} s (wall {wall:.1f} s)")
        print(per_node(rep))

        print("restore of oc0-ceph-4 after writing to its OSD disk (/dev/vdb):")
        for mb in (100, 2048, 100, 2048):
            lab.run("exec", "oc0-ceph-4", "--",
                    f"dd if=/dev/zero of=/dev/vdb bs=1M count={mb} conv=fsync 2>/dev/null")
            _, status = lab.json("status")
            used = next(r for r in status if r["node"] == "oc0-ceph-4")["disk_allocation"]
            wall, rep = lab.json("snapshot", "restore", "clean", "oc0-ceph-4", "--yes")
            node = rep["nodes"]["oc0-ceph-4"]
            print(f"  {mb:5d} MB written (chain holds {used / 1e6:7.1f} MB): restore "
                  f"{node['seconds']:.2f} s, then ssh-ready {node['ready_seconds']:.1f} s "
                  f"later (wall {wall:.1f} s)")
        print("(restore = stop, new overlay on the frozen layer, redefine, start; "
              "the old top is deleted, never copied)")


if __name__ == "__main__":
    main()
