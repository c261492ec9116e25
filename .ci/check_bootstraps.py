#!/usr/bin/env python3
"""Checks that `sam build` produced an arm64 Linux `bootstrap` for each function, and prints sizes.
usage: check_bootstraps.py BUILD_DIR FUNCTION..."""

import io
import os
import sys
import zipfile

build_dir, functions = sys.argv[1], sys.argv[2:]
passed = failed = 0
for name in functions:
    path = os.path.join(build_dir, name, "bootstrap")
    ok = os.path.isfile(path) and os.access(path, os.X_OK)
    if ok:
        with open(path, "rb") as f:
            header = f.read(20)
        # ELF magic, 64-bit, little-endian, e_machine 183 = AArch64.
        ok = header[:4] == b"\x7fELF" and header[4] == 2 and header[5] == 1 and int.from_bytes(header[18:20], "little") == 183
    if ok:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            z.write(path, "bootstrap")
        size = os.path.getsize(path)
        print(f"ok   {name}: arm64 bootstrap, {size / 1e6:.2f} MB, {len(buffer.getvalue()) / 1e6:.2f} MB zipped")
        passed += 1
    else:
        print(f"FAIL {name}: no arm64 bootstrap at {path}")
        failed += 1
print(f"sam-build: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
