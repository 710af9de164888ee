//! The object file: one stored response, its key and a checksum over all of it.
//!
//! ```text
//! offset  size  field (little-endian)
//!      0     8  magic b"HFOBJ\0\0\x01" (the last byte is the format version)
//!      8     8  checksum: xxh3-64 of every byte from offset 16 to the end of the file
//!     16     4  head length H
//!     20     4  zero (reserved)
//!     24     8  body length B
//!     32     H  head: key hash, meta fields, key text, response header, padding
//!   32+H     B  body, exactly as stored
//! ```
//!
//! The file's length must be 32 + H + B: anything shorter is a torn write. The checksum
//! covers the lengths, the head and the body, so a flipped bit anywhere but in the magic
//! (which fails on its own) is caught. The body is last and whole so that it can be
//! copied out by the kernel (`sendfile`) at a known offset.
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
use xxhash_rust::xxh3::Xxh3;

use crate::storage::entry::{MetaParts, StoredHeader, Wire};

pub(super) const MAGIC: [u8; 8] = *b"HFOBJ\0\0\x01";
pub(super) const PREFIX_LEN: usize = 32;
/// Largest head accepted when reading: far above any real header, small enough that a
/// corrupt length cannot make a read allocate without bound.
pub(super) const MAX_HEAD: usize = 1 << 20;
/// Bodies this large start on a [`PAGE`] boundary in their file.
const ALIGN_FROM: usize = crate::storage::FILE_BACKED_MIN;
const PAGE: usize = 4096;

/// The fixed prefix of an object file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefix {
    pub checksum: u64,
    pub head_len: usize,
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
        let reserved = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
        let body_len = u64::from_le_bytes(bytes[24..32].try_into().ok()?);
        (reserved == 0 && head_len <= MAX_HEAD).then_some(Prefix {
            checksum,
            head_len,
            body_len,
        })
    }

    /// The length the whole file must have.
    pub fn file_len(&self) -> u64 {
        (PREFIX_LEN as u64 + self.head_len as u64).saturating_add(self.body_len)
    }

    /// Where the body starts.
    pub fn body_offset(&self) -> u64 {
        PREFIX_LEN as u64 + self.head_len as u64
    }

    /// The checksummed part of the prefix (everything after the checksum).
    fn lengths(head_len: usize, body_len: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&(head_len as u32).to_le_bytes());
        out[8..].copy_from_slice(&body_len.to_le_bytes());
        out
    }
}

/// A checksum under way: the prefix's lengths and the head, then the body.
pub(super) fn checksum_start(head_len: usize, body_len: u64, head: &[u8]) -> Xxh3 {
    let mut hasher = Xxh3::new();
    hasher.update(&Prefix::lengths(head_len, body_len));
    hasher.update(head);
    hasher
}

/// The prefix and head of an object file for `body`, its checksum taken.
pub(super) fn encode(key: &HashBinary, key_text: &str, meta: &MetaParts, body: &[u8]) -> Vec<u8> {
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
    // Zero padding (its length, then the zeros) so that a large body starts on a page
    // boundary: sent with `sendfile`, its pages then map whole onto the socket's.
    let pad = if body.len() >= ALIGN_FROM {
        let unpadded = PREFIX_LEN + head.len() + 4;
        unpadded.next_multiple_of(PAGE) - unpadded
    } else {
        0
    };
    head.extend_from_slice(&(pad as u32).to_le_bytes());
    head.resize(head.len() + pad, 0);

    let mut hasher = checksum_start(head.len(), body.len() as u64, &head);
    hasher.update(body);
    let mut out = Vec::with_capacity(PREFIX_LEN + head.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&hasher.digest().to_le_bytes());
    out.extend_from_slice(&Prefix::lengths(head.len(), body.len() as u64));
    out.extend_from_slice(&head);
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
        assert_eq!(prefix.file_len(), file.len() as u64 + 4);
        let head = decode_head(&file[PREFIX_LEN..]).unwrap();
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
    fn the_checksum_covers_lengths_head_and_body() {
        let m = meta();
        let file = encode(&[3; 16], "k", &m, b"body");
        let prefix = Prefix::parse(&file).unwrap();
        let head = &file[PREFIX_LEN..];
        let digest = |head: &[u8], body: &[u8]| {
            let mut h = checksum_start(head.len(), body.len() as u64, head);
            h.update(body);
            h.digest()
        };
        assert_eq!(digest(head, b"body"), prefix.checksum);
        assert_ne!(digest(head, b"bodY"), prefix.checksum);
        let mut flipped = head.to_vec();
        flipped[20] ^= 1;
        assert_ne!(digest(&flipped, b"body"), prefix.checksum);
    }

    #[test]
    fn garbage_is_not_an_object_file() {
        assert!(Prefix::parse(b"").is_none());
        assert!(Prefix::parse(&[0; 64]).is_none());
        let mut file = encode(&[3; 16], "k", &meta(), b"");
        file[20] = 1; // reserved
        assert!(Prefix::parse(&file).is_none());
        // A head cut short or with trailing bytes does not decode.
        let file = encode(&[3; 16], "k", &meta(), b"");
        assert!(decode_head(&file[PREFIX_LEN..file.len() - 1]).is_none());
        let mut longer = file[PREFIX_LEN..].to_vec();
        longer.push(0);
        assert!(decode_head(&longer).is_none());
    }
}
