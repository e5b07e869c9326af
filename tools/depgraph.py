#!/usr/bin/python3
"""depgraph.py - the library's module graph, and its circles.

A module is a source file of src/ (its .c and its .h). Module a depends on
module b when a.c or a.h includes b.h, or when a's object file uses a
symbol that b's object file defines (nm). The graph must have no circle:
each strongly connected component of more than one module is printed with
the edges that close it, and the exit status is 1.

usage: tools/depgraph.py OBJDIR [--dot | --longest]
       tools/depgraph.py --self-test
  OBJDIR: the objects of src/*.c (build/obj); run from the repository root.
  --dot: print the graph in Graphviz's format instead.
  --longest: also print the longest chain of dependencies (no circle).
  --self-test: the circle finder on graphs with and without circles.
"""
import glob
import os
import re
import subprocess
import sys


def modules():
    names = set()
    for path in glob.glob("src/*.c") + glob.glob("src/*.h"):
        names.add(os.path.splitext(os.path.basename(path))[0])
    return names


def include_edges(mods):
    edges = set()
    pat = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)
    for m in mods:
        for ext in (".c", ".h"):
            path = os.path.join("src", m + ext)
            if not os.path.exists(path):
                continue
            for inc in pat.findall(open(path, encoding="utf-8").read()):
                inc = os.path.basename(inc)
                if inc in mods and inc != m:
                    edges.add((m, inc, "includes %s.h" % inc))
    return edges


def symbol_edges(mods, objdir):
    defined, used = {}, {}
    for m in mods:
        obj = os.path.join(objdir, m + ".o")
        if not os.path.exists(obj):
            continue
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        used[m] = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "U":
                used[m].add(parts[1])
            elif len(parts) == 3 and parts[1] in "TDBRC":
                defined[parts[2]] = m
    edges = set()
    for m, syms in used.items():
        for s in syms:
            d = defined.get(s)
            if d and d != m:
                edges.add((m, d, "calls %s" % s))
    return edges


def components(nodes, adj):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def longest_chain(nodes, adj):
    """The longest path of the graph, which has no circle."""
    best = {}

    def from_node(v):
        if v not in best:
            tails = [from_node(w) for w in sorted(adj.get(v, ()))]
            best[v] = [v] + max(tails, key=len, default=[])
        return best[v]

    return max((from_node(v) for v in sorted(nodes)), key=len)


def self_test():
    """The finder must see a circle where there is one, and only there."""
    chain = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}
    assert all(len(c) == 1 for c in components(set(chain), chain)), "a chain has no circle"
    loop = dict(chain, c={"a"})
    found = [c for c in components(set(loop), loop) if len(c) > 1]
    assert found == [["a", "b", "c"]], found
    two = {"x": {"y"}, "y": {"x"}, "z": {"x"}}
    assert [c for c in components(set(two), two) if len(c) > 1] == [["x", "y"]]
    assert longest_chain(set(chain), chain) == ["d", "a", "b", "c"]
    print("depgraph: self-test passed")
    return 0


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--self-test":
        return self_test()
    objdir = sys.argv[1]
    if not glob.glob(os.path.join(objdir, "*.o")):
        sys.exit("depgraph: no objects in %s (build the library first)" % objdir)
    mods = modules()
    edges = include_edges(mods) | symbol_edges(mods, objdir)
    adj = {}
    for a, b, _ in edges:
        adj.setdefault(a, set()).add(b)
    if "--dot" in sys.argv:
        print("digraph libkfac {")
        for a, b in sorted({(a, b) for a, b, _ in edges}):
            print('  "%s" -> "%s";' % (a, b))
        print("}")
        return 0
    circles = [c for c in components(mods, adj) if len(c) > 1]
    print("depgraph: %d modules, %d dependencies (includes and calls)" % (len(mods), len({(a, b) for a, b, _ in edges})))
    for comp in circles:
        print("circle: " + " ".join(comp))
        for a, b, why in sorted(edges):
            if a in comp and b in comp:
                print("  %s -> %s (%s)" % (a, b, why))
    if circles:
        return 1
    print("depgraph: no circle")
    if "--longest" in sys.argv:
        chain = longest_chain(mods, adj)
        print("depgraph: longest chain, %d modules: %s" % (len(chain), " -> ".join(chain)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
