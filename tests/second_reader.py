"""Reads a disk image's guest bytes with a reader that is not QEMU and compares them with a raw
reference: the test suite's second reader (tests/it/second_reader.rs).

    second_reader.py BACKEND FORMAT IMAGE REFERENCE SIZE

BACKEND is `dissect` (dissect.hypervisor, pure Python) or `libyal` (libvhdi / libvmdk's
bindings); FORMAT is qcow2, vpc, vhdx, vmdk or vdi. The reader must report SIZE bytes, and read
the reference's bytes, then zeros up to SIZE. Prints the reader's size and the SHA-256 of what
it read; exits 1 naming the first differing MiB.
"""

import hashlib
import sys

PIECE = 1 << 20


def open_dissect(fmt, path):
    f = open(path, "rb")
    if fmt == "qcow2":
        from dissect.hypervisor.disk.qcow2 import QCow2

        disk = QCow2(f).open()
    elif fmt == "vpc":
        from dissect.hypervisor.disk.vhd import VHD

        disk = VHD(f)
    elif fmt == "vhdx":
        from dissect.hypervisor.disk.vhdx import VHDX

        disk = VHDX(f)
    elif fmt == "vmdk":
        from dissect.hypervisor.disk.vmdk import VMDK

        disk = VMDK(f)
        size = disk.size

        # dissect's aligned stream asks the VMDK for whole 8 KiB pieces, and the VMDK reader
        # fails on one that runs past the last sector (dissect.hypervisor 3.21): read whole
        # sectors directly.
        def read_sectors(at, n):
            first, last = at // 512, min(at + n, size + 511) // 512
            return disk.read_sectors(first, last - first)[at % 512 :][:n]

        return size, read_sectors
    elif fmt == "vdi":
        from dissect.hypervisor.disk.vdi import VDI

        disk = VDI(f).open()
    else:
        sys.exit(f"dissect: no reader for {fmt}")
    size = disk.size

    def read(at, n):
        disk.seek(at)
        return disk.read(n)

    return size, read


def open_libyal(fmt, path):
    if fmt in ("vpc", "vhdx"):
        import pyvhdi

        h = pyvhdi.file()
        h.open(path)
    elif fmt == "vmdk":
        import pyvmdk

        h = pyvmdk.handle()
        h.open(path)
        h.open_extent_data_files()
    else:
        sys.exit(f"libyal: no reader for {fmt}")
    return h.get_media_size(), lambda at, n: h.read_buffer_at_offset(n, at)


def main():
    backend, fmt, image, reference, want = sys.argv[1:6]
    want = int(want)
    opener = {"dissect": open_dissect, "libyal": open_libyal}[backend]
    size, read = opener(fmt, image)
    digest = hashlib.sha256()
    with open(reference, "rb") as ref:
        at = 0
        while at < size:
            n = min(PIECE, size - at)
            got = read(at, n)
            expected = ref.read(n)
            expected += bytes(n - len(expected))
            digest.update(got)
            if got != expected:
                sys.exit(
                    f"{backend} reads {image} differently in [{at}, {at + n})"
                    f" ({len(got)} bytes read)"
                )
            at += n
    print(size, digest.hexdigest())
    if size != want:
        sys.exit(f"{backend} gives {image} {size} bytes, QEMU {want}")


main()
