# The twin's flash chip: a file-backed block device for os.VfsLfs2 (littlefs2), with
# power cuts on demand. Imported only by a twin that has a flash image.
import os


class PowerCut(BaseException):
    """The twin's power failed: not an error the firmware can catch (BaseException)."""


class FileBlockDev:
    """A flash chip in a file, for os.VfsLfs2 (littlefs2) as on a board.

    Counts block programs and erases (the wear figures). With `cut_after` = N the power
    fails during the Nth program: half of that write lands (a torn write), then PowerCut.
    """

    def __init__(self, path, block_size=4096, blocks=512, cut_after=0):
        self.bs = block_size
        self.n = blocks
        self.cut_after = cut_after
        self.writes = 0
        self.erases = 0
        try:
            self.f = open(path, "r+b")
        except OSError:
            self.f = open(path, "w+b")
            blank = b"\xff" * block_size
            for _ in range(blocks):
                self.f.write(blank)
        self._blank = bytearray(b"\xff" * block_size)

    def blank(self, blocks):
        """True if the first `blocks` blocks hold only erased bytes (0xFF) or a torn
        first format (littlefs's superblock never completed)."""
        buf = bytearray(self.bs)
        for b in range(blocks):
            self.readblocks(b, buf)
            if b"littlefs" in buf:
                return False
        return True

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        self.writes += 1
        self.f.seek(block * self.bs + (off or 0))
        if self.cut_after and self.writes >= self.cut_after:
            self.f.write(memoryview(buf)[: len(buf) // 2])
            raise PowerCut()
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.n
        if op == 5:  # block size
            return self.bs
        if op == 6:  # erase
            self.erases += 1
            self.f.seek(arg * self.bs)
            self.f.write(self._blank)
        return 0


def mount(image, cut_after=0):
    """Mount the littlefs2 image file at /flash (formatting a new one); returns the device."""
    bdev = FileBlockDev(image, cut_after=cut_after)
    try:
        vfs = os.VfsLfs2(bdev)
    except OSError:
        # Format only a blank chip (a first boot, or one cut during its first format).
        # A filesystem that held state and no longer mounts is a fault, never a fresh
        # pump: formatting it would forget the reservoir and over-estimate it.
        if not bdev.blank(2):
            raise
        os.VfsLfs2.mkfs(bdev)
        vfs = os.VfsLfs2(bdev)
    os.mount(vfs, "/flash")
    return bdev
