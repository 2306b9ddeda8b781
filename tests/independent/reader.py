#!/usr/bin/env python3
"""An independent reader of replog vaults, written from FORMAT.md alone.

It shares no code with the Rust crates: it was written by reading FORMAT.md, not the code, so
that it checks the spec against the code. CI runs it: the test `tests/tests/on_each_backend/independent_reader.rs`
(package replog-tests, part of `cargo test --workspace`) builds vaults through the library, runs
this reader on them and requires every disk at every point to match the Rust reader byte for
byte. When they disagree, either FORMAT.md or the code is wrong: fix the one that is.

Python 3.11, standard library only (LZ4 blocks are decoded here, in `lz4_block_decompress`).

Scope: local vaults. It reads VAULT, MANIFEST, the base images with their checksum tables, and
the journal (sealed segments through their footers and trailers, the open segment by scanning
it). It ignores `index/` (checkpoints are derived data: replaying the journal from the base reads
the same), `digests/` (advisory), `leases/`, `remote/` and `quarantine/`.

    reader.py VAULT --list                 the offered points, as JSON
    reader.py VAULT --point ID --out DIR   DIR/<disk name>.raw for each disk of point ID
    reader.py VAULT --all --out DIR        DIR/<point id>/<disk name>.raw for every offered point

Exit status: 0 done, 1 bad usage, 2 the vault is damaged or breaks a rule of FORMAT.md.
"""

import argparse
import json
import os
import struct
import sys
import zlib

PAGE = 4096
RECORD_HEADER = 64
TRAILER = 64
MIB = 1 << 20
RECORD_DATA_MAX = 4 * MIB
KIND_WRITE, KIND_ZERO, KIND_POINT, KIND_FOOTER = 1, 2, 3, 4
FLAG_LZ4 = 1
POINT_FLAG_CHAIN = 1
SEGMENT_FLAG_CHAIN = 1
TABLE_ENTRIES = 511


class Damage(Exception):
    """The vault breaks a rule of FORMAT.md; the message names the file and offset."""


def fail(where, offset, what):
    raise Damage(f"{where}: at offset {offset}: {what}")


def crc(data, seed=0):
    # CRC32 (IEEE); zlib.crc32 continues from `seed` as crc32fast's new_with_initial does.
    return zlib.crc32(data, seed) & 0xFFFFFFFF


def u(fmt, data, offset):
    return struct.unpack_from("<" + fmt, data, offset)


def zeros(data, start, end, where, offset_base=0):
    chunk = data[start:end]
    if chunk.count(0) != len(chunk):
        first = next(i for i, b in enumerate(chunk) if b)
        fail(where, offset_base + start + first, "a reserved byte is not zero")


def check_page(page, where, seed):
    if len(page) != PAGE:
        fail(where, 0, f"a page is {len(page)} bytes, not 4096")
    (stored,) = u("I", page, PAGE - 4)
    if stored != crc(page[: PAGE - 4], seed):
        fail(where, PAGE - 4, "the page CRC does not match")


def read_file(path, where):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Damage(f"{where}: cannot be read: {e}") from e


# ---------------------------------------------------------------------------------------------
# LZ4 block format: sequences of (token, literals, offset, match), the last one literals only.


def lz4_block_decompress(src, size):
    """Decodes one raw LZ4 block (no frame, no size prefix) that must produce `size` bytes."""
    dst = bytearray()
    i, n = 0, len(src)
    while True:
        if i >= n:
            raise ValueError("the block ends inside a sequence")
        token = src[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                if i >= n:
                    raise ValueError("the block ends inside a literal length")
                b = src[i]
                i += 1
                literals += b
                if b != 255:
                    break
        if i + literals > n:
            raise ValueError("literals run past the end of the block")
        dst += src[i : i + literals]
        i += literals
        if i == n:
            break
        if i + 2 > n:
            raise ValueError("the block ends inside a match offset")
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(dst):
            raise ValueError(f"match offset {offset} with {len(dst)} bytes produced")
        match = token & 15
        if match == 15:
            while True:
                if i >= n:
                    raise ValueError("the block ends inside a match length")
                b = src[i]
                i += 1
                match += b
                if b != 255:
                    break
        match += 4
        start = len(dst) - offset
        if offset >= match:
            dst += dst[start : start + match]
        else:
            pattern = bytes(dst[start:])
            dst += (pattern * (match // offset + 1))[:match]
        if len(dst) > size:
            raise ValueError(f"the block produces more than {size} bytes")
    if len(dst) != size:
        raise ValueError(f"the block produces {len(dst)} bytes, not {size}")
    return bytes(dst)


# ---------------------------------------------------------------------------------------------
# VAULT and MANIFEST


def read_vault_header(vault):
    page = read_file(os.path.join(vault, "VAULT"), "VAULT")
    if page[:8] != b"RPLG-VLT":
        fail("VAULT", 0, "not a replog vault header")
    check_page(page, "VAULT", 0)
    version, header_bytes = u("II", page, 8)
    if version != 1 or header_bytes != PAGE:
        fail("VAULT", 8, f"version {version}, header bytes {header_bytes}")
    vault_id = page[16:32]
    (block_bytes,) = u("I", page, 40)
    compression = page[44]
    zeros(page, 45, 48, "VAULT")
    (segment_bytes,) = u("Q", page, 48)
    zeros(page, 56, PAGE - 4, "VAULT")
    if block_bytes & (block_bytes - 1) or not 4096 <= block_bytes <= 4 * MIB:
        fail("VAULT", 40, f"block size {block_bytes}")
    if compression not in (0, 1):
        fail("VAULT", 44, f"compression {compression}")
    if not 64 * 1024 <= segment_bytes <= 4 << 30:
        fail("VAULT", 48, f"segment size {segment_bytes}")
    return {
        "vault_id": vault_id,
        "seed": crc(vault_id),
        "block_bytes": block_bytes,
        "compression": compression,
    }


class Cursor:
    def __init__(self, data, where, base=0):
        self.data, self.pos, self.where, self.base = data, 0, where, base

    def take(self, n):
        if self.pos + n > len(self.data):
            fail(self.where, self.base + self.pos, f"{n} bytes needed, the structure ends")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, fmt):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def zero(self, n):
        at = self.pos
        zeros(self.take(n), 0, n, self.where, self.base + at)


def read_manifest(vault, vh):
    where = "MANIFEST"
    data = read_file(os.path.join(vault, "MANIFEST"), where)
    if len(data) < 32 or data[:8] != b"RPLG-MAN":
        fail(where, 0, "not a replog manifest")
    version, reserved, body_bytes, body_crc, header_crc = u("IIQII", data, 8)
    if header_crc != crc(data[:28]):
        fail(where, 28, "the header CRC does not match")
    if version not in (1, 2, 4, 5) or reserved != 0:
        fail(where, 8, f"version {version}")
    if 32 + body_bytes != len(data) or body_bytes > 1 << 30:
        fail(where, 16, f"body of {body_bytes} bytes in a file of {len(data)}")
    body = data[32:]
    if crc(body) != body_crc:
        fail(where, 24, "the body CRC does not match")
    c = Cursor(body, where, 32)
    m = {"vault_id": c.take(16), "generation": c.int("Q"), "base_lsn": c.int("Q")}
    if m["vault_id"] != vh["vault_id"]:
        fail(where, 32, "the manifest names another vault")
    if c.int("I") != 0:
        fail(where, 32 + 32, "flags are not zero")
    m["disks"] = [read_disk_entry(c) for _ in range(c.int("I"))]
    m["segments"] = [read_segment_entry(c, version) for _ in range(c.int("I"))]
    m["points"] = [read_manifest_point(c) for _ in range(c.int("I"))]
    m["retired"] = set()
    if version == 4 and not any(s["released"] for s in m["segments"]):
        fail(where, 32, "a version 4 manifest with no released prefix")
    if version == 5:
        # Dead ranges: records no offered point reads, so a reader that reads records only
        # through the views' pieces never meets one; only their length matters here.
        count = c.int("I")
        if count == 0:
            fail(where, 32 + c.pos - 4, "a version 5 manifest with no dead range")
        c.take(40 * count)
    # Versions 4 and 5 (without a resize, which this reader does not know) have the lifecycle
    # section when bytes are left.
    if version == 2 or (version in (4, 5) and c.pos < len(body)):
        flags = c.int("I")
        pins, retired = c.int("I"), c.int("I")
        c.zero(4)
        if flags & ~3:
            fail(where, 32 + c.pos, f"lifecycle flags {flags:#x}")
        if flags & 1:
            c.take(40)
        c.take(8 * pins)
        m["retired"] = {c.int("Q") for _ in range(retired)}
        if flags & 2:
            # The migration record: only its length matters to a reader.
            c.take(2)
            out_dir_len, disk_count = c.int("H"), c.int("I")
            c.take(32 + out_dir_len + 32 * disk_count)
    if c.pos != len(body):
        fail(where, 32 + c.pos, "bytes follow the end of the body")
    check_manifest_order(m)
    return m


def read_disk_entry(c):
    d = {"disk_id": c.int("I")}
    name_len = c.int("B")
    c.zero(3)
    d["disk_bytes"] = c.int("Q")
    d["added_lsn"] = c.int("Q")
    d["base_generation"] = c.int("Q")
    d["base_header_crc"] = c.int("I")
    c.zero(4)
    d["name"] = c.take(name_len).decode("utf-8")
    return d


def read_segment_entry(c, version):
    s = {
        "segment_id": c.int("Q"),
        "first_lsn": c.int("Q"),
        "last_lsn": c.int("Q"),
        "footer_offset": c.int("Q"),
        "file_bytes": c.int("Q"),
        "footer_crc": c.int("I"),
        "sealed": c.int("B"),
    }
    flags = c.int("B")
    if flags & ~1 or (flags and (version not in (4, 5) or not s["sealed"])):
        fail("MANIFEST", 32 + c.pos - 1, f"segment flags {flags:#x}")
    s["released"] = flags == 1
    c.zero(2)
    return s


def read_manifest_point(c):
    p = {
        "lsn": c.int("Q"),
        "segment_id": c.int("Q"),
        "record_offset": c.int("Q"),
        "point_id": c.int("Q"),
        "time_unix_ns": c.int("q"),
        "kind": c.int("B"),
    }
    flags = c.int("B")
    if flags & ~POINT_FLAG_CHAIN:
        fail("MANIFEST", c.pos - 1, "unknown point flags")
    p["label"] = c.take(c.int("H")).decode("utf-8")
    p["chain"] = c.take(32) if flags & POINT_FLAG_CHAIN else None
    return p


def check_manifest_order(m):
    ids = [d["disk_id"] for d in m["disks"]]
    if ids != sorted(set(ids)):
        fail("MANIFEST", 0, "disks are not in increasing id order")
    segs = m["segments"]
    for i, s in enumerate(segs):
        if not s["sealed"] and i != len(segs) - 1:
            fail("MANIFEST", 0, f"segment {s['segment_id']} is open but not the last")
        if i and s["first_lsn"] != segs[i - 1]["last_lsn"] + 1:
            fail("MANIFEST", 0, f"segment {s['segment_id']} does not continue the LSNs")
    if segs and segs[0]["first_lsn"] > m["base_lsn"] + 1:
        fail("MANIFEST", 0, "the journal starts after the base")
    keys = [(p["lsn"], p["point_id"]) for p in m["points"]]
    if keys != sorted(keys):
        fail("MANIFEST", 0, "points are not in LSN order")


# ---------------------------------------------------------------------------------------------
# Base images


def read_base(vault, vh, m, disk):
    rel = f"bases/{disk['disk_id']}.{disk['base_generation']}.base"
    data = read_file(os.path.join(vault, rel), rel)
    seed = vh["seed"]
    header = data[:PAGE]
    if header[:8] != b"RPLG-BAS":
        fail(rel, 0, "not a replog base image")
    check_page(header, rel, seed)
    if u("I", header, PAGE - 4)[0] != disk["base_header_crc"]:
        fail(rel, PAGE - 4, "the header CRC is not the one the manifest names")
    version, header_bytes = u("II", header, 8)
    disk_id, block_bytes, generation, disk_bytes, base_lsn = u("IIQQQ", header, 32)
    data_offset, table_offset, chunk_count, table_crc = u("QQQI", header, 64)
    zeros(header, 92, PAGE - 4, rel)
    if (version, header_bytes, header[16:32]) != (1, PAGE, vh["vault_id"]):
        fail(rel, 8, "version, header size or vault id is wrong")
    if (disk_id, disk_bytes, generation) != (
        disk["disk_id"],
        disk["disk_bytes"],
        disk["base_generation"],
    ):
        fail(rel, 32, "disk id, size or generation differs from the manifest")
    # FORMAT.md: the header's base_lsn is at most the manifest's, and equals it for a disk
    # added at or before the manifest's base_lsn.
    if base_lsn > m["base_lsn"] or (
        disk["added_lsn"] <= m["base_lsn"] and base_lsn != m["base_lsn"]
    ):
        fail(rel, 56, f"base_lsn {base_lsn} with the manifest at {m['base_lsn']}")
    chunks = -(-disk_bytes // block_bytes)
    data_bytes = -(-disk_bytes // block_bytes) * block_bytes
    if (data_offset, table_offset, chunk_count) != (PAGE, PAGE + data_bytes, chunks):
        fail(rel, 64, f"layout {data_offset}, {table_offset}, {chunk_count}")
    pages = -(-chunks // TABLE_ENTRIES)
    if len(data) < table_offset + pages * PAGE:
        fail(rel, len(data), "the file is shorter than its header says")
    content = data[data_offset : data_offset + disk_bytes]
    running = seed
    for p in range(pages):
        at = table_offset + p * PAGE
        page = data[at : at + PAGE]
        check_page(page, rel, seed)
        if u("I", page, 4088)[0] != p:
            fail(rel, at + 4088, f"table page {u('I', page, 4088)[0]} where page {p} belongs")
        running = crc(page[PAGE - 4 :], running)
        entries = min(TABLE_ENTRIES, chunks - p * TABLE_ENTRIES)
        zeros(page, entries * 8, 4088, rel, at)
        for e in range(entries):
            k = p * TABLE_ENTRIES + e
            chunk_crc, flags = u("II", page, e * 8)
            chunk = content[k * block_bytes : (k + 1) * block_bytes]
            if flags & ~1:
                fail(rel, at + e * 8 + 4, f"chunk flags {flags:#x}")
            if crc(chunk) != chunk_crc:
                fail(rel, data_offset + k * block_bytes, f"chunk {k} fails its CRC")
            if flags & 1 and chunk.count(0) != len(chunk):
                fail(rel, data_offset + k * block_bytes, f"chunk {k} is flagged zero")
    if running != table_crc:
        fail(rel, 88, "the table CRC does not match the table pages")
    return bytearray(content)


# ---------------------------------------------------------------------------------------------
# Journal segments


def segment_rel(segment_id):
    return f"journal/{segment_id:016x}.seg"


def read_segment_header(data, rel, vh, entry):
    header = data[:PAGE]
    if header[:8] != b"RPLG-SEG":
        fail(rel, 0, "not a replog segment")
    check_page(header, rel, vh["seed"])
    version, header_bytes = u("II", header, 8)
    segment_id, first_lsn = u("QQ", header, 32)
    (flags,) = u("I", header, 56)
    if flags & ~SEGMENT_FLAG_CHAIN:
        fail(rel, 56, "unknown segment header flags")
    # The chain's start value (60..92) when flag bit 0 is set; zeros otherwise.
    zeros(header, 92 if flags else 60, PAGE - 4, rel)
    if (version, header_bytes, header[16:32]) != (1, PAGE, vh["vault_id"]):
        fail(rel, 8, "version, header size or vault id is wrong")
    if (segment_id, first_lsn) != (entry["segment_id"], entry["first_lsn"]):
        fail(rel, 32, f"segment {segment_id} from LSN {first_lsn}, not as the manifest says")


def parse_record(data, at, rel, vh, segment_id):
    """The record at `at`, checked in place; None if it is not a valid record there."""
    if at + RECORD_HEADER > len(data):
        return None
    h = data[at : at + RECORD_HEADER]
    (stored_crc, kind, flags) = u("IBB", h, 0)
    (reserved,) = u("H", h, 6)
    lsn, seg, offset, synced_upto = u("QQQQ", h, 8)
    disk_id, stored_len, disk_offset, length = u("IIQQ", h, 40)
    end = at + RECORD_HEADER + stored_len
    if end > len(data) or reserved or seg != segment_id or offset != at:
        return None
    payload = data[at + RECORD_HEADER : end]
    if crc(h[4:] + payload, vh["seed"]) != stored_crc:
        return None
    r = {
        "crc": stored_crc,
        "kind": kind,
        "flags": flags,
        "lsn": lsn,
        "offset": at,
        "end": end,
        "synced_upto": synced_upto,
        "disk_id": disk_id,
        "stored_len": stored_len,
        "disk_offset": disk_offset,
        "length": length,
        "payload": payload,
    }
    return r if record_fields_ok(r) else None


def record_fields_ok(r):
    kind, flags, length, stored = r["kind"], r["flags"], r["length"], r["stored_len"]
    if r["synced_upto"] > r["offset"] or r["lsn"] == 0:
        return False
    if kind == KIND_WRITE:
        if flags & ~FLAG_LZ4 or not 1 <= length <= RECORD_DATA_MAX:
            return False
        return 1 <= stored <= length if flags else stored == length
    if kind == KIND_ZERO:
        return flags == 0 and 1 <= length <= RECORD_DATA_MAX and stored == 0
    if kind in (KIND_POINT, KIND_FOOTER):
        no_target = r["disk_id"] == 0 and r["disk_offset"] == 0 and length == 0
        limit = 20 + 1024 if kind == KIND_POINT else 160 * MIB
        return flags == 0 and no_target and stored <= limit
    return False


def parse_point_payload(r, rel):
    p = r["payload"]
    if len(p) < 20:
        fail(rel, r["offset"], "a point payload shorter than 20 bytes")
    point_id, time_ns, kind, flags, label_len = u("QqBBH", p, 0)
    chain_bytes = 32 if flags & POINT_FLAG_CHAIN else 0
    if flags & ~POINT_FLAG_CHAIN or kind not in (1, 2) or 20 + label_len + chain_bytes != len(p):
        fail(rel, r["offset"], "a point payload breaks its rules")
    return {
        "point_id": point_id,
        "time_unix_ns": time_ns,
        "kind": kind,
        "label": p[20:20 + label_len].decode("utf-8"),
        "chain": p[20 + label_len:] if chain_bytes else None,
        "lsn": r["lsn"],
        "record_offset": r["offset"],
    }


def read_sealed(data, rel, vh, entry, live_lsn=0):
    """Records and points of a sealed segment, from its footer (no scan). With a released dead
    prefix, the records before the base point's marker (LSN `live_lsn`) are not read."""
    footer_at, seg_id = entry["footer_offset"], entry["segment_id"]
    footer = parse_record(data, footer_at, rel, vh, seg_id)
    if footer is None or footer["kind"] != KIND_FOOTER or footer["crc"] != entry["footer_crc"]:
        fail(rel, footer_at, "no valid footer record where the manifest says")
    if footer["lsn"] != entry["last_lsn"]:
        fail(rel, footer_at, "the footer's LSN is not the segment's last LSN")
    trailer_at = footer["end"]
    trailer = data[trailer_at : trailer_at + TRAILER]
    if len(trailer) != TRAILER or trailer[:8] != b"RPLG-FTR":
        fail(rel, trailer_at, "no trailer after the footer")
    if u("I", trailer, 60)[0] != crc(trailer[:60], vh["seed"]):
        fail(rel, trailer_at + 60, "the trailer CRC does not match")
    t_seg, t_footer, t_first, t_last, t_count, t_crc = u("QQQQII", trailer, 8)
    zeros(trailer, 48, 60, rel, trailer_at)
    if (t_seg, t_footer, t_first, t_last, t_crc) != (
        seg_id,
        footer_at,
        entry["first_lsn"],
        entry["last_lsn"],
        footer["crc"],
    ):
        fail(rel, trailer_at, "the trailer does not name this segment and footer")
    if trailer_at + TRAILER != entry["file_bytes"]:
        fail(rel, trailer_at, "the trailer does not end where the manifest says")
    zeros(data, entry["file_bytes"], len(data), rel)
    records, points = parse_footer_index(data, footer, rel, vh, seg_id, live_lsn)
    check_packed(records + points, footer_at, entry, rel, t_count)
    return records, points


def parse_footer_index(data, footer, rel, vh, seg_id, live_lsn=0):
    """The footer's records, each read and checked; those before `live_lsn` (a released dead
    prefix, which may be a hole) are taken from the footer alone."""
    c = Cursor(footer["payload"], rel, footer["offset"] + RECORD_HEADER)
    extent_count, point_count = c.int("I"), c.int("I")
    records = []
    for _ in range(extent_count):
        lsn, offset, disk_offset, length = (c.int("Q") for _ in range(4))
        disk_id, stored_len, record_crc = c.int("I"), c.int("I"), c.int("I")
        kind, flags = c.int("B"), c.int("B")
        c.zero(2)
        if lsn < live_lsn:
            end = offset + RECORD_HEADER + stored_len
            records.append({"lsn": lsn, "offset": offset, "end": end, "kind": kind})
            continue
        r = parse_record(data, offset, rel, vh, seg_id)
        named = (lsn, disk_offset, length, disk_id, stored_len, record_crc, kind, flags)
        if r is None or named != tuple(
            r[k]
            for k in (
                "lsn", "disk_offset", "length", "disk_id", "stored_len", "crc", "kind", "flags"
            )
        ) or kind not in (KIND_WRITE, KIND_ZERO):
            fail(rel, offset, "the record is not the one the footer indexes")
        records.append(r)
    points = []
    for _ in range(point_count):
        lsn, offset, point_id = c.int("Q"), c.int("Q"), c.int("Q")
        time_ns, kind = c.int("q"), c.int("B")
        flags = c.int("B")
        if flags & ~POINT_FLAG_CHAIN:
            fail(rel, footer["offset"], "unknown point flags in the footer")
        label = c.take(c.int("H")).decode("utf-8")
        chain = c.take(32) if flags & POINT_FLAG_CHAIN else None
        if lsn < live_lsn:
            end = offset + RECORD_HEADER + 20 + len(label.encode("utf-8")) + (32 if chain else 0)
            point = {
                "point_id": point_id, "time_unix_ns": time_ns, "kind": kind, "label": label,
                "chain": chain,
            }
            points.append({"lsn": lsn, "offset": offset, "end": end, "point": point})
            continue
        r = parse_record(data, offset, rel, vh, seg_id)
        if r is None or r["kind"] != KIND_POINT or r["lsn"] != lsn:
            fail(rel, offset, "the point record is not the one the footer indexes")
        p = parse_point_payload(r, rel)
        if (p["point_id"], p["time_unix_ns"], p["kind"], p["label"], p["chain"]) != (
            point_id, time_ns, kind, label, chain
        ):
            fail(rel, offset, "the point record differs from its footer entry")
        r["point"] = p
        points.append(r)
    if c.pos != len(c.data):
        fail(rel, footer["offset"], "bytes follow the footer index")
    return records, points


def check_packed(records, footer_at, entry, rel, count):
    """Records are back to back from 4096 to the footer, one LSN each, first..last."""
    records = sorted(records, key=lambda r: r["offset"])
    if len(records) != count:
        fail(rel, footer_at, f"{len(records)} records indexed, the trailer counts {count}")
    at, lsn = PAGE, entry["first_lsn"]
    for r in records:
        if r["offset"] != at or r["lsn"] != lsn:
            fail(rel, r["offset"], f"expected the record of LSN {lsn} at offset {at}")
        at, lsn = r["end"], lsn + 1
    if at != footer_at or lsn != entry["last_lsn"] + 1:
        fail(rel, at, "the records do not end at the footer with the last LSN")


def scan_open(data, rel, vh, entry):
    """Records and points of the open segment, scanned from 4096 to the first invalid record."""
    at, lsn = PAGE, entry["first_lsn"]
    records, points = [], []
    while True:
        r = parse_record(data, at, rel, vh, entry["segment_id"])
        if r is None or r["lsn"] != lsn or r["kind"] == KIND_FOOTER:
            break
        if r["kind"] == KIND_POINT:
            r["point"] = parse_point_payload(r, rel)
            points.append(r)
        else:
            records.append(r)
        at, lsn = r["end"], lsn + 1
    tail = data[at:]
    if tail.count(0) != len(tail):
        print(f"reader.py: {rel}: non-zero bytes after the last valid record at offset {at}",
              file=sys.stderr)
    return records, points


def read_journal(vault, vh, m):
    """Every write and zero record above base_lsn, and every point record, in LSN order."""
    records, points = [], []
    for entry in m["segments"]:
        rel = segment_rel(entry["segment_id"])
        data = read_file(os.path.join(vault, rel), rel)
        read_segment_header(data, rel, vh, entry)
        if entry["sealed"]:
            live_lsn = m["base_lsn"] if entry["released"] else 0
            if live_lsn and not any(
                p["lsn"] == live_lsn and p["segment_id"] == entry["segment_id"]
                for p in m["points"]
            ):
                fail("MANIFEST", 0, f"segment {entry['segment_id']} released without the base point")
            recs, pts = read_sealed(data, rel, vh, entry, live_lsn)
        else:
            if any(entry[k] for k in ("last_lsn", "footer_offset", "file_bytes", "footer_crc")):
                fail("MANIFEST", 0, f"open segment {entry['segment_id']} has sealed fields")
            recs, pts = scan_open(data, rel, vh, entry)
        for r in recs + pts:
            r["segment_id"] = entry["segment_id"]
        records += recs
        points += pts
    records.sort(key=lambda r: r["lsn"])
    points.sort(key=lambda r: r["lsn"])
    return [r for r in records if r["lsn"] > m["base_lsn"]], points


# ---------------------------------------------------------------------------------------------
# Points and materialization


def offered_points(m, journal_points):
    """Manifest points of sealed segments, plus points scanned from the open segment."""
    listed = {s["segment_id"] for s in m["segments"]}
    by_segment_lsn = {(r["segment_id"], r["lsn"]): r["point"] for r in journal_points}
    sealed = {s["segment_id"] for s in m["segments"] if s["sealed"]}
    out = []
    for p in m["points"]:
        if p["segment_id"] in listed:
            found = by_segment_lsn.get((p["segment_id"], p["lsn"]))
            if found is None or any(found[k] != p[k] for k in found):
                fail("MANIFEST", 0, f"point {p['point_id']} does not match its segment")
        elif p["lsn"] != m["base_lsn"]:
            fail("MANIFEST", 0, f"point {p['point_id']} names a deleted segment")
        out.append(p)
    manifest_ids = {p["point_id"] for p in m["points"]}
    for r in journal_points:
        if r["segment_id"] in sealed:
            if r["point"]["point_id"] not in manifest_ids and r["lsn"] >= m["base_lsn"]:
                fail(segment_rel(r["segment_id"]), r["offset"], "a point the manifest omits")
            continue
        out.append(dict(r["point"], segment_id=r["segment_id"]))
    out.sort(key=lambda p: p["lsn"])
    ids = [p["point_id"] for p in out]
    if ids != sorted(set(ids)):
        fail("MANIFEST", 0, "point ids do not increase with LSN")
    return [p for p in out if p["lsn"] >= m["base_lsn"] and p["point_id"] not in m["retired"]]


def apply(disks, m_disks, r):
    disk = m_disks.get(r["disk_id"])
    rel = segment_rel(r["segment_id"])
    if disk is None or r["lsn"] < disk["added_lsn"]:
        what = f"record LSN {r['lsn']} targets disk {r['disk_id']} before it exists"
        fail(rel, r["offset"], what)
    start, length = r["disk_offset"], r["length"]
    if start + length > disk["disk_bytes"]:
        fail(rel, r["offset"], "the record ends past the end of its disk")
    if r["kind"] == KIND_ZERO:
        disks[r["disk_id"]][start : start + length] = bytes(length)
        return
    payload = r["payload"]
    if r["flags"] & FLAG_LZ4:
        try:
            payload = lz4_block_decompress(payload, length)
        except ValueError as e:
            fail(rel, r["offset"] + RECORD_HEADER, f"the LZ4 block does not decode: {e}")
    disks[r["disk_id"]][start : start + length] = payload


class Vault:
    def __init__(self, path):
        self.path = path
        self.vh = read_vault_header(path)
        self.m = read_manifest(path, self.vh)
        self.records, journal_points = read_journal(path, self.vh, self.m)
        self.points = offered_points(self.m, journal_points)

    def disks_at(self, lsn):
        return [d for d in self.m["disks"] if d["added_lsn"] <= lsn]

    def materialize(self, wanted):
        """Yields (point, {disk name: bytes}) for every point in `wanted`, in LSN order."""
        m = self.m
        disks = {d["disk_id"]: read_base(self.path, self.vh, m, d) for d in m["disks"]}
        m_disks = {d["disk_id"]: d for d in m["disks"]}
        records = iter(self.records)
        pending = next(records, None)
        for p in sorted(wanted, key=lambda p: p["lsn"]):
            while pending is not None and pending["lsn"] <= p["lsn"]:
                apply(disks, m_disks, pending)
                pending = next(records, None)
            yield p, {d["name"]: bytes(disks[d["disk_id"]]) for d in self.disks_at(p["lsn"])}


def describe(vault):
    return {
        "base_lsn": vault.m["base_lsn"],
        "points": [
            {
                "id": p["point_id"],
                "lsn": p["lsn"],
                "kind": p["kind"],
                "label": p["label"],
                "disks": [d["name"] for d in vault.disks_at(p["lsn"])],
            }
            for p in vault.points
        ],
    }


def write_images(out_dir, images):
    os.makedirs(out_dir, exist_ok=True)
    for name, data in images.items():
        with open(os.path.join(out_dir, name + ".raw"), "wb") as f:
            f.write(data)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vault")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="print the offered points as JSON")
    mode.add_argument("--point", type=int, help="materialize this point")
    mode.add_argument("--all", action="store_true", help="materialize every offered point")
    ap.add_argument("--out", help="output directory")
    args = ap.parse_args(argv)
    if not args.list and not args.out:
        ap.error("--point and --all need --out")
    try:
        vault = Vault(args.vault)
        if args.list:
            json.dump(describe(vault), sys.stdout, indent=1)
            print()
            return 0
        if args.point is not None:
            wanted = [p for p in vault.points if p["point_id"] == args.point]
            if not wanted:
                print(f"reader.py: {args.vault}: no point {args.point} is offered", file=sys.stderr)
                return 1
            for _, images in vault.materialize(wanted):
                write_images(args.out, images)
            return 0
        for p, images in vault.materialize(vault.points):
            write_images(os.path.join(args.out, str(p["point_id"])), images)
        json.dump(describe(vault), sys.stdout, indent=1)
        print()
        return 0
    except Damage as e:
        print(f"reader.py: {args.vault}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
