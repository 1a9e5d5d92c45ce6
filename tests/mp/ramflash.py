# A RAM block device with littlefs2 mounted on it, for firmware store tests. It copies
# with viper and never allocates, like a board's flash driver, so the firmware's
# heap-locked tests see only the firmware's own allocations.
import os

import micropython


@micropython.viper
def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    for i in range(n):
        dst[doff + i] = src[soff + i]


@micropython.viper
def _fill(dst: ptr8, off: int, n: int):
    for i in range(n):
        dst[off + i] = 0xFF


class RAMBlockDev:
    def __init__(self, block_size=4096, blocks=64):
        self.bs = block_size
        self.n = blocks
        self.data = bytearray(b"\xff" * (block_size * blocks))
        self.writes = 0
        self.erases = 0
        self.fail = False  # every write and erase fails (EIO), as a failing flash

    def readblocks(self, block, buf, off=0):
        _copy(buf, 0, self.data, block * self.bs + off, len(buf))

    def writeblocks(self, block, buf, off=0):
        if self.fail:
            return -5  # EIO, as a board's driver answers (littlefs then raises OSError)
        self.writes += 1
        _copy(self.data, block * self.bs + (off or 0), buf, 0, len(buf))

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            if self.fail:
                return -5
            self.erases += 1
            _fill(self.data, arg * self.bs, self.bs)
        return 0


_n = [0]


def mounted(blocks=64):
    """(mount point, device): a fresh littlefs2 filesystem in RAM."""
    bd = RAMBlockDev(blocks=blocks)
    os.VfsLfs2.mkfs(bd)
    _n[0] += 1
    point = "/ram%d" % _n[0]
    os.mount(os.VfsLfs2(bd), point)
    return point, bd
