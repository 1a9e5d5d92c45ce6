# A part of the pump that owns state a restart must keep. It declares its snapshot
# fields once (SNAP: its attribute names; SNAP_PREFIX: what the snapshot's field names
# put before them, protocol/theca_protocol/storage.py SnapshotHead), and the snapshot
# and the restore walk those declarations (snapshot.py): no field is listed twice.


class Part:
    """Base of the pump's parts: snapshot fields declared once, walked here."""

    SNAP = ()
    SNAP_PREFIX = ""

    def snap_into(self, v):
        """Put this part's snapshot fields into the snapshot's values `v`."""
        pre = self.SNAP_PREFIX
        for a in self.SNAP:
            v[pre + a] = getattr(self, a)

    def take_up(self, v):
        """After a restart: this part's snapshot fields from the values `v`."""
        pre = self.SNAP_PREFIX
        for a in self.SNAP:
            setattr(self, a, v[pre + a])
