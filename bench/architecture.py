#!/usr/bin/env python3
"""Prints the architecture figures of issue 13 for a checkout: lines per top-level
module, the longest functions outside tests, and the import circles between top-level
modules (strongly connected components of the `crate::<module>` graph).

    python3 bench/architecture.py [SRC_DIR]
"""
import os, re, sys
from collections import defaultdict

src = sys.argv[1] if len(sys.argv) > 1 else "src"

def module_of(path):
    rel = os.path.relpath(path, src)
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top

def is_test_file(path):
    base = os.path.basename(path)
    return base in ("tests.rs", "fuzz.rs") or f"{os.sep}tests{os.sep}" in path

def code_lines(text):
    """The lines before a trailing `#[cfg(test)] mod ...` block, comments stripped."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*mod \w+\s*\{", lines[i + 1]):
            break
        s = line.strip()
        if s.startswith("//"):
            out.append("")
            continue
        out.append(re.sub(r"//.*$", "", line))
    return out

files = []
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith(".rs"):
            files.append(os.path.join(root, n))
files.sort()

lines_per = defaultdict(int)
test_lines_per = defaultdict(int)
edges = defaultdict(set)
where = {}
funcs = []
for f in files:
    text = open(f, encoding="utf-8").read()
    m = module_of(f)
    n = text.count("\n")
    if is_test_file(f):
        test_lines_per[m] += n
        continue
    code = code_lines(text)
    lines_per[m] += len(code)
    test_lines_per[m] += max(0, n - len(code))
    joined = "\n".join(code)
    for mm in re.finditer(r"crate::(\w+)", joined):
        edges[m].add(mm.group(1))
        where.setdefault((m, mm.group(1)), f)
    for mm in re.finditer(r"use crate::\{([^}]*)\}", joined, re.S):
        for part in re.split(r",", mm.group(1)):
            p = part.strip().split("::")[0].strip()
            if re.fullmatch(r"\w+", p or ""):
                edges[m].add(p)
                where.setdefault((m, p), f)
    # functions: `fn name` ... the closing brace at the same indentation
    for i, line in enumerate(code):
        fm = re.match(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", line)
        if not fm:
            continue
        indent = fm.group(1)
        for j in range(i, len(code)):
            if code[j].startswith(indent + "}") and not code[j].startswith(indent + "} else"):
                funcs.append((j - i + 1, os.path.relpath(f, src), fm.group(7)))
                break
            if j > i and code[j].rstrip().endswith(";") and j == i:
                break

mods = sorted(set(lines_per) | set(test_lines_per))
for m in list(edges):
    edges[m] = {e for e in edges[m] if e in mods and e != m}

print("# lines per top-level module (code / tests)")
for m in sorted(mods, key=lambda m: -lines_per[m]):
    print(f"{m:14} {lines_per[m]:6} {test_lines_per[m]:6}")
print(f"{'total':14} {sum(lines_per.values()):6} {sum(test_lines_per.values()):6}")

print("\n# longest functions outside tests")
funcs.sort(reverse=True)
for n, f, name in funcs[:15]:
    print(f"{n:5}  {f}::{name}")
print(f"functions over 80 lines: {sum(1 for n, _, _ in funcs if n > 80)}")

# Tarjan's strongly connected components
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in sorted(edges.get(v, ())):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in mods:
    if v not in index:
        strong(v)
circles = [c for c in sccs if len(c) > 1]
print("\n# import graph (module: what it imports)")
for m in mods:
    print(f"{m}: {' '.join(sorted(edges.get(m, ())))}")
print(f"\n# import circles: {len(circles)}")
for c in circles:
    print("  " + " <-> ".join(c))
