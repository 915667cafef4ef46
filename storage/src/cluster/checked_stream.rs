//! Bytes streamed from a peer, checked chunk by chunk against the blob's
//! integrity index before any of them are passed on: a range read through
//! a node that holds no copy is then checked on this node too, not only
//! by the holder that sent it (invariant 5: every byte is checked before
//! it leaves the node).

use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::integrity::ChunkIndex;

/// The span a peer must send so that bytes `start..start + len` can be
/// checked: the whole chunks they touch (empty for an empty range).
pub fn aligned(index: &ChunkIndex, start: u64, len: u64) -> Range<u64> {
    let chunks = index.chunks_for(start, len);
    if chunks.is_empty() {
        return start..start;
    }
    index.bounds(chunks.start).start..index.bounds(chunks.end - 1).end
}

/// Pass on bytes `start..start + len` of a blob from `body`, which carries
/// the span `aligned(index, start, len)`. Each chunk is gathered whole and
/// checked against `index` (on blocking threads, a few chunks ahead)
/// before any of its bytes go on. A chunk that fails, a body that fails or
/// one that ends short ends the stream with an error, and nothing after it.
pub fn checked_range<S>(
    body: S,
    index: Arc<ChunkIndex>,
    start: u64,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    let chunks = index.chunks_for(start, len);
    // Each chunk as the pieces the peer sent (cut at chunk bounds without
    // a copy), with a piece that runs into the next chunk carried over.
    let gather = {
        let index = index.clone();
        futures::stream::unfold(
            (body, None::<Bytes>, chunks),
            move |(mut body, mut carry, mut todo)| {
                let index = index.clone();
                async move {
                    let i = todo.next()?;
                    let b = index.bounds(i);
                    let mut want = (b.end - b.start) as usize;
                    let mut parts = Vec::new();
                    while want > 0 {
                        let mut piece = match carry.take() {
                            Some(p) => p,
                            None => match body.next().await {
                                Some(Ok(p)) => p,
                                Some(Err(e)) => return Some((Err(e), (body, None, 0..0))),
                                None => {
                                    let e = io::Error::new(
                                        io::ErrorKind::UnexpectedEof,
                                        format!("the peer's stream ended inside chunk {i}"),
                                    );
                                    return Some((Err(e), (body, None, 0..0)));
                                }
                            },
                        };
                        if piece.len() > want {
                            carry = Some(piece.split_off(want));
                        }
                        want -= piece.len();
                        parts.push(piece);
                    }
                    Some((Ok((i, parts)), (body, carry, todo)))
                }
            },
        )
    };
    let lookahead = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    gather
        .map(move |gathered| {
            let index = index.clone();
            async move {
                let (i, parts) = gathered?;
                let checker = index.clone();
                let (ok, parts) = tokio::task::spawn_blocking(move || {
                    let ok = checker.check_parts(i, parts.iter().map(|p| &p[..]));
                    (ok, parts)
                })
                .await
                .map_err(io::Error::other)?;
                if !ok {
                    let e = format!("chunk {i} from the peer failed verification");
                    tracing::warn!("{e}; cutting the read");
                    return Err(io::Error::other(e));
                }
                // Only the bytes of the range go on.
                let (from, to) = (start, start + len);
                let mut at = index.bounds(i).start;
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    let (a, b) = (at, at + p.len() as u64);
                    at = b;
                    if b > from && a < to {
                        let lo = (from.max(a) - a) as usize;
                        let hi = (to.min(b) - a) as usize;
                        out.push(p.slice(lo..hi));
                    }
                }
                Ok(out)
            }
        })
        .buffered(lookahead)
        // Nothing after the first error.
        .scan(false, |failed, r| {
            let out = (!*failed).then(|| {
                *failed = r.is_err();
                r
            });
            std::future::ready(out)
        })
        .flat_map(|r| {
            let items: Vec<io::Result<Bytes>> = match r {
                Ok(parts) => parts.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::CHUNK;
    use proptest::prelude::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1013) as u8).collect()
    }

    /// `bytes` as a stream cut at `cuts` (offsets into it).
    fn pieces(bytes: &[u8], mut cuts: Vec<usize>) -> impl Stream<Item = io::Result<Bytes>> {
        cuts.retain(|c| *c < bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            out.push(Ok(Bytes::copy_from_slice(&bytes[at..c])));
            at = c;
        }
        futures::stream::iter(out)
    }

    /// What the checked stream passes on before it ends, and how it ends.
    fn run(
        sent: &[u8],
        cuts: Vec<usize>,
        index: &ChunkIndex,
        start: u64,
        len: u64,
    ) -> (Vec<u8>, Result<(), String>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let index = Arc::new(index.clone());
        let body = Box::pin(pieces(sent, cuts));
        rt.block_on(async move {
            let mut s = Box::pin(checked_range(body, index, start, len));
            let mut got = Vec::new();
            while let Some(r) = s.next().await {
                match r {
                    Ok(b) => got.extend_from_slice(&b),
                    Err(e) => return (got, Err(e.to_string())),
                }
            }
            (got, Ok(()))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// For any blob, range and cutting of the peer's stream: a range
        /// clear of the damaged chunk comes out exactly; one that touches
        /// it ends with an error, having passed on only correct bytes from
        /// before that chunk.
        #[test]
        fn a_range_passes_exactly_when_its_chunks_are_sound(
            size in 1usize..(3 * CHUNK as usize + 500),
            a in 0.0f64..1.0,
            b in 0.0f64..1.0,
            damaged in proptest::option::of(0.0f64..1.0),
            cuts in proptest::collection::vec(0usize..(4 * CHUNK as usize), 0..6),
        ) {
            let data = blob(size);
            let index = ChunkIndex::of(&data);
            let (x, y) = ((a * size as f64) as u64, (b * size as f64) as u64);
            let (start, end) = (x.min(y), x.max(y).max(x.min(y) + 1).min(size as u64));
            let len = end - start;
            let span = aligned(&index, start, len);
            let mut sent = data[span.start as usize..span.end as usize].to_vec();
            let bad = damaged.map(|f| (f * size as f64) as u64);
            if let Some(at) = bad.filter(|at| span.contains(at)) {
                sent[(at - span.start) as usize] ^= 0x40;
            }
            let cuts = cuts.into_iter().map(|c| c % (sent.len() + 1)).collect();
            let (got, end_) = run(&sent, cuts, &index, start, len);
            let want = &data[start as usize..(start + len) as usize];
            let touched = bad.filter(|at| span.contains(at));
            match touched {
                None => {
                    prop_assert!(end_.is_ok(), "{end_:?}");
                    prop_assert!(got == want);
                }
                Some(at) => {
                    prop_assert!(end_.is_err());
                    let bad_chunk_start = at / CHUNK * CHUNK;
                    prop_assert!(start + (got.len() as u64) <= bad_chunk_start.max(start));
                    prop_assert!(got[..] == want[..got.len()]);
                }
            }
        }
    }

    #[test]
    fn a_short_or_failing_stream_ends_with_an_error() {
        let data = blob(2 * CHUNK as usize + 10);
        let index = ChunkIndex::of(&data);
        let len = data.len() as u64;
        // One byte short: the first two chunks go on, the last cannot.
        let (got, end) = run(&data[..data.len() - 1], vec![], &index, 0, len);
        assert!(end.unwrap_err().contains("ended inside chunk 2"));
        assert_eq!(got, &data[..2 * CHUNK as usize]);
        // Too much is not passed on either: only the range asked for.
        let (got, end) = run(&data, vec![5], &index, 3, 100);
        assert_eq!((got, end), (data[3..103].to_vec(), Ok(())));
    }
}
