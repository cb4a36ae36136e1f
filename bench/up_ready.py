#!/usr/bin/env python3
"""Benchmark: the ten-node demo lab from nothing to every node ssh-ready, then a converged
`up` (labvirt's own time), then `down`.

    .venv/bin/python bench/up_ready.py [--converged-runs N]
"""

from __future__ import annotations

import argparse

from benchlab import bench_lab, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--converged-runs", type=int, default=5)
    args = parser.parse_args()
    with bench_lab() as lab:
        lab.run("image", "tiny")  # the image build is not part of the lab's bring-up
        total, report = lab.json("up", "--timeout", "300")
        nodes = report["nodes"]
        ready = {h: n["ready_seconds"] for h, n in nodes.items()}
        provisioning = report["seconds"]
        print(f"lab {lab.name}: {len(nodes)} nodes, from nothing to all ssh-ready")
        print(f"  total wall time            {total:6.1f} s")
        print(f"  provisioning (libvirt)     {provisioning:6.1f} s   networks, pool, "
              "volumes, uploads, define, start")
        print(f"  waiting for guests         {total - provisioning:6.1f} s   boot to ssh "
              "(TCG, 2 cores shared by all)")
        print("  per-node ssh-ready, counted from when up began waiting:")
        for host, seconds in sorted(ready.items(), key=lambda kv: kv[1] or 0):
            print(f"    {host:<18} {seconds:5.1f} s")
        runs = [lab.run("up")[0] for _ in range(args.converged_runs)]
        print(f"converged `labvirt up` (whole process, nothing to do): {summary(runs)}")
        runs = [lab.run("status")[0] for _ in range(args.converged_runs)]
        print(f"`labvirt status` (whole process): {summary(runs)}")
        down, _ = lab.run("down", "--yes")
        print(f"`labvirt down --yes`: {down:.1f} s")


if __name__ == "__main__":
    main()
