#!/usr/bin/env python3
"""The blkhash construction (blkhash >= 0.10, as `blksum FILE` prints it) over a raw file, with
nothing but the standard library: the independent oracle of `vmimage hash --guest`.

    digest = H(H(b_0) || ... || H(b_{n-1}) || le64(L)), blocks of 64 KiB, the last shorter

Usage: blkhash_reference.py FILE [ALGO]   (ALGO: md5, sha1, sha224, sha256 (default), sha384,
sha512). Prints `hex  FILE`.
"""

import hashlib
import struct
import sys

BLOCK_SIZE = 64 * 1024


def blkhash(path, algo="sha256"):
    outer = hashlib.new(algo)
    length = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_SIZE)
            if not block:
                break
            outer.update(hashlib.new(algo, block).digest())
            length += len(block)
    outer.update(struct.pack("<Q", length))
    return outer.hexdigest()


if __name__ == "__main__":
    print(f"{blkhash(sys.argv[1], *sys.argv[2:3])}  {sys.argv[1]}")
