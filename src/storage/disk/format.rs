//! The object file: one stored response, its key, and checksums over all of it.
//!
//! ```text
//! offset     size  field (little-endian)
//!      0        8  magic b"HFOBJ\0\0\x02" (the last byte is the format version)
//!      8        8  checksum: xxh3-64 of bytes 16..32, the head and the block table
//!     16        4  head length H
//!     20        4  block size shift S (a block is 1 << S bytes of body)
//!     24        8  body length B
//!     32        H  head: key hash, meta fields, key text, response header, padding
//!   32+H        B  body, exactly as stored
//! 32+H+B   8*N     block table: xxh3-64 of each block of the body (N = ceil(B / 2^S))
//! ```
//!
//! The file's length must be 32 + H + B + 8N: anything shorter is a torn write. The
//! prefix checksum covers the lengths, the head and the block table; each block of the
//! body is checked against its own entry. So a reader checks the head and the table
//! once (a few KiB at most) and then only the blocks it sends: a range of a 1 GiB object
//! reads what it serves, not the whole file. A flipped bit anywhere but in the magic
//! (which fails on its own) is caught. The body sits whole at a known offset so that it
//! can be copied out by the kernel (`sendfile`); the table comes after it because a
//! body streamed to disk as it arrives has its sums only at the end. Version 1 files
//! (one checksum over everything) are dropped as foreign at start: the cache refills.
//!
//! The head is this crate's own small binary encoding rather than pingora's
//! `CacheMeta::serialize`: that one compresses every header with zstd (a cost on each
//! write and each read) and drops nothing we need, but it does not keep the fields
//! Holdfast keeps (`updated` apart from `created`, the key text), so a second record
//! would be needed anyway.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora_cache::key::HashBinary;
use pingora_http::ResponseHeader;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::storage::entry::{MetaParts, StoredHeader, Wire};

pub(super) const MAGIC: [u8; 8] = *b"HFOBJ\0\0\x02";
pub(super) const PREFIX_LEN: usize = 32;
/// Largest head accepted when reading: far above any real header, small enough that a
/// corrupt length cannot make a read allocate without bound.
pub(super) const MAX_HEAD: usize = 1 << 20;
/// Blocks of 1 MiB: a range verifies at most 2 MiB it does not send, and the table of
/// an 8 GiB object is 64 KiB.
pub(super) const BLOCK_SHIFT: u32 = 20;
/// Bodies this large start on a [`PAGE`] boundary in their file.
const ALIGN_FROM: usize = crate::storage::FILE_BACKED_MIN;
pub(super) const PAGE: usize = 4096;

/// The fixed prefix of an object file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefix {
    pub checksum: u64,
    pub head_len: usize,
    pub block_shift: u32,
    pub body_len: u64,
}

impl Prefix {
    /// Parse the first [`PREFIX_LEN`] bytes; `None` when they are not an object file's.
    pub fn parse(bytes: &[u8]) -> Option<Prefix> {
        if bytes.len() < PREFIX_LEN || bytes[..8] != MAGIC {
            return None;
        }
        let checksum = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        let head_len = u32::from_le_bytes(bytes[16..20].try_into().ok()?) as usize;
        let block_shift = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
        let body_len = u64::from_le_bytes(bytes[24..32].try_into().ok()?);
        ((12..=30).contains(&block_shift) && head_len <= MAX_HEAD).then_some(Prefix {
            checksum,
            head_len,
            block_shift,
            body_len,
        })
    }

    /// How many blocks the body has.
    pub fn blocks(&self) -> u64 {
        self.body_len.div_ceil(1 << self.block_shift)
    }

    /// The length the whole file must have.
    pub fn file_len(&self) -> u64 {
        self.table_offset()
            .saturating_add(self.blocks().saturating_mul(8))
    }

    /// Where the body starts.
    pub fn body_offset(&self) -> u64 {
        PREFIX_LEN as u64 + self.head_len as u64
    }

    /// Where the block table starts.
    pub fn table_offset(&self) -> u64 {
        self.body_offset().saturating_add(self.body_len)
    }

    /// The checksummed part of the prefix (everything after the checksum).
    fn lengths(head_len: usize, block_shift: u32, body_len: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&(head_len as u32).to_le_bytes());
        out[4..8].copy_from_slice(&block_shift.to_le_bytes());
        out[8..].copy_from_slice(&body_len.to_le_bytes());
        out
    }

    /// Whether `head` and `table` are the ones this prefix was written for.
    pub fn matches(&self, head: &[u8], table: &[u8]) -> bool {
        prefix_checksum(head, self.block_shift, self.body_len, table) == self.checksum
    }
}

/// The prefix checksum over the lengths, the head and the block table.
fn prefix_checksum(head: &[u8], block_shift: u32, body_len: u64, table: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&Prefix::lengths(head.len(), block_shift, body_len));
    hasher.update(head);
    hasher.update(table);
    hasher.digest()
}

/// The checksum of one block of body.
pub(super) fn block_sum(block: &[u8]) -> u64 {
    xxh3_64(block)
}

/// The block sums of a whole body.
pub(super) fn block_sums(body: &[u8]) -> Vec<u64> {
    body.chunks(1 << BLOCK_SHIFT).map(block_sum).collect()
}

/// The block table as it is written after the body.
pub(super) fn table(sums: &[u64]) -> Vec<u8> {
    sums.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The sums a table's bytes hold.
pub(super) fn parse_table(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

/// The prefix of a finished object file.
pub(super) fn prefix(head: &[u8], body_len: u64, sums: &[u64]) -> [u8; PREFIX_LEN] {
    let checksum = prefix_checksum(head, BLOCK_SHIFT, body_len, &table(sums));
    let mut out = [0u8; PREFIX_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..16].copy_from_slice(&checksum.to_le_bytes());
    out[16..].copy_from_slice(&Prefix::lengths(head.len(), BLOCK_SHIFT, body_len));
    out
}

/// The head for a body of `body_len` bytes: a large body starts on a page boundary (sent
/// with `sendfile`, its pages then map whole onto the socket's).
pub(super) fn head(key: &HashBinary, key_text: &str, meta: &MetaParts, body_len: usize) -> Vec<u8> {
    let mut head = unpadded_head(key, key_text, meta);
    let pad = if body_len >= ALIGN_FROM {
        let unpadded = PREFIX_LEN + head.len() + 4;
        unpadded.next_multiple_of(PAGE) - unpadded
    } else {
        0
    };
    pad_head(&mut head, pad);
    head
}

/// The head padded so that the body starts at `body_offset`, for a body written before
/// its head was known; `None` when the head does not fit before it.
pub(super) fn head_at(
    key: &HashBinary,
    key_text: &str,
    meta: &MetaParts,
    body_offset: u64,
) -> Option<Vec<u8>> {
    let mut head = unpadded_head(key, key_text, meta);
    let unpadded = (PREFIX_LEN + head.len() + 4) as u64;
    let pad = usize::try_from(body_offset.checked_sub(unpadded)?).ok()?;
    pad_head(&mut head, pad);
    Some(head)
}

/// Where to start the body of a streamed fill whose head is not final yet (a length may
/// still be added): past the head as it stands, with room to spare, on a page boundary.
pub(super) fn streamed_body_offset(key: &HashBinary, key_text: &str, meta: &MetaParts) -> u64 {
    // Room for a `Content-Length` field added at the end, and then some.
    const SLACK: usize = 256;
    let unpadded = PREFIX_LEN + unpadded_head(key, key_text, meta).len() + 4 + SLACK;
    unpadded.next_multiple_of(PAGE) as u64
}

fn unpadded_head(key: &HashBinary, key_text: &str, meta: &MetaParts) -> Vec<u8> {
    let mut head = Vec::with_capacity(256 + key_text.len());
    head.extend_from_slice(key);
    for t in [meta.fresh_until, meta.created, meta.updated] {
        head.extend_from_slice(&nanos(t).to_le_bytes());
    }
    head.extend_from_slice(&meta.epoch_override.map_or(0, nanos).to_le_bytes());
    head.extend_from_slice(&meta.stale_while_revalidate_sec.to_le_bytes());
    head.extend_from_slice(&meta.stale_if_error_sec.to_le_bytes());
    match &meta.variance {
        Some(v) => {
            head.push(1);
            head.extend_from_slice(v);
        }
        None => {
            head.push(0);
            head.extend_from_slice(&[0; 16]);
        }
    }
    put_bytes(&mut head, key_text.as_bytes());
    encode_header(&mut head, &meta.header);
    head
}

/// Zero padding: its length, then the zeros.
fn pad_head(head: &mut Vec<u8>, pad: usize) {
    head.extend_from_slice(&(pad as u32).to_le_bytes());
    head.resize(head.len() + pad, 0);
}

/// A whole object file in memory (prefix, head, body, table), for tests.
#[cfg(test)]
pub(super) fn encode(key: &HashBinary, key_text: &str, meta: &MetaParts, body: &[u8]) -> Vec<u8> {
    let head = head(key, key_text, meta, body.len());
    let sums = block_sums(body);
    let mut out = prefix(&head, body.len() as u64, &sums).to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out.extend_from_slice(&table(&sums));
    out
}

/// What a head says: the key hash it was stored under, its meta and key text.
pub(super) struct Head {
    pub key: HashBinary,
    pub meta: MetaParts,
    pub key_text: Arc<str>,
}

/// Decode a head whose checksum already matched; `None` when it does not parse.
pub(super) fn decode_head(head: &[u8]) -> Option<Head> {
    let mut r = Reader(head);
    let key: HashBinary = r.take(16)?.try_into().ok()?;
    let fresh_until = time(r.u64()?);
    let created = time(r.u64()?);
    let updated = time(r.u64()?);
    let epoch_override = match r.u64()? {
        0 => None,
        n => Some(time(n)),
    };
    let stale_while_revalidate_sec = r.u32()?;
    let stale_if_error_sec = r.u32()?;
    let has_variance = r.take(1)?[0] == 1;
    let variance: HashBinary = r.take(16)?.try_into().ok()?;
    let key_text = std::str::from_utf8(r.bytes()?).ok()?;
    let key_text = Arc::from(key_text);
    let (header, wire) = decode_header(&mut r)?;
    let pad = r.u32()? as usize;
    if r.take(pad)?.iter().any(|&b| b != 0) || !r.0.is_empty() {
        return None;
    }
    Some(Head {
        key,
        meta: MetaParts {
            fresh_until,
            created,
            updated,
            epoch_override,
            stale_while_revalidate_sec,
            stale_if_error_sec,
            variance: has_variance.then_some(variance),
            header,
            wire,
        },
        key_text,
    })
}

/// Status, version, reason, then each field's name (with its case when the header keeps
/// it) and value.
fn encode_header(out: &mut Vec<u8>, header: &ResponseHeader) {
    out.extend_from_slice(&header.status.as_u16().to_le_bytes());
    out.push(match header.version {
        http::Version::HTTP_10 => 0,
        http::Version::HTTP_2 => 2,
        _ => 1,
    });
    out.push(u8::from(header.has_case()));
    put_bytes(out, header.get_reason_phrase().unwrap_or("").as_bytes());
    out.extend_from_slice(&(header.headers.len() as u32).to_le_bytes());
    if header.has_case() {
        for (name, value) in header.case_header_iter() {
            put_bytes(out, name.as_slice());
            put_bytes(out, value.as_bytes());
        }
    } else {
        for (name, value) in header.headers.iter() {
            put_bytes(out, name.as_str().as_bytes());
            put_bytes(out, value.as_bytes());
        }
    }
}

fn decode_header(r: &mut Reader<'_>) -> Option<(ResponseHeader, Option<Wire>)> {
    let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
    let version = match r.take(1)?[0] {
        0 => http::Version::HTTP_10,
        2 => http::Version::HTTP_2,
        _ => http::Version::HTTP_11,
    };
    let has_case = r.take(1)?[0] == 1;
    let reason = std::str::from_utf8(r.bytes()?).ok()?;
    let count = r.u32()? as usize;
    // Each field takes at least its two lengths: a count the head cannot hold is corrupt.
    if count > r.0.len() / 8 {
        return None;
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        fields.push((r.bytes()?, r.bytes()?));
    }
    StoredHeader {
        status,
        version,
        reason: (!reason.is_empty()).then_some(reason),
        has_case,
    }
    .pack(&fields)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MetaParts {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.set_reason_phrase(Some("Fine")).unwrap();
        header.append_header("Content-Type", "text/plain").unwrap();
        header.append_header("X-Mixed-Case", "a").unwrap();
        header.append_header("x-mixed-case", "b").unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        MetaParts {
            fresh_until: t + Duration::from_secs(60),
            created: t,
            updated: t + Duration::from_millis(1500),
            epoch_override: Some(t + Duration::from_secs(2)),
            stale_while_revalidate_sec: 30,
            stale_if_error_sec: 86_400,
            variance: Some([7; 16]),
            header,
            wire: None,
        }
    }

    #[test]
    fn a_head_comes_back_as_it_was_written() {
        let m = meta();
        let file = encode(&[3; 16], "shop|http|shop.example.com|/a?b", &m, b"body");
        let prefix = Prefix::parse(&file).unwrap();
        assert_eq!(prefix.body_len, 4);
        assert_eq!(prefix.blocks(), 1);
        assert_eq!(prefix.file_len(), file.len() as u64);
        let head = decode_head(&file[PREFIX_LEN..PREFIX_LEN + prefix.head_len]).unwrap();
        assert_eq!(head.key, [3; 16]);
        assert_eq!(&*head.key_text, "shop|http|shop.example.com|/a?b");
        assert_eq!(head.meta.fresh_until, m.fresh_until);
        assert_eq!(head.meta.created, m.created);
        assert_eq!(head.meta.updated, m.updated);
        assert_eq!(head.meta.epoch_override, m.epoch_override);
        assert_eq!(head.meta.stale_while_revalidate_sec, 30);
        assert_eq!(head.meta.stale_if_error_sec, 86_400);
        assert_eq!(head.meta.variance, Some([7; 16]));
        let h = &head.meta.header;
        assert_eq!(h.status, 200);
        assert_eq!(h.get_reason_phrase(), Some("Fine"));
        let fields: Vec<(String, String)> = h
            .case_header_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n.as_slice()).into_owned(),
                    v.to_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("Content-Type".to_string(), "text/plain".to_string()),
                ("X-Mixed-Case".to_string(), "a".to_string()),
                ("x-mixed-case".to_string(), "b".to_string()),
            ]
        );
    }

    #[test]
    fn the_prefix_covers_lengths_head_and_table_and_each_block_its_bytes() {
        let m = meta();
        let body: Vec<u8> = (0..(3 << BLOCK_SHIFT) / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let file = encode(&[3; 16], "k", &m, &body);
        let prefix = Prefix::parse(&file).unwrap();
        assert_eq!(prefix.blocks(), 2);
        assert_eq!(prefix.file_len(), file.len() as u64);
        assert_eq!(
            prefix.body_offset() % PAGE as u64,
            0,
            "a large body is page aligned"
        );
        let head = &file[PREFIX_LEN..prefix.body_offset() as usize];
        let table_bytes = &file[prefix.table_offset() as usize..];
        assert!(prefix.matches(head, table_bytes));
        let mut flipped = head.to_vec();
        flipped[20] ^= 1;
        assert!(!prefix.matches(&flipped, table_bytes));
        let mut table_flipped = table_bytes.to_vec();
        table_flipped[3] ^= 1;
        assert!(!prefix.matches(head, &table_flipped));
        let sums = parse_table(table_bytes);
        assert_eq!(sums, block_sums(&body));
        let mut changed = body[1 << BLOCK_SHIFT..].to_vec();
        changed[7] ^= 1;
        assert_ne!(block_sum(&changed), sums[1]);
    }

    #[test]
    fn a_streamed_head_fits_before_its_body_with_a_length_added() {
        let mut m = meta();
        let offset = streamed_body_offset(&[3; 16], "k", &m);
        assert_eq!(offset % PAGE as u64, 0);
        m.frame_by_length(123_456_789_012);
        let head = head_at(&[3; 16], "k", &m, offset).unwrap();
        assert_eq!((PREFIX_LEN + head.len()) as u64, offset);
        let decoded = decode_head(&head).unwrap();
        assert_eq!(
            decoded.meta.header.headers.get("content-length").unwrap(),
            "123456789012"
        );
    }

    #[test]
    fn garbage_is_not_an_object_file() {
        assert!(Prefix::parse(b"").is_none());
        assert!(Prefix::parse(&[0; 64]).is_none());
        let mut file = encode(&[3; 16], "k", &meta(), b"");
        file[20] = 1; // a block of 2 bytes
        assert!(Prefix::parse(&file).is_none());
        let mut v1 = encode(&[3; 16], "k", &meta(), b"");
        v1[7] = 1; // the first format
        assert!(Prefix::parse(&v1).is_none());
        // A head cut short or with trailing bytes does not decode.
        let file = encode(&[3; 16], "k", &meta(), b"");
        let head = &file[PREFIX_LEN..];
        assert!(decode_head(&head[..head.len() - 1]).is_none());
        let mut longer = head.to_vec();
        longer.push(0);
        assert!(decode_head(&longer).is_none());
    }
}
