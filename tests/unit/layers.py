#!/usr/bin/env python3
"""Every module of lib/src calls only modules below it: the call graph
between the objects of the library (from nm) has no circle.

usage: layers.py LIBCHORUS_INTERNAL.a [NM]

A circle is printed with the calls that make it, and the test fails; on
success the modules are printed bottom first."""
import collections
import subprocess
import sys


def module(member):
    m = member.rsplit('/', 1)[-1]
    if m.startswith('src_'):
        m = m[4:]
    return m[:-4] if m.endswith('.c.o') else m


def graph(archive, nm):
    out = subprocess.run([nm, '-A', archive], check=True, capture_output=True,
                         text=True).stdout
    defs, uses = {}, collections.defaultdict(set)
    for line in out.splitlines():
        head, sep, rest = line.partition('.o:')  # archive:member.o: [value] type name
        if not sep:
            continue
        mod, f = module(head.rsplit(':', 1)[-1] + '.o'), rest.split()
        if len(f) == 2 and f[0] == 'U':
            uses[mod].add(f[1])
        elif len(f) == 3 and f[1] in 'TDBRV':
            defs[f[2]] = mod
    edges = collections.defaultdict(lambda: collections.defaultdict(set))
    for mod, syms in uses.items():
        for s in syms:
            to = defs.get(s)
            if to and to != mod:
                edges[mod][to].add(s)
    mods = set(defs.values()) | set(uses)
    return mods, edges


def circles(mods, edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def order(mods, edges):
    """Bottom first: a module after everything it calls."""
    done, out = set(), []

    def visit(v):
        if v in done:
            return
        done.add(v)
        for w in sorted(edges[v]):
            visit(w)
        out.append(v)

    for v in sorted(mods):
        visit(v)
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    mods, edges = graph(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else 'nm')
    if len(mods) < 10:
        sys.exit('layers: only %d modules found in %s' % (len(mods), sys.argv[1]))
    bad = circles(mods, edges)
    for comp in bad:
        print('layers: these modules call each other in a circle: ' + ', '.join(comp))
        for a in comp:
            for b in comp:
                if b in edges[a]:
                    print('  %s -> %s: %s' % (a, b, ', '.join(sorted(edges[a][b]))))
    if bad:
        sys.exit(1)
    print('layers: %d modules, no circle; bottom first:' % len(mods))
    for m in order(mods, edges):
        print('  %-12s -> %s' % (m, ', '.join(sorted(edges[m])) or '-'))


main()
