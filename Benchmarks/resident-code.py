#!/usr/bin/env python3
"""Which code of a running program is resident, by the module it belongs to.

    python3 Benchmarks/resident-code.py PID [BINARY]

For a statically linked binary /proc/PID/smaps has one mapping for all of its code, so the footprint
benchmark cannot say whose pages they are. This reads which pages of the binary's mappings are present
(/proc/PID/pagemap, bit 63; needs root or the process's owner) and attributes each present page to the
symbols that lie in it (`nm`): Swift symbols by their module (the name after `$s`), C symbols by a known
prefix (BoringSSL, ICU, ...). A page shared by two modules counts half to each. Prints MiB per module,
largest first. Read-only; it never touches the process.
"""
import collections
import os
import re
import struct
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")


def mappings(pid, binary):
    """(start, end, offset, perms) of the mappings of `binary` in the process."""
    real = os.path.realpath(binary)
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and os.path.realpath(parts[5]) == real:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end, int(parts[2], 16), parts[1]))
    return out


def present_pages(pid, start, end):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        data = f.read((end - start) // PAGE * 8)
    return [start + i * PAGE for i in range(len(data) // 8) if struct.unpack_from("<Q", data, i * 8)[0] >> 63]


SWIFT = re.compile(r"^\$s(\d+)([A-Za-z_][A-Za-z0-9_]*)")
C_PREFIXES = [("CCryptoBoringSSL", "BoringSSL (swift-crypto)"), ("CNIOBoringSSL", "BoringSSL (swift-nio-ssl)"),
              ("u_", "ICU"), ("ucol_", "ICU"), ("ures_", "ICU"), ("uloc_", "ICU"), ("icu_", "ICU"), ("_ZN6icu_", "ICU"),
              ("_ZN", "C++ (libstdc++, ICU, runtime)"), ("swift_", "Swift runtime"), ("_swift", "Swift runtime"),
              ("CF", "CoreFoundation"), ("__CF", "CoreFoundation"), ("_CF", "CoreFoundation"), ("dispatch_", "libdispatch"),
              ("_dispatch", "libdispatch"), ("yaml_", "libyaml (Yams)"), ("c_nio", "NIO C shims"), ("CNIO", "NIO C shims"),
              ("sqlite3", "SQLite"), ("deflate", "zlib"), ("inflate", "zlib")]


def module_of(name):
    m = SWIFT.match(name)
    if m:
        length = int(m.group(1))
        return m.group(2)[:length]
    for prefix, label in C_PREFIXES:
        if name.startswith(prefix):
            return label
    return "other C"


def symbols(binary):
    out = subprocess.run(["nm", "--defined-only", "-S", binary], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTrRdDbBwWvV":
            syms.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return syms


def main():
    pid = int(sys.argv[1])
    binary = sys.argv[2] if len(sys.argv) > 2 else os.readlink(f"/proc/{pid}/exe")
    maps = mappings(pid, binary)
    if not maps:
        sys.exit(f"{binary} is not mapped in process {pid}")
    base = min(start - offset for start, _, offset, _ in maps if offset == 0) if any(o == 0 for _, _, o, _ in maps) else maps[0][0]
    present = set()
    for start, end, _, perms in maps:
        present.update(present_pages(pid, start, end))
    by_page = collections.defaultdict(set)
    for address, size, name in symbols(binary):
        first = (base + address) // PAGE * PAGE
        last = (base + address + max(size, 1) - 1) // PAGE * PAGE
        for page in range(first, last + PAGE, PAGE):
            if page in present:
                by_page[page].add(module_of(name))
    totals = collections.Counter()
    for page in present:
        owners = by_page.get(page) or {"(no symbol: metadata, strings, tables)"}
        for owner in owners:
            totals[owner] += PAGE / len(owners)
    print(f"{len(present) * PAGE / 1048576:.1f} MiB of {binary} resident in process {pid}")
    for owner, size in totals.most_common(25):
        print(f"{size / 1048576:8.2f} MiB  {owner}")


if __name__ == "__main__":
    main()
