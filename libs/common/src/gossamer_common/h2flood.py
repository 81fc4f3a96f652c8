"""What one HTTP/2 peer may make a server do or buffer before it is told to calm down.

Shared by the proxy's HTTP/2 bridge and the destination's gRPC server.

RFC 9113 §10.5 names the cheap frames that cost the receiver work or memory: PING and
SETTINGS (each owes an ACK), and streams opened and at once reset (the "rapid reset" attack,
CVE-2023-44487: every stream starts work upstream, and the reset frees the slot for the
next). The defences follow what hyper's ``h2`` does for Linkerd:

* **pending control frames**: the ACKs owed for PING and SETTINGS (and the answers the
  proxy makes itself, such as a 403 for a denied stream) are counted while the
  connection's writes are backed up (the transport's write buffer is above its high-water
  mark, so the peer is not reading); past :attr:`FloodLimits.max_pending_control_frames`
  the connection is closed with ``GOAWAY(ENHANCE_YOUR_CALM)``. Reading also pauses while
  writes are backed up, so what one read brings in is all that can pile up;
* **client resets**: each stream the client resets while the proxy is still working on it
  fills a leaky bucket that drains at :attr:`FloodLimits.reset_rate` per second; a bucket
  over :attr:`FloodLimits.reset_burst` closes the connection with
  ``GOAWAY(ENHANCE_YOUR_CALM)``. A client that cancels now and then (a gRPC deadline)
  never gets near it; one that resets thousands of streams a second does at once.

Sans-io: :class:`FloodGuard` takes the events and the time and answers whether the limit
is passed; the asyncio protocol sends the GOAWAY and closes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FloodGuard", "FloodLimits"]


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Per-connection limits for the frames a peer can send cheaply."""

    #: PING and SETTINGS ACKs owed while writes are backed up, before GOAWAY.
    max_pending_control_frames: int = 1024
    #: Client resets of in-flight streams allowed in one burst.
    reset_burst: int = 200
    #: Client resets per second the bucket forgives.
    reset_rate: float = 100.0

    def __post_init__(self) -> None:
        if self.max_pending_control_frames < 1:
            raise ValueError("max_pending_control_frames must be at least 1")
        if self.reset_burst < 1:
            raise ValueError("reset_burst must be at least 1")
        if self.reset_rate < 0:
            raise ValueError("reset_rate must not be negative")


DEFAULT_FLOOD_LIMITS = FloodLimits()


class FloodGuard:
    """Counts one connection's control frames and client resets against :class:`FloodLimits`.

    Each method returns ``True`` when the peer has passed a limit and the connection should
    end with ``GOAWAY(ENHANCE_YOUR_CALM)``.
    """

    __slots__ = ("_limits", "_pending_control", "_reset_level", "_reset_time", "writes_backed_up")

    def __init__(self, limits: FloodLimits = DEFAULT_FLOOD_LIMITS) -> None:
        self._limits = limits
        #: Whether the transport's write buffer is above its high-water mark.
        self.writes_backed_up = False
        self._pending_control = 0
        self._reset_level = 0.0
        self._reset_time = 0.0

    @property
    def pending_control_frames(self) -> int:
        """ACKs owed since writes backed up (0 while they flow)."""
        return self._pending_control

    def backed_up(self) -> None:
        """The write buffer went over its high-water mark."""
        self.writes_backed_up = True

    def drained(self) -> None:
        """The write buffer fell below its low-water mark: what was owed has gone out."""
        self.writes_backed_up = False
        self._pending_control = 0

    def control_frame(self, count: int = 1) -> bool:
        """``count`` frames are owed to the peer: ACKs, or answers the proxy made itself."""
        if not self.writes_backed_up:
            return False
        self._pending_control += count
        return self._pending_control > self._limits.max_pending_control_frames

    def client_reset(self, now: float) -> bool:
        """The client reset a stream the proxy was still working on, at time ``now``."""
        limits = self._limits
        elapsed = now - self._reset_time
        self._reset_time = now
        level = self._reset_level
        if elapsed > 0.0:
            level = max(0.0, level - elapsed * limits.reset_rate)
        level += 1.0
        self._reset_level = level
        return level > limits.reset_burst
