#!/usr/bin/env python3
"""mpi_model.py - bytes moved per step by data-parallel K-FAC and SGD over N
ranks, and the time they take against the compute time measured here
(bench/MPI.md). usage: bench/mpi_model.py SGD_MS KFAC_MS INV_MS [B_PER_RANK]
SGD_MS, KFAC_MS: one step at the per-rank batch on one core (1 rank x 1
thread); INV_MS: the part of KFAC_MS spent inverting (all factors, amortised
per step), of which a group's critical path keeps the largest factor's share.
"""
import math
import sys

sgd_ms, kfac_ms, inv_ms = (float(a) for a in sys.argv[1:4])
b = int(sys.argv[4]) if len(sys.argv) > 4 else 128
dims = [784, 1000, 500, 100, 10]  # fmnist-mlp
T_COV, T_INV, F = 10, 100, 4      # the defaults; float32
layers = [(dims[i] + 1, dims[i + 1]) for i in range(len(dims) - 1)]  # (d_in, d_out)
grad = F * sum(i * o for i, o in layers)
stats = F * sum(i * (i + 1) // 2 + o * (o + 1) // 2 for i, o in layers)  # upper triangles
factors = [d for i, o in layers for d in (i, o)]
inv = F * sum(d * d for d in factors)
cube = [d ** 3 for d in factors]
crit = max(cube) / sum(cube)  # LPT with N >= 8: the largest factor alone on a rank

nets = [("10 Gb/s Ethernet", 1.25e9, 20e-6), ("25 Gb/s Ethernet", 3.125e9, 10e-6),
        ("100 Gb/s InfiniBand", 12.5e9, 2e-6)]


def allreduce(nbytes, n, bw, lat):  # ring: 2(N-1) steps of nbytes/N
    return 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * lat


def small(n, lat):  # a few bytes: recursive doubling
    return 2 * math.log2(n) * lat


def bcast(nbytes, n, bw, lat):  # large: scatter + ring allgather
    return 2 * (n - 1) / n * nbytes / bw + (math.log2(n) + n - 1) * lat


print(f"fmnist-mlp {'-'.join(map(str, dims))}: {grad / 1e6:.2f} MB of gradient, {stats / 1e6:.2f} MB of factor "
      f"statistics (upper triangles), {inv / 1e6:.2f} MB of inverses; T_cov {T_COV}, T_inv {T_INV}; "
      f"per-rank batch {b}; compute per step on one core: SGD {sgd_ms:.1f} ms, K-FAC {kfac_ms:.1f} ms "
      f"(inversions {inv_ms:.2f} ms of it; in a group the largest factor's {crit:.0%} stays on the critical path)")
print()
print("| N | bytes sent per rank per step, SGD | K-FAC (amortised) | network | comm SGD ms | comm K-FAC ms "
      "| compute SGD ms | compute K-FAC ms | comm/compute SGD | K-FAC |")
print("|---|---|---|---|---|---|---|---|---|---|")
cross = {}
for n in [2, 8, 16, 32, 64, 128, 256]:
    sb = 2 * (n - 1) / n * grad
    kb = sb + 2 * (n - 1) / n * stats / T_COV + (n - 1) / n * inv / T_INV
    ck = kfac_ms - inv_ms + crit * inv_ms
    for name, bw, lat in nets:
        cs = 1e3 * (allreduce(grad, n, bw, lat) + small(n, lat))
        c_k = 1e3 * (allreduce(grad, n, bw, lat) + 2 * small(n, lat) + allreduce(stats, n, bw, lat) / T_COV +
                     sum(bcast(F * d * d, n, bw, lat) for d in factors) / T_INV)
        for key, c, comp in (("sgd", cs, sgd_ms), ("kfac", c_k, ck)):
            if c > comp and (key, name) not in cross:
                cross[(key, name)] = n
        if n == 2:
            continue
        print(f"| {n} | {sb / 1e6:.2f} MB | {kb / 1e6:.2f} MB | {name} | {cs:.1f} | {c_k:.1f} | {sgd_ms:.1f} | "
              f"{ck:.1f} | {cs / sgd_ms:.2f} | {c_k / ck:.2f} |")
print()
print("Per-rank batch below which communication takes longer than compute (compute taken as proportional "
      "to the rows: strong scaling, a fixed global batch spread over more ranks, crosses here):")
print()
print("| N | " + " | ".join(f"{name}: SGD / K-FAC" for name, _, _ in nets) + " |")
print("|---|" + "---|" * len(nets))
for n in [8, 16, 32, 64, 128, 256]:
    row = []
    for name, bw, lat in nets:
        cs = 1e3 * (allreduce(grad, n, bw, lat) + small(n, lat))
        c_k = 1e3 * (allreduce(grad, n, bw, lat) + 2 * small(n, lat) + allreduce(stats, n, bw, lat) / T_COV +
                     sum(bcast(F * d * d, n, bw, lat) for d in factors) / T_INV)
        ck = kfac_ms - inv_ms + crit * inv_ms
        row.append(f"{cs / (sgd_ms / b):.0f} / {c_k / (ck / b):.0f}")
    print(f"| {n} | " + " | ".join(row) + " |")
print()
for name, _, _ in nets:
    s, k = cross.get(("sgd", name)), cross.get(("kfac", name))
    print(f"- {name}, per-rank batch {b}: communication overtakes compute for SGD at N = {s or 'none up to 256'}, "
          f"for K-FAC at N = {k or 'none up to 256'}")
