"""Crawl files -> WARC records, one gzip member at a time, every read capped.

Common Crawl writes one record per gzip member. FastWARC (like warcio) trusts each
record's Content-Length across the whole stream, so one lying length swallows every
record it claims, and an oversized record is read into memory whole. Here the member
is the unit: each one is inflated on its own (ISA-L, the same API as zlib) in bounded
chunks, a record never runs past the end of its member, and whatever goes wrong costs
only that member's record. It is counted in `Stats.errors` by kind, with the input and
the offset, and reading resumes at the next member:

- `gzip`: bad deflate data, a CRC mismatch, or junk between members; the next member
  is found by its gzip header (checked by inflating its first bytes into `WARC/`).
- `truncated_member`: the file ends inside a member, after a whole record.
- `truncated_record`: fewer bytes than the record's Content-Length (a lying length, or
  a file cut short); the bytes up to the member's end are still handed on, flagged.
- `bad_length`: uncompressed files: the bytes after the payload are not the record
  end; reading resumes at the next `WARC/` header.
- `not_warc`: a member (or, uncompressed, a stretch) that holds no WARC header.
- `too_large`: a payload over `max_record_bytes`; skipped without being kept.
- `member_too_large`: more than `max_inflate_bytes` inflated for one record
  (decompression bombs); the rest of the member is abandoned.

Uncompressed files are read as one long member; there a lying length can only be
recovered from when the next record header lies within `max_record_bytes`. Memory per
record is a small multiple of `max_record_bytes` whatever the input (docs/errors.md).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from typing import NamedTuple

from isal import isal_zlib

from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.compiled import hot as _hot

_MAGIC = b"\x1f\x8b\x08"
_RAW_CHUNK = 1 << 20  # compressed bytes read from the file at a time
_OUT_CHUNK = 1 << 20  # most bytes inflated by one call (bounds memory while skipping)
# Compressed bytes first offered to a new member: most WAT members are small (median 0.9 KB in
# the real 2014 WAT, 0.7 KB in the bench corpus, 85 % under 1.5 KB), and whatever the window holds
# past a member's end is copied out again (unused_data), so a tight window reads faster (the bench
# corpus: 7 % less reader CPU than 4 KB); bigger members take a second call.
_FIRST_WINDOW = 1536
_FAST_INPUT = 1 << 16  # compressed bytes the fast path offers a member (larger ones take the general path)
MAX_HEADER_BYTES = 1 << 16  # a WARC header block longer than this is not a WARC header
_ZERRORS = (isal_zlib.error, ValueError)

_CLEN = re.compile(rb"\nContent-Length:[ \t]*([0-9]+)", re.IGNORECASE)
_TYPE = re.compile(rb"\nWARC-Type:[ \t]*([^\r\n]*)", re.IGNORECASE)
_NEWLINES = re.compile(rb"[\r\n]*").match


class Caps(NamedTuple):
    """What one record may cost in memory (from ExtractConfig)."""

    max_record_bytes: int
    max_inflate_bytes: int


class RawRecord(NamedTuple):
    offset: int  # gzip: where its member starts in the file; plain: where its header starts
    rtype: str  # WARC-Type, lower case ("" when missing)
    header: bytes  # the header block, version line included, without the blank line
    payload: bytes | memoryview  # a view of its member on the fast path (no copy)
    truncated: bool  # shorter than its Content-Length (counted as truncated_record already)
    flags: int = -1  # metadata records read in C: `_hotloop.flags`' bits for the payload (-1: not scanned)
    base_at: int = -1  # and where its first "Base" is


_HEADER_RES: dict[str, typing.Callable] = {}


def header_value(header: bytes, name: str) -> str | None:
    """One WARC header's value (first occurrence, case-insensitive name), stripped."""
    search = _HEADER_RES.get(name)
    if search is None:
        search = _HEADER_RES[name] = re.compile(b"\n" + re.escape(name.encode()) + rb":[ \t]*([^\r\n]*)",
                                                re.IGNORECASE).search
    m = search(header)
    return m.group(1).decode("utf-8", "replace").strip() if m else None


class _Source:
    """The bytes of a file as members: gzip members inflated, or the plain file as one."""

    def __init__(self, fileobj: typing.BinaryIO) -> None:
        self.f = fileobj
        self.buf = b""  # raw bytes read but not consumed
        self.p = 0  # consumed prefix of buf
        self.base = 0  # file offset of buf[0]
        self.file_eof = False
        self.gz: bool | None = None
        self.d: typing.Any = None  # the current member's decompressor; True: plain file; None: ended
        self.member_start = 0
        self.window = _FIRST_WINDOW
        self.out = b""  # member bytes produced but not yet consumed
        self.o = 0
        self.out_base = 0  # plain files: file offset of out[0]
        self.inflated = 0  # bytes inflated for the current record
        self.problem: tuple[str, str] | None = None  # why the current member ended early

    # -- raw bytes ------------------------------------------------------------------

    def _more(self) -> bool:
        if self.file_eof:
            return False
        data = self.f.read(_RAW_CHUNK)
        if not data:
            self.file_eof = True
            return False
        if self.p:
            self.base += self.p
            self.buf = self.buf[self.p :] + data
            self.p = 0
        else:
            self.buf = self.buf + data if self.buf else data
        return True

    def _have(self, n: int) -> bool:
        while len(self.buf) - self.p < n:
            if not self._more():
                return False
        return True

    def fast_ready(self) -> bool:
        """The fast paths may start a member here: `_FAST_INPUT` bytes are buffered, or the file
        has no more (then whatever is left)."""
        return len(self.buf) - self.p >= _FAST_INPUT or self._have(_FAST_INPUT) or self.p < len(self.buf)

    @property
    def pos(self) -> int:
        """File offset of the next raw byte."""
        return self.base + self.p

    # -- members --------------------------------------------------------------------

    def begin(self, stats: Stats, source: str) -> int | None:
        """Start the next member; its offset, or None at the end of the file."""
        self.out, self.o, self.problem, self.inflated = b"", 0, None, 0
        if not self._have(1):
            return None
        if self.gz is None:
            self.gz = self._have(3) and self.buf[self.p : self.p + 3] == _MAGIC
        if not self.gz:
            self.out_base = self.pos
            self.d = True
            return self.pos
        if not (self._have(3) and self.buf[self.p : self.p + 3] == _MAGIC):
            start = self.pos
            found = self._resync(self.p + 1)
            stats.error("gzip", input=source, message=f"offset {start}: {self.pos - start} bytes "
                        f"that are no gzip member{'' if found else ' (up to the end)'}")
            if not found:
                return None
        self.d = isal_zlib.decompressobj(31)
        self.window = _FIRST_WINDOW
        self.member_start = self.pos
        return self.pos

    def _resync(self, start: int) -> bool:
        """Move to the first gzip header at or after buf[start] whose first bytes inflate to `WARC/`."""
        self.p = min(start, len(self.buf))
        while True:
            i = self.buf.find(_MAGIC, self.p)
            if i < 0:
                self.p = max(self.p, len(self.buf) - 2)
                if not self._more():
                    self.p = len(self.buf)
                    return False
                continue
            self.p = i
            self._have(1024)
            try:
                head = isal_zlib.decompressobj(31).decompress(self.buf[self.p : self.p + 1024], 5)
            except _ZERRORS:
                head = b""
            if head and head == b"WARC/"[: len(head)]:
                return True
            self.p += 1

    def _produce(self, limit: int) -> bytes:
        """Up to `limit` more bytes of the current member (b"" when it has ended)."""
        d = self.d
        if d is None:
            return b""
        if d is True:  # plain file
            if self.p >= len(self.buf) and not self._more():
                self.d = None
                return b""
            data = self.buf[self.p : self.p + limit]
            self.p += len(data)
            return data
        while True:
            if self.p >= len(self.buf) and not self._more():
                self.d = None
                self.problem = ("truncated_member", "the file ends inside this gzip member")
                return b""
            chunk = memoryview(self.buf)[self.p : self.p + self.window]
            try:
                # deflate inflates at most 1032:1, so a small window needs no output limit
                # (faster with ISA-L); larger ones are capped at `limit`
                data = d.decompress(chunk) if len(chunk) <= _FIRST_WINDOW else d.decompress(chunk, limit)
            except _ZERRORS as exc:
                self.d = None
                self.problem = ("gzip", f"bad gzip data: {exc}")
                self._resync(max(self.p, self.member_start + 1))
                return b""
            if d.eof:
                self.p += len(chunk) - len(d.unused_data)
                self.d = None
            else:
                self.p += len(chunk) - len(d.unconsumed_tail)
                self.window = min(self.window * 4, _RAW_CHUNK)
            if data or self.d is None:
                return data

    def _fill(self, need: int, cap: int) -> bool:
        """Make `need` unconsumed bytes available in `out` (False: the member ended first)."""
        if len(self.out) - self.o >= need:
            return True
        if self.d is None:
            return False
        while len(self.out) - self.o < need:
            if self.inflated > cap and self.d is not True:
                self.problem = ("member_too_large", f"inflated past max_inflate_bytes={cap}")
                self.d = None
                self.out, self.o = b"", 0
                self._resync(max(self.p, self.member_start + 1))
                return False
            data = self._produce(max(_OUT_CHUNK, need - (len(self.out) - self.o)))
            if not data:
                return False
            self.inflated += len(data)
            if self.o:
                if self.d is True or not self.gz:
                    self.out_base += self.o
                self.out = self.out[self.o :] + data
                self.o = 0
            else:
                self.out = self.out + data if self.out else data
        return True

    def whole(self, limit: int) -> bool:
        """Inflate the member just begun into `out`, up to about `limit` bytes; True if it
        ended cleanly within that (the common case: one record per member)."""
        parts = []
        total = 0
        while total <= limit:
            data = self._produce(_OUT_CHUNK)
            if not data:
                break
            parts.append(data)
            total += len(data)
        self.out = parts[0] if len(parts) == 1 else b"".join(parts)
        self.o = 0
        self.inflated = total
        return self.d is None and self.problem is None

    # -- record framing ------------------------------------------------------------

    def skip_newlines(self, cap: int) -> None:
        while True:
            self.o = _NEWLINES(self.out, self.o).end()
            if self.o < len(self.out) or not self._fill(1, cap):
                return

    def header(self, cap: int) -> bytes | None:
        """The next header block of this member (consumed), or None (member ended, or none)."""
        while True:
            lim = self.o + MAX_HEADER_BYTES
            i = self.out.find(b"\r\n\r\n", self.o, lim)
            j = self.out.find(b"\n\n", self.o, i if i >= 0 else lim)  # LF-only headers (quirk)
            if j >= 0:
                hdr = self.out[self.o : j]
                self.o = j + 2
                return hdr
            if i >= 0:
                hdr = self.out[self.o : i]
                self.o = i + 4
                return hdr
            have = len(self.out) - self.o
            if have >= MAX_HEADER_BYTES or not self._fill(have + 1, cap):
                return None

    def read(self, n: int, cap: int) -> bytes:
        self._fill(n, cap)
        data = self.out[self.o : self.o + n]
        self.o += len(data)
        return data

    def skip(self, n: int, cap: int) -> int:
        """Discard up to n bytes in bounded chunks; how many were there."""
        done = 0
        while done < n:
            if len(self.out) == self.o and not self._fill(1, cap):
                break
            take = min(n - done, len(self.out) - self.o)
            self.o += take
            done += take
        return done

    def leftover(self) -> int:
        return len(self.out) - self.o

    def plain_offset(self) -> int:
        return self.out_base + self.o

    def unread(self, data: bytes) -> None:
        self.out_base = self.plain_offset() - len(data)
        self.out = data + self.out[self.o :]
        self.o = 0

    def find_warc(self, cap: int) -> bool:
        """Uncompressed files: move to the next line that starts `WARC/`."""
        while True:
            i = self.out.find(b"\nWARC/", self.o)
            if i >= 0:
                self.o = i + 1
                return True
            self.o = max(self.o, len(self.out) - 5)
            if not self._fill(len(self.out) - self.o + 1, cap):
                return False


def _rtype(hdr: bytes) -> str:
    k = hdr.find(b"\r\nWARC-Type: ")  # as every writer spells it; else any case and spacing
    if k >= 0:
        e = hdr.find(b"\r", k + 13)
        value = hdr[k + 13 : e if e >= 0 else len(hdr)]
        if value.isalpha() and value.islower():
            return value.decode("ascii")
    t = _TYPE.search(hdr)
    return t.group(1).strip().lower().decode("ascii", "replace") if t else ""


def _content_length(hdr: bytes) -> int:
    """Content-Length of a header block; -1 when it has none."""
    k = hdr.find(b"\r\nContent-Length: ")
    if k >= 0:
        e = hdr.find(b"\r", k + 18)
        value = hdr[k + 18 : e if e >= 0 else len(hdr)]
        if value.isdigit():
            return int(value)
    m = _CLEN.search(hdr)
    return int(m.group(1)) if m else -1


def _tail_ok(tail: bytes) -> int:
    """How many bytes after a payload belong to the record end (-1: not a record end)."""
    k = 0
    while k < len(tail) and tail[k] in (10, 13):
        k += 1
    return k if k == len(tail) or k >= 2 else -1


def iter_records(fileobj: typing.BinaryIO, source: str, caps: Caps, stats: Stats,
                 skip_plain_metadata: dict[str, int] | None = None) -> Iterator[RawRecord]:
    """Every readable WARC record of a file (gzip per record, one gzip stream, or plain).

    `skip_plain_metadata` (the compiled engine only): metadata records whose payload holds no
    `IMG@` (two of three WAT records) are not yielded, only counted in it under "metadata",
    wherever the C reader reads them (every member but the odd ones it leaves to Python)."""
    src = _Source(fileobj)
    cap = caps.max_inflate_bytes if caps.max_inflate_bytes > 0 else 1 << 62
    maxrec = caps.max_record_bytes
    fast_limit = min(maxrec + MAX_HEADER_BYTES, cap)
    error = stats.error
    decompressobj = isal_zlib.decompressobj
    head = _hot.record if _hot is not None else None
    members = _hot.members if _hot is not None else None
    skip = skip_plain_metadata is not None
    while True:
        if members is not None and src.gz and src.fast_ready():
            # the fast path below for many members in one C call (the common case: every member
            # of a Common Crawl file); it stops at the first member the Python code must read
            p0 = src.p
            recs, src.p, skipped = members(src.buf, p0, src.file_eof, decompressobj, maxrec, MAX_HEADER_BYTES,
                                           fast_limit, skip, _FIRST_WINDOW, _FAST_INPUT)
            if skipped:
                skip_plain_metadata["metadata"] = skip_plain_metadata.get("metadata", 0) + skipped  # type: ignore[index]
            base = src.base
            for off, rtype, hdr, payload, flags, base_at in recs:
                yield RawRecord(base + off, rtype if rtype is not None else _rtype(hdr), hdr, payload, False,
                                flags, base_at)
            if src.p != p0:
                continue
        if src.gz and src.fast_ready():
            # fastest path, no method calls: a member whose first 64 KB inflate to its end and
            # hold one well-formed record (nearly every member of a Common Crawl file); anything
            # else falls through to the general path below, which starts this member again
            buf, p = src.buf, src.p
            if buf.startswith(_MAGIC, p):
                view = memoryview(buf)
                d = decompressobj(31)
                first = view[p : p + _FIRST_WINDOW]
                try:
                    out = d.decompress(first)
                    used = len(first)
                    if not d.eof:
                        rest = view[p + _FIRST_WINDOW : p + _FAST_INPUT]
                        out += d.decompress(rest, fast_limit)
                        used += len(rest)
                except _ZERRORS:
                    out = b""
                if d.eof and head is not None:
                    h = head(out, maxrec, MAX_HEADER_BYTES)  # the common case below, in C
                    if h is not None:
                        src.p = p + used - len(d.unused_data)
                        yield RawRecord(src.base + p, h[2] if h[2] is not None else _rtype(h[0]), h[0], h[1], False)
                        continue
                if d.eof and out.startswith(b"WARC/"):
                    nl = out.find(b"\n", 0, 32)
                    if nl > 0 and out[nl - 1] == 13:  # CRLF header (else LF-only: general path)
                        i = out.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES)
                        hdr = out[:i] if i > 0 else b""
                        clen = _content_length(hdr)
                        end = i + 4
                        stop = end + clen
                        if i > 0 and 0 <= clen <= maxrec and stop <= len(out) and (
                                stop == len(out) or not out[stop:].strip(b"\r\n")):
                            src.p = p + used - len(d.unused_data)
                            yield RawRecord(src.base + p, _rtype(hdr), hdr, out[end:stop], False)
                            continue
        member = src.begin(stats, source)
        if member is None:
            break
        if src.gz and src.whole(fast_limit):
            # fast path: the member holds exactly one well-formed record
            out = src.out
            o = _NEWLINES(out).end()
            lim = o + MAX_HEADER_BYTES
            i = out.find(b"\r\n\r\n", o, lim)
            j = out.find(b"\n\n", o, i if i >= 0 else lim)
            end = j + 2 if j >= 0 else i + 4 if i >= 0 else -1
            if end > 0 and out.startswith(b"WARC/", o):
                hdr = out[o : end - (2 if j >= 0 else 4)]
                m = _CLEN.search(hdr)
                if m is not None:
                    clen = int(m.group(1))
                    stop = end + clen
                    if clen <= maxrec and stop <= len(out) and _NEWLINES(out, stop).end() == len(out):
                        yield RawRecord(member, _rtype(hdr), hdr, out[end:stop], False)
                        continue
        while True:
            src.inflated = 0
            src.skip_newlines(cap)
            offset = member if src.gz else src.plain_offset()
            hdr = src.header(cap)
            if hdr is None or not hdr.startswith(b"WARC/"):
                if src.problem is not None or (hdr is None and not src.leftover()):
                    break  # the member's end (a problem is counted below)
                error("not_warc", input=source, message=f"offset {offset}: no WARC header")
                if not src.gz and src.find_warc(cap):
                    continue
                break
            m = _CLEN.search(hdr)
            if m is None:
                error("not_warc", input=source, message=f"offset {offset}: WARC header without Content-Length")
                if not src.gz and src.find_warc(cap):
                    continue
                break
            clen = int(m.group(1))
            payload = src.read(clen if clen <= maxrec else maxrec + 1, cap)
            if not src.gz and (len(payload) < clen or len(payload) > maxrec):
                i = payload.find(b"\r\n\r\nWARC/")
                if i >= 0:  # uncompressed, a lying length: the next record is in sight
                    error("bad_length", input=source, message=f"offset {offset}: Content-Length {clen} "
                          "runs into the next record")
                    src.unread(payload[i + 4 :])
                    yield RawRecord(offset, _rtype(hdr), hdr, payload[:i], True)
                    continue
            if len(payload) > maxrec:
                got = len(payload) + src.skip(clen - len(payload), cap)
                if src.problem is None:
                    error("too_large", input=source, message=f"offset {offset}: Content-Length {clen} > "
                          f"max_record_bytes {maxrec} ({got} bytes there)")
                if got < clen:
                    break
                continue
            if len(payload) < clen:
                # a lying length, or a file cut short: the record ends with its member; its bytes
                # are still worth reading (an HTML page up to the cut), flagged as truncated
                if src.problem is not None and src.problem[0] != "truncated_member":
                    break  # corrupt data or a bomb: counted below, nothing of it is kept
                src.problem = None
                error("truncated_record", input=source,
                      message=f"offset {offset}: Content-Length {clen}, only {len(payload)} bytes")
                yield RawRecord(offset, _rtype(hdr), hdr, payload, True)
                break
            tail = src.read(4, cap)
            k = _tail_ok(tail)
            if k < 0 and src.gz and src.out.find(b"\nWARC/", src.o - len(tail)) < 0:
                # a length shorter than its member: the record is what the length says (its
                # reader counts what it cannot parse); the rest of the member is drained below
                yield RawRecord(offset, _rtype(hdr), hdr, payload, False)
                break
            if k < 0:
                # a length shorter than the record: the rest of it (or the next record) follows
                error("bad_length", input=source,
                      message=f"offset {offset}: Content-Length {clen} is not followed by the record end")
                blob = payload + tail
                i = blob.find(b"\r\n\r\nWARC/")
                if i >= 0:  # a length that runs into the next record: this one ends before it
                    src.unread(blob[i + 4 :])
                    yield RawRecord(offset, _rtype(hdr), hdr, blob[:i], True)
                    continue
                i = blob.find(b"\nWARC/")
                if i >= 0:
                    src.unread(blob[i + 1 :])
                    continue
                src.unread(tail)
                if not src.gz and src.find_warc(cap):
                    continue
                break
            if k < len(tail):
                src.unread(tail[k:])
            yield RawRecord(offset, _rtype(hdr), hdr, payload, False)
        if src.problem is None and src.gz and src.d is not None:
            src.skip(1 << 62, cap)  # bytes after a member's last record: drained, bounded by the cap
        if src.problem is not None:
            kind, why = src.problem
            error(kind, input=source, message=f"offset {member}: {why}")
