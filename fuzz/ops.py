"""Turning fuzz input bytes into structured choices, and back (for hand-made seeds).

A :class:`Choices` reads small integers and byte strings from the front of the input; when
the input runs out every read returns zero/empty, so any byte string is a valid program.
:class:`Script` writes the same layout, so seeds can be written as readable code.
"""

from __future__ import annotations


class Choices:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self) -> int:
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def u32(self) -> int:
        return self.u16() << 16 | self.u16()

    def below(self, bound: int) -> int:
        """A number in ``range(bound)`` (one byte, or two when ``bound`` > 256)."""
        return (self.u16() if bound > 256 else self.u8()) % bound

    def pick(self, options: tuple[object, ...] | list[object]) -> object:
        return options[self.below(len(options))]

    def blob(self, limit: int = 255) -> bytes:
        """A length-prefixed byte string (one length byte, or two when ``limit`` > 255)."""
        size = (self.u16() if limit > 255 else self.u8()) % (limit + 1)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk


class Script:
    """Builds inputs in the layout :class:`Choices` reads."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Script:
        self._parts.append(bytes([value & 0xFF]))
        return self

    def u16(self, value: int) -> Script:
        self._parts.append((value & 0xFFFF).to_bytes(2, "big"))
        return self

    def u32(self, value: int) -> Script:
        self._parts.append((value & 0xFFFFFFFF).to_bytes(4, "big"))
        return self

    def blob(self, data: bytes, limit: int = 255) -> Script:
        assert len(data) <= limit
        if limit > 255:
            self.u16(len(data))
        else:
            self.u8(len(data))
        self._parts.append(data)
        return self

    def raw(self, data: bytes) -> Script:
        self._parts.append(data)
        return self

    def build(self) -> bytes:
        return b"".join(self._parts)
