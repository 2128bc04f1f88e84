"""Stop sequences on streamed text. Tokens decode to pieces that can split a stop sequence
anywhere, so text that might be the start of one is held back until the next piece decides."""

from __future__ import annotations

from collections.abc import Sequence


class StopSequenceMatcher:
    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop_sequences if s)
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is safe to emit now. After a stop sequence, `stopped` is True and the
        stop sequence itself and everything after it are dropped."""
        if self.stopped:
            return ""
        self._pending += piece
        if not self._stops:
            emitted, self._pending = self._pending, ""
            return emitted
        hits = [i for i in (self._pending.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            emitted, self._pending = self._pending[: min(hits)], ""
            return emitted
        hold = self._held_back_length()
        cut = len(self._pending) - hold
        emitted, self._pending = self._pending[:cut], self._pending[cut:]
        return emitted

    def flush(self) -> str:
        """What was held back, once no more text will come."""
        emitted, self._pending = ("" if self.stopped else self._pending), ""
        return emitted

    def _held_back_length(self) -> int:
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:length]):
                    longest = length
                    break
        return longest
