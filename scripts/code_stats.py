#!/usr/bin/env python3
"""Layout figures per crate: files, folders, largest file, share of functions over 60 lines.

Counts library and binary sources under each crate's src/ (unit-test modules excluded: a
`#[cfg(test)]` module is skipped to its closing brace). A function's length is from its `fn`
line to its closing brace. Usage: python3 scripts/code_stats.py [ROOT]
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
CRATES = ["store", "model", "optim", "recorder", "replay", "src"]
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+\w+")


def strip(line):
    # Drop string and char literals and line comments before counting braces.
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i, skip_test = [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("#[cfg(test)]"):
            # Skip the test module entirely.
            j, depth, opened = i + 1, 0, False
            while j < len(lines):
                s = strip(lines[j])
                depth += s.count("{") - s.count("}")
                opened = opened or "{" in s
                if opened and depth <= 0:
                    break
                j += 1
            i = j + 1
            continue
        if FN.match(line):
            depth, opened, j = 0, False, i
            while j < len(lines):
                s = strip(lines[j])
                depth += s.count("{") - s.count("}")
                opened = opened or "{" in s
                if (opened and depth <= 0) or (not opened and s.rstrip().endswith(";")):
                    break
                j += 1
            if opened:
                out.append((j - i + 1, os.path.basename(path), line.strip()[:60]))
            i += 1
            continue
        i += 1
    return out


print("| crate | files | folders | largest file (lines) | functions | over 60 lines | longest |")
print("|---|---|---|---|---|---|---|")
for crate in CRATES:
    src = os.path.join(ROOT, crate if crate == "src" else os.path.join(crate, "src"))
    if not os.path.isdir(src):
        continue
    files, folders, fns, largest = [], 0, [], ("", 0)
    for d, dirs, names in os.walk(src):
        folders += len(dirs)
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files.append(p)
                count = sum(1 for _ in open(p, encoding="utf-8"))
                if count > largest[1]:
                    largest = (os.path.relpath(p, ROOT), count)
                fns += functions(p)
    over = [f for f in fns if f[0] > 60]
    longest = max(fns)[0] if fns else 0
    share = 100.0 * len(over) / max(len(fns), 1)
    print(f"| {crate} | {len(files)} | {folders} | {largest[0]} ({largest[1]}) | {len(fns)} "
          f"| {len(over)} ({share:.1f} %) | {longest} |")
