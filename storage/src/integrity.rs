//! A blob's integrity index: XXH3-128 hashes of its fixed-size chunks,
//! made from the same bytes whose SHA-256 was checked against the digest
//! before the blob was installed, and kept beside it. A read checks each
//! chunk it serves against its hash (tens of GB/s per core with AVX2, where
//! SHA-256 of the whole blob is one core's 1.8 GB/s and cannot check a
//! range at all).
//!
//! Why not a cryptographic hash: the index detects damage (bit rot, torn
//! or misdirected writes), not forgery. Its hashes are only ever made from
//! bytes whose SHA-256 matched the digest, or taken from an authenticated
//! peer together with bytes this node checked itself; anyone able to
//! rewrite a stored copy can rewrite its index too, whatever the hash. A
//! blob's identity stays its SHA-256, which scrub checks. BLAKE3 (the
//! first format, `tcrcidx1`) took half of the node's CPU on a verified
//! pull on a 2-core AVX2 machine; an index of that format no longer
//! decodes and is made again from a full SHA-256 check, like a lost one.
//!
//! On disk: magic, chunk size, blob size, chunk count, the hashes, then an
//! XXH3-128 of everything before it. A torn or rotten index fails that
//! check and is treated as missing (the next full read or scrub makes it
//! again).

use std::ops::Range;

/// Bytes per chunk. A range read checks whole chunks, so it reads at most
/// two chunks more than it sends.
pub const CHUNK: u64 = 1 << 20;

const MAGIC: &[u8; 8] = b"tcrcidx2";
const HEADER: usize = 8 + 4 + 8 + 8;
const HASH: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("not an integrity index (bad magic or length)")]
    Malformed,
    #[error("the index was made with chunks of {0} bytes, not {CHUNK}")]
    ChunkSize(u32),
    #[error("the index describes {indexed} bytes, the blob has {actual}")]
    Size { indexed: u64, actual: u64 },
    #[error("the index's own checksum does not match")]
    Checksum,
}

/// Hashes a blob chunk by chunk as its bytes arrive, in any pieces.
#[derive(Clone, Default)]
pub struct ChunkHasher {
    done: Vec<[u8; HASH]>,
    current: Xxh3,
    in_chunk: u64,
    size: u64,
}

impl ChunkHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let n = ((CHUNK - self.in_chunk) as usize).min(data.len());
            self.current.update(&data[..n]);
            self.in_chunk += n as u64;
            if self.in_chunk == CHUNK {
                self.done.push(std::mem::take(&mut self.current).sum());
                self.in_chunk = 0;
            }
            data = &data[n..];
        }
    }

    /// The index of every byte given so far.
    pub fn finish(&self) -> ChunkIndex {
        let mut hashes = self.done.clone();
        if self.in_chunk > 0 {
            hashes.push(self.current.sum());
        }
        ChunkIndex {
            size: self.size,
            hashes,
        }
    }
}

/// XXH3-128 in the index's byte order (little-endian).
#[derive(Clone, Default)]
struct Xxh3(twox_hash::XxHash3_128);

impl Xxh3 {
    fn of(b: &[u8]) -> [u8; HASH] {
        twox_hash::XxHash3_128::oneshot(b).to_le_bytes()
    }

    fn update(&mut self, b: &[u8]) {
        self.0.write(b);
    }

    fn sum(&self) -> [u8; HASH] {
        self.0.finish_128().to_le_bytes()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    size: u64,
    hashes: Vec<[u8; HASH]>,
}

/// Chunks in a blob of `size` bytes.
fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK)
}

impl ChunkIndex {
    /// The index of `bytes` in one go (chunks hashed on this thread).
    pub fn of(bytes: &[u8]) -> ChunkIndex {
        let mut h = ChunkHasher::new();
        h.update(bytes);
        h.finish()
    }

    /// Size of the blob the index describes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Length of the encoded index of a blob of `size` bytes (what a
    /// reader expects from a peer before it reads any of it).
    pub fn encoded_len(size: u64) -> Option<usize> {
        usize::try_from(chunk_count(size))
            .ok()?
            .checked_mul(HASH)?
            .checked_add(HEADER + HASH)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.hashes.len() * HASH + HASH);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(CHUNK as u32).to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.hashes.len() as u64).to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        let sum = Xxh3::of(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Decode an index for a blob of `size` bytes. The length is checked
    /// against `size` before anything is allocated.
    pub fn from_bytes(b: &[u8], size: u64) -> Result<ChunkIndex, IndexError> {
        let field = |at: usize, n: usize| b.get(at..at + n).ok_or(IndexError::Malformed);
        if field(0, 8)? != MAGIC {
            return Err(IndexError::Malformed);
        }
        let chunk = u32::from_le_bytes(field(8, 4)?.try_into().expect("4 bytes"));
        if u64::from(chunk) != CHUNK {
            return Err(IndexError::ChunkSize(chunk));
        }
        let indexed = u64::from_le_bytes(field(12, 8)?.try_into().expect("8 bytes"));
        if indexed != size {
            return Err(IndexError::Size {
                indexed,
                actual: size,
            });
        }
        let count = u64::from_le_bytes(field(20, 8)?.try_into().expect("8 bytes"));
        if count != chunk_count(size) {
            return Err(IndexError::Malformed);
        }
        let body = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(HASH))
            .and_then(|n| n.checked_add(HEADER))
            .ok_or(IndexError::Malformed)?;
        if b.len() != body + HASH {
            return Err(IndexError::Malformed);
        }
        if Xxh3::of(&b[..body])[..] != b[body..] {
            return Err(IndexError::Checksum);
        }
        let hashes = b[HEADER..body]
            .chunks_exact(HASH)
            .map(|h| h.try_into().expect("16 bytes"))
            .collect();
        Ok(ChunkIndex { size, hashes })
    }

    /// The chunks that hold bytes `start..start + len`.
    pub fn chunks_for(&self, start: u64, len: u64) -> Range<u64> {
        if len == 0 {
            return 0..0;
        }
        let end = start.saturating_add(len).min(self.size);
        (start / CHUNK)..end.div_ceil(CHUNK)
    }

    /// Byte range of chunk `i` in the blob.
    pub fn bounds(&self, i: u64) -> Range<u64> {
        let from = i.saturating_mul(CHUNK).min(self.size);
        from..from.saturating_add(CHUNK).min(self.size)
    }

    /// Whether `parts`, one after the other, are chunk `i` of the blob.
    pub fn check_parts<'a>(&self, i: u64, parts: impl IntoIterator<Item = &'a [u8]>) -> bool {
        let Some(want) = usize::try_from(i).ok().and_then(|i| self.hashes.get(i)) else {
            return false;
        };
        let (mut h, mut n) = (Xxh3::default(), 0u64);
        for p in parts {
            h.update(p);
            n += p.len() as u64;
        }
        let b = self.bounds(i);
        n == b.end - b.start && &h.sum() == want
    }

    /// Whether `bytes` are chunk `i` of the blob.
    pub fn check(&self, i: u64, bytes: &[u8]) -> bool {
        self.check_parts(i, [bytes])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    proptest! {
        #[test]
        fn pieces_of_any_size_give_the_index_of_the_whole(
            len in 0usize..(3 * CHUNK as usize + 100),
            cuts in proptest::collection::vec(0usize..(3 * CHUNK as usize + 100), 0..8),
        ) {
            let b = blob(len);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            let mut h = ChunkHasher::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([len]) {
                h.update(&b[at..c]);
                at = c;
            }
            let idx = h.finish();
            prop_assert_eq!(&idx, &ChunkIndex::of(&b));
            prop_assert_eq!(idx.hashes.len() as u64, chunk_count(len as u64));
            for i in 0..chunk_count(len as u64) {
                let r = idx.bounds(i);
                prop_assert!(idx.check(i, &b[r.start as usize..r.end as usize]));
            }
            let back = ChunkIndex::from_bytes(&idx.to_bytes(), len as u64);
            prop_assert_eq!(back, Ok(idx));
        }

        #[test]
        fn a_range_maps_to_the_chunks_that_hold_it(
            size in 1u64..(10 * CHUNK),
            start in 0u64..(10 * CHUNK),
            len in 1u64..(4 * CHUNK),
        ) {
            let idx = ChunkIndex { size, hashes: vec![[0; HASH]; chunk_count(size) as usize] };
            let start = start % size;
            let len = len.min(size - start);
            let r = idx.chunks_for(start, len);
            // The first chunk holds the first byte, the last the last byte.
            prop_assert!(idx.bounds(r.start).contains(&start));
            prop_assert!(idx.bounds(r.end - 1).contains(&(start + len - 1)));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200), size in any::<u64>()) {
            let _ = ChunkIndex::from_bytes(&b, size);
        }
    }

    #[test]
    fn one_flipped_bit_fails_its_chunk_only() {
        let mut b = blob(2 * CHUNK as usize + 10);
        let idx = ChunkIndex::of(&b);
        b[CHUNK as usize + 5] ^= 1;
        let part = |i: u64| {
            let r = idx.bounds(i);
            b[r.start as usize..r.end as usize].to_vec()
        };
        assert!(idx.check(0, &part(0)));
        assert!(!idx.check(1, &part(1)));
        assert!(idx.check(2, &part(2)));
        assert!(!idx.check(3, &[]), "no such chunk");
    }

    #[test]
    fn a_torn_rotten_or_foreign_index_is_refused() {
        let b = blob(CHUNK as usize + 1);
        let idx = ChunkIndex::of(&b);
        let bytes = idx.to_bytes();
        assert_eq!(
            ChunkIndex::from_bytes(&bytes[..bytes.len() - 1], b.len() as u64),
            Err(IndexError::Malformed)
        );
        let mut rotten = bytes.clone();
        rotten[HEADER + 3] ^= 0x40;
        assert_eq!(
            ChunkIndex::from_bytes(&rotten, b.len() as u64),
            Err(IndexError::Checksum)
        );
        assert_eq!(
            ChunkIndex::from_bytes(&bytes, 7),
            Err(IndexError::Size {
                indexed: b.len() as u64,
                actual: 7
            })
        );
        // A count that claims more chunks than the size allows is refused
        // before anything is allocated.
        let mut huge = bytes.clone();
        huge[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ChunkIndex::from_bytes(&huge, b.len() as u64),
            Err(IndexError::Malformed)
        );
        assert_eq!(ChunkIndex::from_bytes(&[], 0), Err(IndexError::Malformed));
        // An index of the first (BLAKE3) format is not read as this one:
        // the copy is indexed again from a full SHA-256 check.
        let mut first_format = bytes.clone();
        first_format[..8].copy_from_slice(b"tcrcidx1");
        assert_eq!(
            ChunkIndex::from_bytes(&first_format, b.len() as u64),
            Err(IndexError::Malformed)
        );
    }

    #[test]
    fn an_empty_blob_has_an_empty_index() {
        let idx = ChunkIndex::of(&[]);
        assert_eq!(idx.chunks_for(0, 0), 0..0);
        assert_eq!(ChunkIndex::from_bytes(&idx.to_bytes(), 0), Ok(idx));
    }
}
