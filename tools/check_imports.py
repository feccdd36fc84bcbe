#!/usr/bin/env python3
"""Checks that every Swift target imports only modules in its declared dependency closure.

usage: tools/check_imports.py   (from the repository root; exit 1 naming each undeclared import)

A local build can hide a missing dependency: SwiftPM puts every built module on one search path,
so a target may import a module that merely happened to be built first. A fresh build orders
targets by declared dependencies only and then fails. This reads Package.swift's targets and
each target's `import` lines and reports imports outside the transitive dependencies.
"""
import glob, re, sys

# Modules of the Swift toolchain itself (Synchronization: Swift 6's atomics) and the packages
# Package.swift declares as products.
SYSTEM = {"Foundation", "FoundationEssentials", "FoundationXML", "XCTest", "Glibc", "Dispatch", "Synchronization",
          "Yams", "ArgumentParser", "SwiftProtobuf"}


def main():
    package = open("Package.swift").read()
    targets, paths = {}, {}
    for m in re.finditer(r'\.(testTarget|target|executableTarget|systemLibrary)\(name: "([^"]+)"(.*?)\)\s*,\s*\n', package, re.S):
        kind, name, rest = m.groups()
        deps = re.search(r'dependencies: \[(.*?)\]', rest, re.S)
        targets[name] = set(re.findall(r'"([^"]+)"', deps.group(1))) if deps else set()
        path = re.search(r'path: "([^"]+)"', rest)
        paths[name] = path.group(1) if path else ("Tests/" if kind == "testTarget" else "Sources/") + name

    def closure(name, seen):
        for d in targets.get(name, ()):
            if d not in seen:
                seen.add(d)
                closure(d, seen)
        return seen

    problems = []
    for name, path in sorted(paths.items()):
        allowed = closure(name, set()) | SYSTEM | {name}
        for f in sorted(glob.glob(path + "/**/*.swift", recursive=True)):
            for line_no, line in enumerate(open(f), 1):
                m = re.match(r'(?:@testable |@_exported )?import (\w+)\s*$', line)
                if m and m.group(1) not in allowed:
                    problems.append(f"{f}:{line_no}: {name} imports {m.group(1)}, which is not among its dependencies in Package.swift")
    for p in problems:
        print("check_imports: " + p)
    if not problems:
        print(f"check_imports: {len(paths)} targets import only what they declare")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
