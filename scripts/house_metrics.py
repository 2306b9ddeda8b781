#!/usr/bin/env python3
"""The shape of the house, measured: lines per crate, functions over 70 lines, and errors matched
by their message text. Import circles come from the acyclic test (tests/tests/house.rs); duplicated
blocks from a duplicate finder. Used for the before/after figures of a restructuring.

    scripts/house_metrics.py [--long]      # --long lists every function over the limit
"""
import os
import re
import sys

LIMIT = 70
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = ["format", "io", "writer", "reader", "remote", "nbd", "qemu", "image", "vault", "tools",
          "tests", "benches", "fuzz"]
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")
MESSAGE_MATCH = re.compile(
    r"(\.message\b|\.message\(\)|\.to_string\(\)|format!\(\"\{[a-z_]*\}\"[^)]*\))\s*\.(contains|starts_with|ends_with)\(")


def strip(line):
    """The line without string literals and comments (good enough to count braces)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    """(name, first line, length) of every fn outside test modules."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        if re.match(r"^\s*#\[cfg\(test\)\]", lines[i]):
            break  # unit tests sit at the end of a file
        m = FN.match(lines[i])
        if m:
            depth, opened, j = 0, False, i
            while j < len(lines):
                s = strip(lines[j])
                if not opened and ";" in s and "{" not in s:
                    break  # a declaration without a body
                depth += s.count("{") - s.count("}")
                opened = opened or "{" in s
                if opened and depth <= 0:
                    out.append((m.group(7), i + 1, j - i + 1))
                    break
                j += 1
        i += 1
    return out


def is_test_file(rel):
    parts = rel.split(os.sep)
    return "tests" in parts[1:] or parts[-1] == "tests.rs" or parts[0] in ("tests", "benches", "fuzz")


def main():
    long_list = "--long" in sys.argv
    total_src = 0
    long_fns = []
    matches = []
    print(f"{'crate':<10} {'src lines':>10} {'test lines':>11}")
    for crate in CRATES:
        base = os.path.join(ROOT, crate)
        if not os.path.isdir(base):
            continue
        src = tests = 0
        for dirpath, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if d not in ("target", "corpus", "artifacts")]
            for f in files:
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                n = sum(1 for _ in open(path, encoding="utf-8"))
                if is_test_file(rel) or "/src/" not in "/" + rel:
                    tests += n
                    continue
                src += n
                for name, line, length in functions(path):
                    if length > LIMIT:
                        long_fns.append((length, rel, line, name))
                body = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
                for k, text in enumerate(body.split("\n")):
                    if MESSAGE_MATCH.search(text):
                        matches.append(f"{rel}:{k + 1}: {text.strip()}")
        total_src += src
        print(f"{crate:<10} {src:>10} {tests:>11}")
    print(f"{'total':<10} {total_src:>10}")
    print(f"functions over {LIMIT} lines (outside tests): {len(long_fns)}")
    for length, rel, line, name in sorted(long_fns, reverse=True)[: None if long_list else 5]:
        print(f"  {length:4}  {rel}:{line} {name}")
    print(f"errors matched by their message text (outside tests): {len(matches)}")
    for m in matches:
        print(f"  {m}")


if __name__ == "__main__":
    main()
