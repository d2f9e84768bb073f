//! Reading sled 0.34's log past damage: what `ddimd store salvage` uses when sled's
//! own recovery stops at the first damaged message (it takes a CRC failure for the
//! torn end of the log and rolls back everything written after it).
//!
//! The carve walks every segment of `store/db` message by message, checks each
//! message's own CRC, skips the damaged ones (resynchronising on the next message
//! whose CRC holds), decodes the intact page frames (leaf and index nodes, `Set` and
//! `Del` links, the meta page; inline or in `blobs/`) and rebuilds every tree as the
//! newest intact version of each key. Damaged messages are parsed leniently only to
//! learn which keys they touched; their bytes are never kept.
//!
//! It mirrors sled-0.34.7's on-disk format (`~/.cargo/registry/src/*/sled-0.34.7/src`):
//! - `pagecache/logger.rs`: `SegmentHeader` (20 bytes: crc32 ^ !0 of bytes 4..20, then
//!   lsn and max stable lsn as little-endian i64 xor `0x7FFF_FFFF_FFFF_FFFF`),
//!   `MessageHeader` (crc32, kind, len, segment number, pid; the last three varints),
//!   `read_message` (crc32 over body then header[4..], xor !0; a message never starts
//!   in a segment's last `MAX_MSG_HEADER_LEN` bytes);
//! - `pagecache/mod.rs`: `MessageKind` numbers; `lib.rs`: `calculate_message_crc32`;
//! - `pagecache/iobuf.rs`: the `Cap` message that pads a segment's end;
//! - `pagecache/blob_io.rs`: a blob file is crc32 (of kind byte and data), kind, data;
//! - `serialization.rs`: the varint, `IVec`, `Link`, `Node`, `Data`, `Meta` layouts;
//! - `node.rs`: leaf keys (in nodes and in links) are stored without the node's prefix
//!   `lo[..prefix_len]`; a node covers keys in `[lo, hi)` (`hi` empty: unbounded);
//! - `tree.rs`: index nodes are always whole frames (`Replace`), a root hoist updates
//!   the meta page (tree name → root pid);
//! - `pagecache/iterator.rs`: a `BatchManifest` names the last lsn of a batch; a batch
//!   that runs past the end of the log is torn and ignored.
//!
//! Which tree a page belongs to comes from the meta page (roots) and every intact
//! version of the index nodes and of the leaves' `next` pointers; a page freed and
//! reused is told apart by its `Free` messages.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::path::Path;

/// sled's default segment size, used when `store/conf` does not say.
const DEFAULT_SEGMENT: u64 = 512 * 1024;
const SEG_HEADER_LEN: usize = 20;
const MAX_MSG_HEADER_LEN: usize = 32;

// MessageKind (pagecache/mod.rs).
const CANCELED: u8 = 1;
const CAP: u8 = 2;
const BATCH_MANIFEST: u8 = 3;
const FREE: u8 = 4;
const COUNTER: u8 = 5;
const INLINE_META: u8 = 6;
const BLOB_META: u8 = 7;
const INLINE_NODE: u8 = 8;
const BLOB_NODE: u8 = 9;
const INLINE_LINK: u8 = 10;
const BLOB_LINK: u8 = 11;

/// CRC-32 (IEEE, reflected), as crc32fast computes it.
pub fn crc32(parts: &[&[u8]]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
    }
    !c
}

/// A cursor over bytes whose reads fail (`None`) instead of panicking.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    /// serialization.rs `impl Serialize for u64`.
    fn varint(&mut self) -> Option<u64> {
        let b0 = self.u8()?;
        Some(match b0 {
            0..=240 => u64::from(b0),
            241..=248 => 240 + 256 * (u64::from(b0) - 241) + u64::from(self.u8()?),
            249 => {
                let b = self.take(2)?;
                2288 + 256 * u64::from(b[0]) + u64::from(b[1])
            }
            other => {
                let sz = other as usize - 247;
                let mut a = [0u8; 8];
                a[..sz].copy_from_slice(self.take(sz)?);
                u64::from_le_bytes(a)
            }
        })
    }
    fn ivec(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.varint()?).ok()?;
        Some(self.take(n)?.to_vec())
    }
}

/// A page frame as stored (serialization.rs).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A node: `keys` without the prefix; `children` for an index node.
    Node {
        next: u64,
        lo: Vec<u8>,
        hi: Vec<u8>,
        prefix_len: usize,
        leaf: bool,
        keys: Vec<Vec<u8>>,
        values: Vec<Vec<u8>>,
        children: Vec<u64>,
        /// Every item the header announced was read.
        complete: bool,
    },
    Set(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    /// A merge step (no records).
    MergeStep,
    /// Tree name → root pid.
    Meta(Vec<(Vec<u8>, u64)>),
}

impl Body {
    fn prefix(&self) -> Option<&[u8]> {
        match self {
            Body::Node { lo, prefix_len, .. } => lo.get(..*prefix_len),
            _ => None,
        }
    }
}

/// Decodes a node, link or meta body. `strict`: every byte must be accounted for;
/// otherwise as much as reads (for a damaged frame: which keys it held).
pub fn decode(kind: u8, body: &[u8], strict: bool) -> Option<Body> {
    let mut r = Rd(body);
    let b = match kind {
        INLINE_NODE | BLOB_NODE => {
            let next = r.varint()?;
            let _merging_child = r.varint()?;
            let _merging = r.u8()?;
            let prefix_len = r.u8()? as usize;
            let lo = r.ivec()?;
            let hi = r.ivec()?;
            if prefix_len > lo.len() {
                return None;
            }
            let leaf = match r.u8()? {
                0 => true,
                1 => false,
                _ => return None,
            };
            let n = usize::try_from(r.varint()?).ok()?;
            let mut keys = vec![];
            let mut values = vec![];
            let mut children = vec![];
            let mut complete = true;
            for _ in 0..n {
                match r.ivec() {
                    Some(k) => keys.push(k),
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                for _ in 0..n {
                    let ok = if leaf {
                        r.ivec().map(|v| values.push(v)).is_some()
                    } else {
                        r.varint().map(|c| children.push(c)).is_some()
                    };
                    if !ok {
                        complete = false;
                        break;
                    }
                }
            }
            if strict && !complete {
                return None;
            }
            Body::Node {
                next,
                lo,
                hi,
                prefix_len,
                leaf,
                keys,
                values,
                children,
                complete,
            }
        }
        INLINE_LINK | BLOB_LINK => match r.u8()? {
            0 => Body::Set(r.ivec()?, r.ivec()?),
            1 => Body::Del(r.ivec()?),
            2 => {
                r.varint()?;
                Body::MergeStep
            }
            3 | 4 => Body::MergeStep,
            _ => return None,
        },
        INLINE_META | BLOB_META => {
            let mut m = vec![];
            while !r.0.is_empty() {
                let name = r.ivec()?;
                let pid = r.varint()?;
                m.push((name, pid));
            }
            Body::Meta(m)
        }
        _ => return None,
    };
    if strict && !r.0.is_empty() {
        return None;
    }
    Some(b)
}

/// A message header (logger.rs `MessageHeader`) and its length on disk.
#[derive(Debug, Clone, Copy)]
struct Header {
    crc: u32,
    kind: u8,
    len: u64,
    segment: u64,
    pid: u64,
    size: usize,
}

fn header(b: &[u8]) -> Option<Header> {
    let mut r = Rd(b);
    let crc = r.u32()?;
    let kind = r.u8()?;
    let len = r.varint()?;
    let segment = r.varint()?;
    let pid = r.varint()?;
    Some(Header {
        crc,
        kind,
        len,
        segment,
        pid,
        size: b.len() - r.0.len(),
    })
}

/// One message read from the log.
#[derive(Debug, Clone)]
struct Msg {
    lsn: i64,
    /// The lsn of its last byte.
    end: i64,
    kind: u8,
    pid: u64,
    /// The body (a blob's contents for blob kinds); `None`: unreadable.
    body: Option<Vec<u8>>,
    intact: bool,
    why: String,
}

/// What a damaged message may have touched.
#[derive(Debug, Clone)]
enum Reach {
    /// These keys (full keys), with the (unverified) value it held, `None` a delete.
    Keys(BTreeMap<Vec<u8>, Option<Vec<u8>>>),
    /// Keys in [lo, hi) of this tree (hi empty: unbounded), items unknown, plus the
    /// keys it could still be read to hold.
    Range(Vec<u8>, Vec<u8>, BTreeMap<Vec<u8>, Option<Vec<u8>>>),
    /// Anything in its tree (or anywhere when the tree is unknown).
    All,
    /// No records (an index node, a merge step, the counter, …).
    Nothing,
}

#[derive(Debug, Clone)]
struct Damage {
    lsn: i64,
    tree: Option<String>,
    reach: Reach,
    what: String,
}

/// A key the carve could not bring back, or brought back with a caveat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNote {
    pub tree: String,
    pub key: Vec<u8>,
    pub what: String,
}

/// The result of [`carve`].
#[derive(Debug, Default)]
pub struct Carved {
    /// Tree name → key → the newest intact value.
    pub trees: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Keys whose newest intact event is a delete (they were removed on purpose).
    pub deleted: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Keys whose newest write is damaged and of which no intact version is left.
    pub lost: Vec<KeyNote>,
    /// Keys kept at an older version: a later write to them is damaged.
    pub older: Vec<KeyNote>,
    /// Damage that cannot be tied to keys (records only it held cannot be named).
    pub unnamed: Vec<String>,
    pub segments: usize,
    pub messages: usize,
    pub damaged: usize,
    /// Damaged messages at the very end of the log (a torn write), ignored.
    pub torn: usize,
}

/// Trees whose values never change once written (a later damaged frame holding the
/// key is a copy of the same bytes, or a delete that the records' own trees show).
fn write_once(tree: &str) -> bool {
    matches!(
        tree,
        "latent_xt"
            | "latent_source"
            | "latent_preview"
            | "job_specs"
            | "job_results"
            | "job_latents"
    )
}

/// `store/conf`'s segment size, and whether compression is on.
fn conf(store: &Path) -> (u64, bool) {
    let text = std::fs::read_to_string(store.join("conf")).unwrap_or_default();
    let mut seg = DEFAULT_SEGMENT;
    let mut compressed = false;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("segment_size: ") {
            seg = v.trim().parse().unwrap_or(DEFAULT_SEGMENT);
        }
        if let Some(v) = l.strip_prefix("use_compression: ") {
            compressed = v.trim() == "true";
        }
    }
    (seg, compressed)
}

fn read_at(f: &File, buf: &mut Vec<u8>, at: u64, len: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    buf.resize(len, 0);
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], at + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(())
}

/// Reads blob `id` (blob_io.rs): its kind and data, or why not.
fn blob(store: &Path, id: i64) -> Result<(u8, Vec<u8>), String> {
    let b = std::fs::read(store.join("blobs").join(id.to_string()))
        .map_err(|e| format!("blob {id}: {e}"))?;
    if b.len() < 5 {
        return Err(format!("blob {id}: {} bytes", b.len()));
    }
    let want = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if crc32(&[&b[4..]]) != want {
        return Err(format!("blob {id}: checksum mismatch"));
    }
    Ok((b[4], b[5..].to_vec()))
}

/// Every message of one segment (`buf`, at file offset `off`). A damaged message is
/// skipped by its length when what follows reads, else the walk resynchronises on the
/// next message whose checksum holds.
fn walk_segment(store: Option<&Path>, buf: &[u8], seg: u64, out: &mut Vec<Msg>) {
    if buf.len() < SEG_HEADER_LEN {
        return;
    }
    let seg_us = seg as usize;
    let end = buf.len().min(seg_us);
    // The segment's lsn: its header, else the segment number of a message in it.
    let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) ^ 0xFFFF_FFFF;
    let lsn = i64::from_le_bytes(buf[4..12].try_into().unwrap_or([0; 8])) ^ 0x7FFF_FFFF_FFFF_FFFF;
    let seg_i = seg as i64;
    let base = if stored == crc32(&[&buf[4..20]])
        && (0..i64::MAX / 2).contains(&lsn)
        && lsn % seg_i == 0
    {
        Some(lsn)
    } else {
        (SEG_HEADER_LEN..end.saturating_sub(MAX_MSG_HEADER_LEN)).find_map(|p| {
            let h = header(&buf[p..end.min(p + MAX_MSG_HEADER_LEN)])?;
            let stop = (p + h.size).checked_add(usize::try_from(h.len).ok()?)?;
            let body = buf.get(p + h.size..stop)?;
            let lsn = i64::try_from(h.segment.checked_mul(seg)?).ok()?;
            (h.kind >= CANCELED
                && h.kind <= BLOB_LINK
                && lsn < i64::MAX / 2
                && crc32(&[body, &buf[p + 4..p + h.size]]) ^ 0xFFFF_FFFF == h.crc)
                .then_some(lsn)
        })
    };
    let Some(base) = base else {
        return;
    };
    let segno = base as u64 / seg;
    // A message starting at p: Ok(intact), Err(Some(h)) a sane header whose body does
    // not check, Err(None) no message.
    let at = |p: usize| -> Result<Header, Option<Header>> {
        if p + 5 > end || p > seg_us - MAX_MSG_HEADER_LEN {
            return Err(None);
        }
        let h = header(&buf[p..end.min(p + MAX_MSG_HEADER_LEN)]).ok_or(None)?;
        if !(CANCELED..=BLOB_LINK).contains(&h.kind)
            || h.segment != segno
            || h.len > (seg_us - p - h.size) as u64
        {
            return Err(None);
        }
        let Some(body) = buf.get(p + h.size..p + h.size + h.len as usize) else {
            return Err(Some(h));
        };
        if crc32(&[body, &buf[p + 4..p + h.size]]) ^ 0xFFFF_FFFF == h.crc {
            Ok(h)
        } else {
            Err(Some(h))
        }
    };
    let resync = |from: usize| (from..end).find(|&q| at(q).is_ok());
    let mut p = SEG_HEADER_LEN;
    while p < end {
        let lsn = base + p as i64;
        match at(p) {
            Ok(h) => {
                let body = &buf[p + h.size..p + h.size + h.len as usize];
                p += h.size + h.len as usize;
                match h.kind {
                    CAP => break,
                    CANCELED => continue,
                    BLOB_META | BLOB_NODE | BLOB_LINK => {
                        let id = i64::from_le_bytes(body.try_into().unwrap_or([0; 8]));
                        // Without `store`, a blob message counts by its own checksum.
                        let Some(store) = store else {
                            out.push(Msg {
                                lsn,
                                end: base + p as i64 - 1,
                                kind: h.kind,
                                pid: h.pid,
                                body: None,
                                intact: true,
                                why: String::new(),
                            });
                            continue;
                        };
                        let (body, intact, why) = match blob(store, id) {
                            Ok((k, b)) if k == h.kind => (Some(b), true, String::new()),
                            Ok((k, _)) => (None, false, format!("blob {id}: kind {k}")),
                            Err(e) => {
                                // A damaged blob is still read for its keys.
                                let b = std::fs::read(store.join("blobs").join(id.to_string()))
                                    .ok()
                                    .and_then(|b| b.get(5..).map(<[u8]>::to_vec));
                                (b, false, e)
                            }
                        };
                        out.push(Msg {
                            lsn,
                            end: base + p as i64 - 1,
                            kind: h.kind,
                            pid: h.pid,
                            body,
                            intact,
                            why,
                        });
                    }
                    _ => out.push(Msg {
                        lsn,
                        end: base + p as i64 - 1,
                        kind: h.kind,
                        pid: h.pid,
                        body: Some(body.to_vec()),
                        intact: true,
                        why: String::new(),
                    }),
                }
            }
            Err(Some(h)) => {
                let stop = (p + h.size + h.len as usize).min(end);
                out.push(Msg {
                    lsn,
                    end: base + stop as i64 - 1,
                    kind: h.kind,
                    pid: h.pid,
                    body: buf.get(p + h.size..stop).map(<[u8]>::to_vec),
                    intact: false,
                    why: format!("checksum mismatch in a message of {} bytes", h.len),
                });
                // Its length is trusted when a message (or the end) follows it.
                let next = p + h.size + h.len as usize;
                p = if next >= end || at(next).is_ok() {
                    next
                } else {
                    match resync(p + 1) {
                        Some(q) => q,
                        None => break,
                    }
                };
            }
            Err(None) => match resync(p + 1) {
                // Unreadable bytes between two messages: damage of unknown extent.
                Some(q) => {
                    out.push(Msg {
                        lsn,
                        end: base + q as i64 - 1,
                        kind: 0,
                        pid: u64::MAX,
                        body: None,
                        intact: false,
                        why: format!("{} unreadable bytes", q - p),
                    });
                    p = q;
                }
                // The end of what was written in this segment.
                None => break,
            },
        }
    }
}

/// Reads the sled store in `store` (the `DATA/store` folder) message by message and
/// rebuilds its trees from the newest intact version of every key.
pub fn carve(store: &Path) -> Result<Carved, String> {
    let (msgs, segments) = read_log(store, true)?;
    Ok(resolve(msgs, segments, segment_size(store)? as i64))
}

fn segment_size(store: &Path) -> Result<u64, String> {
    let (seg, compressed) = conf(store);
    if compressed {
        return Err("the store uses sled's compression, which the carve cannot read".into());
    }
    if !(1024..=1 << 30).contains(&seg) {
        return Err(format!("store/conf: implausible segment size {seg}"));
    }
    Ok(seg)
}

/// Every message of the log in lsn order, and how many segments held some;
/// `blobs`: read (and check) the blob files too.
fn read_log(store: &Path, blobs: bool) -> Result<(Vec<Msg>, usize), String> {
    let seg = segment_size(store)?;
    let f = File::open(store.join("db")).map_err(|e| format!("store/db: {e}"))?;
    let len = f.metadata().map_err(|e| format!("store/db: {e}"))?.len();
    let mut msgs = vec![];
    let mut buf = vec![];
    let mut segments = 0;
    let mut off = 0u64;
    while off < len {
        read_at(&f, &mut buf, off, seg as usize).map_err(|e| format!("store/db: {e}"))?;
        let before = msgs.len();
        walk_segment(blobs.then_some(store), &buf, seg, &mut msgs);
        if msgs.len() > before {
            segments += 1;
        }
        off += seg;
    }
    msgs.sort_by_key(|m| m.lsn);
    // The same lsn twice (a segment copied over an older one): keep the intact one.
    msgs.dedup_by(|b, a| a.lsn == b.lsn && (a.intact || !b.intact));
    Ok((msgs, segments))
}

/// What sled's recovery would throw away: damaged messages that have intact ones
/// after them in the log (sled stops at the first damaged one and writes on from
/// there). `(damaged, intact after the first damaged)`; a torn tail alone is
/// `(n, 0)`. Reads the log only (not the blobs).
pub fn sled_would_discard(store: &Path) -> Result<(usize, usize), String> {
    let (msgs, _) = read_log(store, false)?;
    let Some(first) = msgs.iter().position(|m| !m.intact) else {
        return Ok((0, 0));
    };
    let damaged = msgs.iter().filter(|m| !m.intact).count();
    let after = msgs[first..].iter().filter(|m| m.intact).count();
    Ok((damaged, after))
}

/// A page's incarnation: pids are reused after a `Free`.
type Page = (u64, usize);
/// A damaged message: lsn, page, kind, what of it still decodes, why.
type Damaged = (i64, Option<Page>, u8, Option<Body>, String);
/// A node version of a page: lsn, prefix, lo, hi.
type Base = (i64, Vec<u8>, Vec<u8>, Vec<u8>);
/// A leaf version: lsn, lo, hi, the keys it held.
type Cover = (i64, Vec<u8>, Vec<u8>, BTreeSet<Vec<u8>>);

fn resolve(mut msgs: Vec<Msg>, segments: usize, seg: i64) -> Carved {
    // Damaged messages after the last intact one are a torn tail (a write cut short
    // by a crash, never acknowledged): ignored, as sled's recovery ignores them.
    let keep = msgs.iter().rposition(|m| m.intact).map_or(0, |i| i + 1);
    let torn = msgs.len() - keep;
    msgs.truncate(keep);
    let mut out = Carved {
        segments,
        messages: msgs.len(),
        damaged: msgs.iter().filter(|m| !m.intact).count(),
        torn,
        ..Default::default()
    };
    // Torn batches at the end of the log are not part of it (iterator.rs).
    // A batch names the lsn of its last byte (`max_reserved_lsn`).
    let last = msgs.iter().map(|m| m.end).max().unwrap_or(0);
    let mut torn: Vec<(i64, i64)> = vec![];
    for m in &msgs {
        if m.intact && m.kind == BATCH_MANIFEST {
            if let Some(b) = m.body.as_deref().and_then(|b| b.try_into().ok()) {
                let upto = i64::from_le_bytes(b);
                if upto > last {
                    torn.push((m.lsn, upto));
                }
            }
        }
    }
    msgs.retain(|m| !torn.iter().any(|&(a, b)| m.lsn > a && m.lsn <= b));

    // Incarnations.
    let mut frees: HashMap<u64, Vec<i64>> = HashMap::new();
    for m in msgs.iter().filter(|m| m.intact && m.kind == FREE) {
        frees.entry(m.pid).or_default().push(m.lsn);
    }
    let inc = |pid: u64, lsn: i64| -> Page {
        (
            pid,
            frees
                .get(&pid)
                .map_or(0, |v| v.iter().filter(|&&f| f < lsn).count()),
        )
    };
    // Decode.
    struct Frame {
        lsn: i64,
        page: Page,
        body: Body,
    }
    let mut frames: Vec<Frame> = vec![];
    let mut damaged: Vec<Damaged> = vec![];
    for m in &msgs {
        if matches!(m.kind, CANCELED | CAP | BATCH_MANIFEST | FREE | COUNTER) && m.intact {
            continue;
        }
        let page = (m.pid != u64::MAX).then(|| inc(m.pid, m.lsn));
        if m.intact {
            match m.body.as_deref().and_then(|b| decode(m.kind, b, true)) {
                Some(body) => frames.push(Frame {
                    lsn: m.lsn,
                    page: page.unwrap_or((m.pid, 0)),
                    body,
                }),
                None => damaged.push((
                    m.lsn,
                    page,
                    m.kind,
                    None,
                    "a frame that does not decode".into(),
                )),
            }
        } else {
            let lenient = m.body.as_deref().and_then(|b| decode(m.kind, b, false));
            damaged.push((m.lsn, page, m.kind, lenient, m.why.clone()));
        }
    }
    out.damaged = damaged.len();

    // Which tree each page belongs to: roots from the meta page, then index children
    // and leaves' next pointers, over every version.
    let mut edges: HashMap<Page, BTreeSet<Page>> = HashMap::new();
    let mut roots: Vec<(String, Page)> = vec![];
    for fr in &frames {
        match &fr.body {
            Body::Meta(m) => {
                for (name, pid) in m {
                    roots.push((
                        String::from_utf8_lossy(name).into_owned(),
                        inc(*pid, fr.lsn),
                    ));
                }
            }
            Body::Node { next, children, .. } => {
                let e = edges.entry(fr.page).or_default();
                for &c in children {
                    e.insert(inc(c, fr.lsn));
                }
                if *next != 0 {
                    e.insert(inc(*next, fr.lsn));
                }
            }
            _ => {}
        }
    }
    let mut tree_of: HashMap<Page, String> = HashMap::new();
    for (name, root) in &roots {
        let mut q = VecDeque::from([*root]);
        while let Some(p) = q.pop_front() {
            if tree_of.contains_key(&p) {
                continue;
            }
            tree_of.insert(p, name.clone());
            for c in edges.get(&p).into_iter().flatten() {
                q.push_back(*c);
            }
        }
    }

    // The latest node frame (intact or lenient) of each page before an lsn: the
    // prefix its links' keys are stored without.
    let mut bases: HashMap<Page, Vec<Base>> = HashMap::new();
    for fr in &frames {
        if let (Body::Node { lo, hi, .. }, Some(p)) = (&fr.body, fr.body.prefix()) {
            bases
                .entry(fr.page)
                .or_default()
                .push((fr.lsn, p.to_vec(), lo.clone(), hi.clone()));
        }
    }
    for (lsn, page, _, body, _) in &damaged {
        if let (Some(page), Some(b @ Body::Node { lo, hi, .. })) = (page, body) {
            if let Some(p) = b.prefix() {
                bases
                    .entry(*page)
                    .or_default()
                    .push((*lsn, p.to_vec(), lo.clone(), hi.clone()));
            }
        }
    }
    for v in bases.values_mut() {
        v.sort_by_key(|b| b.0);
    }
    // A link's key is stored without the prefix of its page's node before it; it is
    // read against that node when no segment between the two is missing (a cleaned
    // segment may have held a newer node with another prefix) and the key falls in
    // the node's range. A link that cannot be read so is superseded when a newer
    // intact node of its page exists (a consolidation or relocation holds its
    // effect) or the page was later merged away and freed.
    let present: BTreeSet<i64> = msgs.iter().map(|m| m.lsn / seg).collect();
    let unbroken = |a: i64, b: i64| {
        b / seg - a / seg < 1 << 20 && (a / seg..=b / seg).all(|s| present.contains(&s))
    };
    let mut last_intact: HashMap<Page, i64> = HashMap::new();
    for fr in &frames {
        if matches!(fr.body, Body::Node { .. }) {
            let e = last_intact.entry(fr.page).or_insert(fr.lsn);
            *e = (*e).max(fr.lsn);
        }
    }
    let base_at = |page: &Page, lsn: i64| {
        bases
            .get(page)
            .and_then(|v| v.iter().rev().find(|b| b.0 < lsn))
            .filter(|b| unbroken(b.0, lsn))
    };
    // A page merged away and freed later: its content lives on in its left sibling.
    let superseded = |page: &Page, lsn: i64| {
        last_intact.get(page).is_some_and(|&l| l > lsn)
            || frees
                .get(&page.0)
                .is_some_and(|v| v.iter().any(|&f| f > lsn))
    };
    let covered = |k: &[u8], lo: &[u8], hi: &[u8]| k >= lo && (hi.is_empty() || k < hi);
    let full = |prefix: &[u8], k: &[u8]| [prefix, k].concat();

    // Events per tree and key: (lsn, Some(value)) or (lsn, None) for a delete.
    type Events = BTreeMap<Vec<u8>, Vec<(i64, Option<Vec<u8>>)>>;
    let mut events: BTreeMap<String, Events> = BTreeMap::new();
    // Leaf frames per tree: (lsn, lo, hi, keys held) for absence.
    let mut covers: BTreeMap<String, Vec<Cover>> = BTreeMap::new();
    let mut unattributed = 0usize;
    for fr in &frames {
        let Some(tree) = tree_of.get(&fr.page) else {
            if !matches!(fr.body, Body::Meta(_)) {
                unattributed += 1;
            }
            continue;
        };
        let ev = events.entry(tree.clone()).or_default();
        match &fr.body {
            Body::Node {
                leaf: true,
                lo,
                hi,
                keys,
                values,
                ..
            } => {
                let prefix = fr.body.prefix().unwrap_or_default();
                let mut held = BTreeSet::new();
                for (k, v) in keys.iter().zip(values) {
                    let k = full(prefix, k);
                    ev.entry(k.clone())
                        .or_default()
                        .push((fr.lsn, Some(v.clone())));
                    held.insert(k);
                }
                covers.entry(tree.clone()).or_default().push((
                    fr.lsn,
                    lo.clone(),
                    hi.clone(),
                    held,
                ));
            }
            Body::Set(k, _) | Body::Del(k) => match base_at(&fr.page, fr.lsn)
                .map(|(_, prefix, lo, hi)| (full(prefix, k), lo, hi))
                .filter(|(k, lo, hi)| covered(k, lo, hi))
            {
                Some((k, _, _)) => {
                    let v = match &fr.body {
                        Body::Set(_, v) => Some(v.clone()),
                        _ => None,
                    };
                    ev.entry(k).or_default().push((fr.lsn, v));
                }
                None if superseded(&fr.page, fr.lsn) => {}
                None => damaged.push((
                    fr.lsn,
                    Some(fr.page),
                    INLINE_LINK,
                    None,
                    "a link whose page has no readable node".into(),
                )),
            },
            _ => {}
        }
    }
    if unattributed > 0 {
        out.unnamed.push(format!(
            "{unattributed} intact page frames belong to no tree that could be traced from the meta page (left out)"
        ));
    }

    // What each damaged message may have touched.
    let mut damages: Vec<Damage> = vec![];
    for (lsn, page, kind, body, why) in &damaged {
        let tree = page.and_then(|p| tree_of.get(&p).cloned());
        let reach = match body {
            Some(Body::Set(k, v)) => match page.and_then(|p| base_at(&p, *lsn)) {
                Some((_, prefix, _, _)) => {
                    Reach::Keys(BTreeMap::from([(full(prefix, k), Some(v.clone()))]))
                }
                None => page
                    .and_then(|p| bases.get(&p).and_then(|v| v.last()))
                    .map_or(Reach::All, |(_, _, lo, hi)| {
                        Reach::Range(lo.clone(), hi.clone(), BTreeMap::new())
                    }),
            },
            Some(Body::Del(k)) => match page.and_then(|p| base_at(&p, *lsn)) {
                Some((_, prefix, _, _)) => Reach::Keys(BTreeMap::from([(full(prefix, k), None)])),
                None => Reach::All,
            },
            Some(
                b @ Body::Node {
                    leaf: true,
                    lo,
                    hi,
                    keys,
                    values,
                    ..
                },
            ) => {
                let prefix = b.prefix().unwrap_or_default();
                let held: BTreeMap<Vec<u8>, Option<Vec<u8>>> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (full(prefix, k), values.get(i).cloned()))
                    .collect();
                // A key of its range it does not name may have been deleted by it
                // (or is among the items that no longer read).
                Reach::Range(lo.clone(), hi.clone(), held)
            }
            Some(Body::Node { leaf: false, .. }) | Some(Body::MergeStep) | Some(Body::Meta(_)) => {
                Reach::Nothing
            }
            None if matches!(*kind, CANCELED | CAP | BATCH_MANIFEST | FREE | COUNTER) => {
                Reach::Nothing
            }
            None => match page.and_then(|p| bases.get(&p).and_then(|v| v.last())) {
                Some((_, _, lo, hi)) => Reach::Range(lo.clone(), hi.clone(), BTreeMap::new()),
                None => Reach::All,
            },
        };
        if matches!(reach, Reach::Nothing) {
            continue;
        }
        damages.push(Damage {
            lsn: *lsn,
            tree,
            reach,
            what: why.clone(),
        });
    }

    // Keys only damaged frames name.
    for d in &damages {
        let named = match &d.reach {
            Reach::Keys(m) | Reach::Range(_, _, m) => m,
            _ => continue,
        };
        if let Some(t) = &d.tree {
            let ev = events.entry(t.clone()).or_default();
            for k in named.keys() {
                ev.entry(k.clone()).or_default();
            }
        }
    }

    // Resolve every key.
    for (tree, keys) in &events {
        let mut cov = covers.get(tree).cloned().unwrap_or_default();
        cov.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (k, evs) in keys {
            let mut latest: Option<(i64, Option<&Vec<u8>>)> = None;
            for (lsn, v) in evs {
                if latest.is_none_or(|(l, _)| *lsn > l) {
                    latest = Some((*lsn, v.as_ref()));
                }
            }
            // A newer leaf covering the key without it: deleted then.
            let since = latest.map_or(i64::MIN, |l| l.0);
            if let Some(c) = cov
                .iter()
                .take_while(|c| c.0 > since)
                .find(|c| covered(k, &c.1, &c.2) && !c.3.contains(k))
            {
                latest = Some((c.0, None));
            }
            let since = latest.map_or(i64::MIN, |l| l.0);
            let current = latest.and_then(|l| l.1);
            // Damage after the newest intact event that may have changed the key.
            let touched: Vec<&Damage> = damages
                .iter()
                .filter(|d| d.lsn > since)
                .filter(|d| d.tree.as_ref().is_none_or(|t| t == tree))
                .filter(|d| match &d.reach {
                    Reach::Keys(m) => match m.get(k) {
                        None => false,
                        Some(v) => v.as_ref() != current || current.is_none(),
                    },
                    Reach::Range(lo, hi, m) => match m.get(k) {
                        Some(v) => v.as_ref() != current || current.is_none(),
                        None => covered(k, lo, hi),
                    },
                    Reach::All | Reach::Nothing => !matches!(d.reach, Reach::Nothing),
                })
                .collect();
            let note = |what: String| KeyNote {
                tree: tree.clone(),
                key: k.clone(),
                what,
            };
            match (current, touched.first()) {
                (Some(v), None) => {
                    out.trees
                        .entry(tree.clone())
                        .or_default()
                        .insert(k.clone(), v.clone());
                }
                (Some(v), Some(d)) => {
                    out.trees
                        .entry(tree.clone())
                        .or_default()
                        .insert(k.clone(), v.clone());
                    if !write_once(tree) {
                        out.older.push(note(format!(
                            "kept an older version: a later write to it is damaged ({})",
                            d.what
                        )));
                    }
                }
                (None, None) => {
                    if latest.is_some() {
                        out.deleted
                            .entry(tree.clone())
                            .or_default()
                            .insert(k.clone());
                    }
                }
                (None, Some(d)) => {
                    // Named by a damaged frame: it held the key, unverified.
                    let named = matches!(&d.reach, Reach::Keys(m) | Reach::Range(_, _, m) if m.contains_key(k));
                    if named || latest.is_none() {
                        out.lost
                            .push(note(format!("its newest write is damaged ({})", d.what)));
                    } else {
                        out.deleted
                            .entry(tree.clone())
                            .or_default()
                            .insert(k.clone());
                    }
                }
            }
        }
    }
    // Damage whose keys are not all known.
    for d in &damages {
        let t = d.tree.clone().unwrap_or_else(|| "an unknown tree".into());
        match &d.reach {
            Reach::Range(lo, hi, m) if m.is_empty() => out.unnamed.push(format!(
                "a damaged frame of {t} (keys {} to {}) at lsn {}: {}",
                hex(lo),
                if hi.is_empty() {
                    "the end".into()
                } else {
                    hex(hi)
                },
                d.lsn,
                d.what
            )),
            Reach::All => out
                .unnamed
                .push(format!("damage at lsn {} in {t}: {}", d.lsn, d.what)),
            _ => {}
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    #[test]
    fn varints_read_as_sled_writes_them() {
        // serialization.rs: ≤240 one byte; ≤2287 two; ≤67823 three; then 250.. + LE.
        let cases: &[(&[u8], u64)] = &[
            (&[7], 7),
            (&[240], 240),
            (&[241, 0], 240),
            (&[248, 255], 2287),
            (&[249, 0, 0], 2288),
            (&[249, 255, 255], 67823),
            (&[250, 0x10, 0x27, 0x01], 0x01_2710),
            (&[255, 1, 2, 3, 4, 5, 6, 7, 8], 0x0807_0605_0403_0201),
        ];
        for (b, v) in cases {
            assert_eq!(Rd(b).varint(), Some(*v), "{b:?}");
        }
        assert_eq!(Rd(&[249, 1]).varint(), None);
        assert_eq!(Rd(&[]).varint(), None);
    }

    /// Opens a sled store, waiting for the previous handle's threads to let go of
    /// the file lock.
    fn open(dir: &Path) -> sled::Db {
        for _ in 0..100 {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{} stays locked", dir.display())
    }

    fn filled(dir: &Path, n: u64, big: usize) {
        let db = open(dir);
        let a = db.open_tree("alpha").unwrap();
        let b = db.open_tree("beta").unwrap();
        for i in 0..n {
            a.insert(i.to_be_bytes(), vec![(i % 251) as u8; big])
                .unwrap();
            b.insert(i.to_be_bytes(), format!("beta {i}").into_bytes())
                .unwrap();
        }
        b.insert(5u64.to_be_bytes(), b"beta 5 again".to_vec())
            .unwrap();
        b.remove(7u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }

    type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

    fn expected(n: u64, big: usize) -> (Kv, Kv) {
        let a = (0..n)
            .map(|i| (i.to_be_bytes().to_vec(), vec![(i % 251) as u8; big]))
            .collect();
        let mut b: BTreeMap<Vec<u8>, Vec<u8>> = (0..n)
            .map(|i| (i.to_be_bytes().to_vec(), format!("beta {i}").into_bytes()))
            .collect();
        b.insert(5u64.to_be_bytes().to_vec(), b"beta 5 again".to_vec());
        b.remove(7u64.to_be_bytes().as_slice());
        (a, b)
    }

    #[test]
    fn a_healthy_store_carves_to_exactly_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 300, 700);
        let c = carve(dir.path()).unwrap();
        let (a, b) = expected(300, 700);
        assert_eq!(c.damaged, 0, "{:?}", c.unnamed);
        assert_eq!(c.trees.get("alpha"), Some(&a));
        assert_eq!(c.trees.get("beta"), Some(&b));
        assert!(c.deleted["beta"].contains(7u64.to_be_bytes().as_slice()));
        assert!(c.lost.is_empty() && c.older.is_empty() && c.unnamed.is_empty());
        // Blobs: values over a quarter of a segment live in blobs/.
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 3, 200_000);
        let c = carve(dir.path()).unwrap();
        assert_eq!(c.trees.get("alpha"), Some(&expected(3, 200_000).0));
    }

    /// Every tree of a sled store, as sled reads it.
    fn by_sled(dir: &Path) -> BTreeMap<String, Kv> {
        let db = open(dir);
        let mut out = BTreeMap::new();
        for name in db.tree_names() {
            let name = String::from_utf8(name.to_vec()).unwrap();
            if name.starts_with("__sled__") {
                continue;
            }
            let t = db.open_tree(&name).unwrap();
            let kv: Kv = t
                .iter()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            if !kv.is_empty() {
                out.insert(name, kv);
            }
        }
        out
    }

    #[test]
    fn overwrites_deletes_reopens_and_reused_segments_carve_to_what_sled_reads() {
        // Several MB through 512 KiB segments, over four opens (snapshots, a log
        // that goes on after recovery, segments cleaned and reused).
        let dir = tempfile::tempdir().unwrap();
        for round in 0..4u64 {
            let db = open(dir.path());
            let a = db.open_tree("alpha").unwrap();
            let b = db.open_tree("beta").unwrap();
            for i in 0..1500u64 {
                let v = vec![(i + round) as u8; 300 + (i as usize * 7 + round as usize) % 900];
                a.insert(i.to_be_bytes(), v).unwrap();
                if i % 3 == round % 3 {
                    b.insert(format!("k{i}"), format!("{round}/{i}").into_bytes())
                        .unwrap();
                }
                if i % 5 == round {
                    a.remove((i / 2).to_be_bytes()).unwrap();
                    b.remove(format!("k{}", i / 3)).unwrap();
                }
            }
            db.flush().unwrap();
        }
        let c = carve(dir.path()).unwrap();
        assert!(std::fs::metadata(dir.path().join("db")).unwrap().len() > 4 * DEFAULT_SEGMENT);
        assert_eq!(c.damaged, 0, "{:?}", c.unnamed);
        assert!(c.lost.is_empty(), "{:?}", &c.lost[..c.lost.len().min(3)]);
        assert!(c.older.is_empty(), "{:?}", &c.older[..c.older.len().min(3)]);
        assert!(c.unnamed.is_empty(), "{:?}", c.unnamed);
        let mut got = c.trees.clone();
        got.retain(|_, kv| !kv.is_empty());
        assert_eq!(got, by_sled(dir.path()));
    }

    #[test]
    fn flipped_bytes_anywhere_never_give_a_wrong_value_silently() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3u64 {
            let db = open(dir.path());
            let a = db.open_tree("alpha").unwrap();
            for i in 0..1200u64 {
                a.insert(
                    i.to_be_bytes(),
                    vec![(i + round) as u8; 200 + (i as usize % 700)],
                )
                .unwrap();
                if i % 7 == round {
                    a.remove((i / 2).to_be_bytes()).unwrap();
                }
            }
            db.flush().unwrap();
        }
        let truth = by_sled(dir.path());
        let orig = std::fs::read(dir.path().join("db")).unwrap();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for trial in 0..12 {
            let mut f = orig.clone();
            for _ in 0..(1 + trial % 4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % f.len() as u64) as usize;
                f[at] ^= 0x5a;
            }
            std::fs::write(dir.path().join("db"), &f).unwrap();
            let c = carve(dir.path()).unwrap();
            let empty = Kv::new();
            let got = c.trees.get("alpha").unwrap_or(&empty);
            let noted = |k: &Vec<u8>, list: &[KeyNote]| list.iter().any(|n| &n.key == k);
            for (k, v) in got {
                assert!(
                    truth["alpha"].get(k) == Some(v) || noted(k, &c.older),
                    "trial {trial}: {k:?} carved with a value sled never held, unreported"
                );
            }
            for k in truth["alpha"].keys() {
                assert!(
                    got.contains_key(k) || noted(k, &c.lost) || !c.unnamed.is_empty(),
                    "trial {trial}: {k:?} dropped, unreported"
                );
            }
        }
    }

    #[test]
    fn a_damaged_later_write_keeps_the_older_version_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let second = b"the second version of record 4, which the disk damages".to_vec();
        {
            let db = open(dir.path());
            let t = db.open_tree("beta").unwrap();
            for i in 0..20u64 {
                t.insert(i.to_be_bytes(), format!("first {i}").into_bytes())
                    .unwrap();
            }
            db.flush().unwrap();
            t.insert(4u64.to_be_bytes(), second.clone()).unwrap();
            t.insert(30u64.to_be_bytes(), b"after".to_vec()).unwrap();
            db.flush().unwrap();
        }
        let db = dir.path().join("db");
        let mut f = std::fs::read(&db).unwrap();
        let mut hits = 0;
        for i in 0..f.len() - second.len() {
            if f[i..i + second.len()] == second[..] {
                f[i + 10] ^= 0x20;
                hits += 1;
            }
        }
        assert!(hits >= 1);
        std::fs::write(&db, f).unwrap();
        let c = carve(dir.path()).unwrap();
        let k4 = 4u64.to_be_bytes().to_vec();
        let beta = &c.trees["beta"];
        // The older version is kept, and said to be older; the rest as written.
        assert_eq!(beta[&k4], b"first 4".to_vec());
        assert!(
            c.older.iter().any(|n| n.tree == "beta" && n.key == k4),
            "{:?}",
            c.older
        );
        assert_eq!(beta[&30u64.to_be_bytes().to_vec()], b"after".to_vec());
        assert_eq!(beta.len(), 21);
        // A tree whose values never change keeps the intact copy silently.
        assert!(write_once("latent_xt") && !write_once("latents") && !write_once("jobs"));
    }

    #[test]
    fn damage_early_in_the_log_loses_only_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 300, 700);
        let (a, b) = expected(300, 700);
        // Flip a byte inside every stored copy of alpha's value 3.
        let db = dir.path().join("db");
        let mut f = std::fs::read(&db).unwrap();
        let needle = vec![3u8; 700];
        let mut hits = 0;
        let mut i = 0;
        while i + needle.len() <= f.len() {
            if f[i..i + needle.len()] == needle[..] {
                f[i + 350] ^= 0x5a;
                hits += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        assert!(hits >= 1);
        std::fs::write(&db, f).unwrap();
        // sled's own recovery stops there.
        let c = carve(dir.path()).unwrap();
        assert!(c.damaged >= 1);
        let key3 = 3u64.to_be_bytes().to_vec();
        assert!(
            c.lost.iter().any(|n| n.tree == "alpha" && n.key == key3),
            "{:?}",
            c.lost
        );
        let got = &c.trees["alpha"];
        assert!(!got.contains_key(&key3));
        // Every other value, at its newest version; lost ones are reported.
        for (k, v) in &a {
            match got.get(k) {
                Some(g) => assert_eq!(g, v),
                None => assert!(c.lost.iter().any(|n| &n.key == k), "{k:?} silently dropped"),
            }
        }
        assert_eq!(c.trees.get("beta"), Some(&b));
    }

    #[test]
    fn garbage_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 200, 300);
        let db = dir.path().join("db");
        let orig = std::fs::read(&db).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20 {
            let mut f = orig.clone();
            for _ in 0..(1 + round * 5) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % f.len() as u64) as usize;
                f[at] ^= (x >> 32) as u8 | 1;
            }
            if round % 4 == 3 {
                f.truncate(f.len() * round / 20);
            }
            std::fs::write(&db, &f).unwrap();
            let _ = carve(dir.path());
        }
        assert!(decode(INLINE_NODE, &[1, 2, 3], false).is_none());
        assert!(decode(INLINE_LINK, &[0, 200], false).is_none());
    }
}
