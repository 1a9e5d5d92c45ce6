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
        self.failing = None  # a callable: True while every write fails (flash_error)
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
        if self.failing is not None and self.failing():
            return -5  # EIO: a scenario's flash_error (littlefs raises OSError)
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
            if self.failing is not None and self.failing():
                return -5
            self.erases += 1
            self.f.seek(arg * self.bs)
            self.f.write(self._blank)
        return 0


def mount(image, cut_after=0, failing=None):
    """Mount the littlefs2 image file at /flash (formatting a new one); returns the device.
    `failing`: a callable, True while every write fails."""
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
    bdev.failing = failing
    return bdev


_FILES = {"state": ("state.bin", "state.bak"), "journal": ("journal.bin",),
          "events": ("events.bin",)}
_SLOT = 32  # journal and event slots are 32 bytes, their seq a u32 (journal: first,
_SEQ_AT = {"journal.bin": 0, "events.bin": 4}  # event: after its time)


def damage(root, what, how):
    """A scenario's storage fault, done while the pump is off: `how` "erase" removes the
    pump's file `what` ("state": both copies), "bitflip" flips one bit of its newest
    record (the state: of state.bin's snapshot)."""
    names = _FILES[what]
    d = root + "/theca/"
    if how == "erase":
        for n in names:
            try:
                os.remove(d + n)
            except OSError:
                pass
        return
    path = d + names[0]
    try:
        f = open(path, "r+b")
    except OSError:
        return  # nothing to damage
    with f:
        at = -1
        if names[0] in _SEQ_AT:
            # the newest record's slot, read one at a time (an event ring is 320 KB)
            k = _SEQ_AT[names[0]]
            slot = bytearray(_SLOT)
            best = 0
            i = 0
            while f.readinto(slot) == _SLOT:
                seq = slot[k] | slot[k + 1] << 8 | slot[k + 2] << 16 | slot[k + 3] << 24
                if seq > best:
                    best, at = seq, i + k + 4 + 6  # a byte inside the newest record
                i += _SLOT
        else:
            f.seek(0, 2)
            at = f.tell() // 2
        if at < 0:
            return
        one = bytearray(1)
        f.seek(at)
        if f.readinto(one) != 1:
            return
        one[0] ^= 0x10
        f.seek(at)
        f.write(one)
