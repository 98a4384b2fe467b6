# SPDX-License-Identifier: Apache-2.0
"""What wraps a flow's first message, read as the kernel reads it
(bpf/lib/frames.h): blank filler before it, and WebSocket frames (RFC 6455
5.2) around it, masked by the client. stratum.py unmasks a first payload
with these; guard/detect/vocabulary.py mirrors the kernel's hold decision
with them.
"""
from __future__ import annotations

#: Bytes JSON and HTTP allow before a message: never a message themselves.
BLANKS = b" \t\r\n"
#: Frames of one segment read (control frames count), as frames.h does.
WS_FRAMES_MAX = 4


def websocket_frame(data: bytes) -> bool:
    """Whether data starts like a client's frame: FIN or not, a data or
    control opcode, no reserved bits, masked."""
    return len(data) >= 6 and data[0] & 0x70 == 0 and (data[0] & 0x0F) in (0, 1, 2, 8, 9, 10) \
        and data[1] & 0x80 != 0


def websocket_view(data: bytes, limit: int = 8 * 1024) -> tuple[bytes, str]:
    """(the unmasked message, its status) of the frames at the start of data,
    read exactly as bpf/lib/frames.h reads them: WS_FRAMES_MAX frames at
    most, control frames skipped, `limit` bytes of message at most. status:
    "message" (a final frame ended it, or limit was reached), "cut" (it goes
    on past data) or "filler" (control or empty frames only)."""
    message, position, status = bytearray(), 0, "cut"
    for _ in range(WS_FRAMES_MAX):
        if position >= len(data):
            break
        if position + 2 > len(data):
            return bytes(message), "cut"
        b0, b1 = data[position], data[position + 1]
        length, header = b1 & 0x7F, 2
        if length == 126:
            length, header = int.from_bytes(data[position + 2:position + 4], "big"), 4
        elif length == 127:
            high = int.from_bytes(data[position + 2:position + 6], "big")
            length = 0xFFFFFFFF if high else int.from_bytes(data[position + 6:position + 10], "big")
            header = 10
        key = data[position + header:position + header + 4] if b1 & 0x80 else b"\0\0\0\0"
        header += 4 if b1 & 0x80 else 0
        if position + header > len(data):
            return bytes(message), "cut"
        payload = data[position + header:position + header + length]
        if b0 & 0x08:
            if len(payload) < length:
                return bytes(message), "cut"
            position += header + length
            continue
        if len(message) >= limit:
            status = "message"
            break
        message += bytes(b ^ key[i & 3] for i, b in enumerate(payload[:limit - len(message)]))
        if len(payload) < length:
            status = "message" if len(message) >= limit else "cut"
            break
        position += header + length
        if b0 & 0x80:
            status = "message"
            break
    if not message and (status == "message" or position >= len(data)):
        status = "filler"
    return bytes(message), status


def websocket_message(data: bytes, limit: int = 8 * 1024) -> tuple[bytes, bool] | None:
    """(the unmasked message, whether it is whole) of a client's frames at
    the start of data (websocket_view); None when data does not start with
    one."""
    if not websocket_frame(data):
        return None
    message, status = websocket_view(data, limit)
    return message, status != "cut"
