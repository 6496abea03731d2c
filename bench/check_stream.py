"""Self-check of ``fastsnap.stream.SnapshotReader`` on a fake image (no services needed).

Random sparse images, random chunk/window sizes and read sizes: the bytes produced must equal the image, and
exactly the allocated objects must be read (no read touches a hole object).

    python -m bench.check_stream [TRIALS]
"""

from __future__ import annotations

import os
import random
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastsnap.stream import SnapshotReader

OBJ = 4 << 20


class _Completion:
    def __init__(self, rc: int) -> None:
        self.rc = rc

    def get_return_value(self) -> int:
        return self.rc


class FakeImage:
    """The subset of ``rbd.Image`` SnapshotReader uses, with asynchronous completions on timer threads."""

    def __init__(self, size: int, objects: set[int]) -> None:
        self._size = size
        self.objects = objects
        self.reads: list[tuple[int, int]] = []
        content = bytearray(size)
        for o in objects:
            end = min(OBJ, size - o * OBJ)
            content[o * OBJ:o * OBJ + end] = os.urandom(end)
        self.content = bytes(content)

    def size(self) -> int:
        return self._size

    def stat(self) -> dict[str, int]:
        return {"obj_size": OBJ}

    def diff_iterate(self, offset: int, length: int, from_snapshot: str | None,
                     cb: Callable[[int, int, bool], int], include_parent: bool = True,
                     whole_object: bool = False) -> None:
        for o in sorted(self.objects):
            cb(o * OBJ, min(OBJ, self._size - o * OBJ), True)

    def aio_read(self, offset: int, length: int, cb: Callable[[Any, bytes], None]) -> None:
        self.reads.append((offset, length))
        data = self.content[offset:offset + length]
        threading.Timer(random.random() * 0.002, lambda: cb(_Completion(0), data)).start()


def trial(rng: random.Random) -> None:
    n_obj = rng.randint(1, 40)
    size = n_obj * OBJ - rng.choice([0, 0, 12345])
    objects = set(rng.sample(range(n_obj), rng.randint(0, n_obj)))
    img = FakeImage(size, objects)
    reader = SnapshotReader(img, chunk=rng.choice([4, 8, 16]) << 20, window=rng.randint(1, 8),
                            max_inflight=rng.choice([4, 16, 64]) << 20, max_read=rng.choice([7777, 65536, 1 << 20]))
    out = bytearray()
    while True:
        b = reader.read(rng.choice([65536, 1 << 20, -1, 7777]))
        if not b:
            break
        out += b
    reader.close()
    assert bytes(out) == img.content, "content differs"
    st = reader.stats
    assert st.bytes_done == size and st.bytes_read + st.bytes_zero == size, st
    touched = {o for off, n in img.reads for o in range(off // OBJ, (off + n + OBJ - 1) // OBJ)}
    assert touched == objects, (sorted(touched), sorted(objects))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    trials = int(args[0]) if args else 40
    rng = random.Random(5)
    for _ in range(trials):
        trial(rng)
    print(f"{trials} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
