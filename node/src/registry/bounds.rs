//! How many bytes a peer's registry sync message inflates to, measured
//! before automerge sees it.
//!
//! automerge inflates DEFLATE data with `read_to_end` and no limit: a
//! compressed change chunk, and the compressed columns of a document or
//! bundle chunk (a sync message carries a whole saved document when the
//! peer lacks most of the history). So 64 KiB on the wire can become 64 MiB
//! in memory, and a 64 MiB message tens of GiB. automerge offers no limit,
//! so this walks the message's framing itself (sync message, chunk headers,
//! column metadata) and streams each compressed part through an inflater
//! into a sink that stops at the limit: a bomb costs one small buffer and
//! the CPU of inflating up to the limit, and is refused before automerge
//! allocates anything.
//!
//! The walk follows automerge's binary format (version 0.12); anything it
//! cannot frame is refused as malformed, which automerge would refuse too.

use std::io::Read;

/// The leading bytes of every automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
pub(super) const CHUNK_DOCUMENT: u8 = 0;
pub(super) const CHUNK_CHANGE: u8 = 1;
pub(super) const CHUNK_COMPRESSED: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;
/// The bit of a column specification that says its data is deflated.
const COLUMN_DEFLATE: u32 = 0b1000;
const HASH_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoundError {
    #[error("inflates to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Malformed(&'static str),
}

/// The size a message of `wire` bytes may inflate to: what honest registry
/// documents need (their values are signed records, which compress little)
/// with a wide margin, never a multiple a bomb reaches.
pub fn inflate_limit(wire: usize) -> u64 {
    const BASE: u64 = 8 * 1024 * 1024;
    const RATIO: u64 = 8;
    BASE.saturating_add(RATIO.saturating_mul(wire as u64))
}

/// Bytes the message holds once every compressed part is inflated, or an
/// error as soon as that passes `limit`.
pub fn inflated_size(message: &[u8], limit: u64) -> Result<u64, BoundError> {
    let mut r = Reader(message);
    match r.byte()? {
        0x42 | 0x43 => {}
        _ => return Err(BoundError::Malformed("not a sync message")),
    }
    r.hashes()?; // heads
    r.hashes()?; // need
    for _ in 0..r.count()? {
        r.hashes()?; // last sync
        r.bytes()?; // bloom filter
    }
    let mut total = Total { n: 0, limit };
    for _ in 0..r.count()? {
        let mut chunks = Reader(r.bytes()?);
        while !chunks.0.is_empty() {
            chunk(&mut chunks, &mut total)?;
        }
    }
    Ok(total.n)
}

/// The chunks of one entry of a sync message's change list, each whole
/// (header included) with its type, for code that reads them one by one.
pub(super) fn chunks(entry: &[u8]) -> Result<Vec<(u8, &[u8])>, BoundError> {
    let mut r = Reader(entry);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let start = r.0;
        if r.take(4)? != MAGIC {
            return Err(BoundError::Malformed("bad chunk magic"));
        }
        r.take(4)?; // checksum
        let kind = r.byte()?;
        let len = r.len()?;
        r.take(len)?;
        out.push((kind, &start[..start.len() - r.0.len()]));
    }
    Ok(out)
}

/// A running total that refuses to pass its limit.
struct Total {
    n: u64,
    limit: u64,
}

impl Total {
    fn add(&mut self, n: u64) -> Result<(), BoundError> {
        self.n = self.n.saturating_add(n);
        if self.n > self.limit {
            return Err(BoundError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// Inflates `data` into a sink, counting, and stops past the limit.
    fn inflate(&mut self, data: &[u8]) -> Result<(), BoundError> {
        let room = self.limit - self.n;
        let mut inflater = flate2::bufread::DeflateDecoder::new(data).take(room.saturating_add(1));
        let n = std::io::copy(&mut inflater, &mut std::io::sink())
            .map_err(|_| BoundError::Malformed("bad deflate stream"))?;
        self.add(n)
    }
}

/// One chunk: header, then its body by type.
fn chunk(r: &mut Reader<'_>, total: &mut Total) -> Result<(), BoundError> {
    if r.take(4)? != MAGIC {
        return Err(BoundError::Malformed("bad chunk magic"));
    }
    r.take(4)?; // checksum
    let kind = r.byte()?;
    let len = r.len()?;
    let body = r.take(len)?;
    match kind {
        // A change's own columns are never compressed (automerge refuses
        // them), so its size is its size.
        CHUNK_CHANGE => total.add(body.len() as u64),
        CHUNK_COMPRESSED => total.inflate(body),
        CHUNK_DOCUMENT => {
            let mut b = Reader(body);
            for _ in 0..b.count()? {
                b.bytes()?; // actor
            }
            b.hashes()?; // heads
            let changes = b.columns()?;
            let ops = b.columns()?;
            b.column_data(&changes, total)?;
            b.column_data(&ops, total)?;
            total.add(b.0.len() as u64)
        }
        CHUNK_BUNDLE => {
            let mut b = Reader(body);
            b.hashes()?; // deps
            for _ in 0..b.count()? {
                b.bytes()?; // actor
            }
            let changes = b.columns()?;
            b.column_data(&changes, total)?;
            let ops = b.columns()?;
            b.column_data(&ops, total)?;
            total.add(b.0.len() as u64)
        }
        _ => Err(BoundError::Malformed("unknown chunk type")),
    }
}

/// A cursor over bytes in automerge's encoding (unsigned LEB128 lengths).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoundError> {
        if n > self.0.len() {
            return Err(BoundError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, BoundError> {
        Ok(self.take(1)?[0])
    }

    fn uleb(&mut self) -> Result<u64, BoundError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BoundError::Malformed("LEB128 number too long"))
    }

    /// A length that must fit in what is left.
    fn len(&mut self) -> Result<usize, BoundError> {
        let n = self.uleb()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or(BoundError::Malformed("length past the end"))
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, BoundError> {
        self.len()
    }

    fn bytes(&mut self) -> Result<&'a [u8], BoundError> {
        let n = self.len()?;
        self.take(n)
    }

    fn hashes(&mut self) -> Result<(), BoundError> {
        let n = self.count()?;
        let bytes = n
            .checked_mul(HASH_BYTES)
            .ok_or(BoundError::Malformed("too many hashes"))?;
        self.take(bytes).map(|_| ())
    }

    /// Column metadata: (specification, data length) pairs.
    fn columns(&mut self) -> Result<Vec<(u32, usize)>, BoundError> {
        let n = self.count()?;
        let mut out = Vec::new();
        for _ in 0..n {
            let spec =
                u32::try_from(self.uleb()?).map_err(|_| BoundError::Malformed("column specification past u32"))?;
            let len = self.uleb()?;
            let len = usize::try_from(len).map_err(|_| BoundError::Malformed("column length"))?;
            out.push((spec, len));
        }
        Ok(out)
    }

    /// The data of `columns`, in order, inflating the deflated ones.
    fn column_data(&mut self, columns: &[(u32, usize)], total: &mut Total) -> Result<(), BoundError> {
        for &(spec, len) in columns {
            let data = self.take(len)?;
            if spec & COLUMN_DEFLATE != 0 {
                total.inflate(data)?;
            } else {
                total.add(data.len() as u64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Replica;
    use automerge::sync;
    use automerge::transaction::Transactable;
    use packfed_protocol::RecordId;

    fn first_message(replica: &mut Replica) -> Vec<u8> {
        // A peer that says it supports v2 gets the whole saved document
        // (compressed columns) when it lacks most of the history.
        let mut peer = Replica::new();
        let mut theirs = sync::State::new();
        let mut ours = sync::State::new();
        let hello = peer.generate(&mut theirs).expect("a first message");
        replica.receive(&mut ours, &hello, |_| true).expect("hello");
        replica.generate(&mut ours).expect("a reply")
    }

    #[test]
    fn honest_documents_fit_their_limit_with_room() {
        let mut replica = Replica::new();
        // Records alike except for random-looking bytes, as signed records are.
        for i in 0..2_000u32 {
            let mut env = format!("release acme/pack-{i} 1.0.0 a template pack for code generators ").into_bytes();
            env.extend(blake3::hash(&i.to_le_bytes()).as_bytes());
            env.extend(blake3::hash(&(i + 1).to_le_bytes()).as_bytes());
            replica.insert(&RecordId::of(&env), &env).unwrap();
        }
        let msg = first_message(&mut replica);
        let inflated = inflated_size(&msg, u64::MAX).unwrap();
        assert!(inflated >= msg.len() as u64);
        assert!(
            inflated < 3 * msg.len() as u64,
            "{inflated} bytes from {} on the wire",
            msg.len()
        );
        assert!(inflated <= inflate_limit(msg.len()));
    }

    #[test]
    fn a_bomb_is_refused_before_it_is_inflated_whole() {
        let mut replica = Replica::new();
        replica
            .document_mut()
            .put(automerge::ROOT, "bomb", vec![0u8; 16 << 20])
            .unwrap();
        let msg = first_message(&mut replica);
        assert!(msg.len() < 1 << 20, "16 MiB of zeros deflate to {} bytes", msg.len());
        let limit = inflate_limit(msg.len());
        assert_eq!(inflated_size(&msg, limit), Err(BoundError::TooLarge { limit }));
        // The receiving replica refuses it and stays empty.
        let mut victim = Replica::new();
        let err = victim.receive(&mut sync::State::new(), &msg, |_| true).unwrap_err();
        assert!(err.to_string().contains("inflates"), "{err}");
        assert!(victim.is_empty());
    }

    #[test]
    fn framing_errors_are_refused_not_panics() {
        assert!(inflated_size(&[], 10).is_err());
        assert!(inflated_size(&[0x42, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 10).is_err());
        // A count far past the end.
        assert!(inflated_size(&[0x43, 0x80, 0x80, 0x80, 0x80, 0x01], 10).is_err());
    }
}
