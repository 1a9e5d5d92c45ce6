"""The frame layouts the host decodes with, compiled once from the protocol definition
(struct objects and sizes), shared by the scanner, the records and every writer."""

from __future__ import annotations

import numpy as np
import theca_protocol as tp

HDR = tp.compiled(tp.Header)
HDR_SIZE = tp.HDR_SIZE
CRC_SIZE = tp.CRC_SIZE
STATUS = tp.compiled(tp.Status)
INFO = tp.compiled(tp.DeviceInfo)
EVENT = tp.compiled(tp.EventRecord)
REPLY = tp.compiled(tp.ReplyHead)
CMD_HEAD = tp.compiled(tp.CommandHead)
LOG_HEAD = tp.compiled(tp.LogReadReplyHead)
#: The first command type: 0x40 and up (below REPLY) travel host -> device.
CMD_FIRST = min(tp.COMMANDS)
#: The payload size of each fixed-size device frame.
FIXED = {tp.T_STATUS: STATUS.size, tp.T_EVENT: EVENT.size, tp.T_DEVICE_INFO: INFO.size}
#: A device frame's record kind.
KIND = {
    tp.T_DEVICE_INFO: "device_info",
    tp.T_STATUS: "status",
    tp.T_EVENT: "event",
    tp.T_REPLY: "reply",
}


def u32_at(a: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Little-endian u32 values at byte offsets `offs` of `a`, as int64 (vectorised)."""
    return (
        a[offs].astype(np.int64)
        | (a[offs + 1].astype(np.int64) << 8)
        | (a[offs + 2].astype(np.int64) << 16)
        | (a[offs + 3].astype(np.int64) << 24)
    )
