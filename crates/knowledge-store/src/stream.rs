//! Byte streams for `stream_file` and `put_stream`: the stream type, exact re-chunking and
//! helpers, all in constant memory (at most one chunk buffered).

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::Result;

/// The chunk size `stream_file` uses when the caller has no preference (the original's 8192).
pub const DEFAULT_CHUNK_SIZE: usize = 8192;

/// A stream of byte chunks, as returned by `stream_file` and accepted by `put_stream`.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A stream over in-memory bytes in chunks of exactly `chunk_size` (the last may be shorter),
/// sharing the buffer instead of copying it.
pub fn bytes_stream(bytes: Bytes, chunk_size: usize) -> ByteStream {
    let chunk_size = chunk_size.max(1);
    stream::unfold(bytes, move |mut rest| async move {
        if rest.is_empty() {
            return None;
        }
        let n = chunk_size.min(rest.len());
        let chunk = rest.split_to(n);
        Some((Ok(chunk), rest))
    })
    .boxed()
}

/// Re-chunks any byte stream into chunks of exactly `chunk_size` (the last may be shorter).
pub fn rechunk(input: ByteStream, chunk_size: usize) -> ByteStream {
    let chunk_size = chunk_size.max(1);
    struct State {
        input: ByteStream,
        pending: Bytes,
        buf: BytesMut,
        done: bool,
    }
    let state = State {
        input,
        pending: Bytes::new(),
        buf: BytesMut::new(),
        done: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if st.buf.is_empty() && st.pending.len() >= chunk_size {
                let chunk = st.pending.split_to(chunk_size);
                return Some((Ok(chunk), st));
            }
            if !st.pending.is_empty() {
                let need = chunk_size - st.buf.len();
                let take = need.min(st.pending.len());
                st.buf.extend_from_slice(&st.pending.split_to(take));
            }
            if st.buf.len() == chunk_size {
                let chunk = st.buf.split().freeze();
                return Some((Ok(chunk), st));
            }
            if st.done {
                if st.buf.is_empty() {
                    return None;
                }
                let chunk = st.buf.split().freeze();
                return Some((Ok(chunk), st));
            }
            match st.input.next().await {
                Some(Ok(b)) => st.pending = b,
                Some(Err(e)) => {
                    st.done = true;
                    st.buf.clear();
                    return Some((Err(e), st));
                }
                None => st.done = true,
            }
        }
    })
    .boxed()
}

/// Reads a whole stream into memory (for small files and tests).
pub async fn collect(mut s: ByteStream) -> Result<Bytes> {
    let mut out = BytesMut::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn thousand_bytes_at_chunk_100_is_ten_chunks() {
        let chunks: Vec<_> = bytes_stream(Bytes::from(vec![7u8; 1000]), 100)
            .collect::<Vec<_>>()
            .await;
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(|c| c.as_ref().unwrap().len() == 100));
    }

    #[tokio::test]
    async fn rechunk_joins_and_splits_exactly() {
        let parts: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; 30])),
            Ok(Bytes::from(vec![2u8; 250])),
            Ok(Bytes::from(vec![3u8; 5])),
        ];
        let out: Vec<Bytes> = rechunk(stream::iter(parts).boxed(), 100)
            .map(|c| c.unwrap())
            .collect()
            .await;
        let sizes: Vec<_> = out.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![100, 100, 85]);
        let all: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(&all[..30], &[1u8; 30][..]);
        assert_eq!(&all[280..], &[3u8; 5][..]);
        assert_eq!(
            collect(bytes_stream(Bytes::from_static(b"ab"), 8))
                .await
                .unwrap()
                .as_ref(),
            b"ab"
        );
    }
}
