//! Conformance cases of streaming: chunked reads, streamed uploads, and files (`.gz`
//! included) stored exactly as uploaded.

use bytes::Bytes;
use futures::StreamExt;

use super::{Harness, fresh, new_kb, unique};
use crate::{ByteStream, KnowledgeBackendExt, PutOptions, collect};

/// stream_file: 1000 bytes at chunk 100 is exactly 10 chunks; a missing file is None.
pub async fn stream_file_chunks(h: &dyn Harness) {
    let backend = fresh(h, "stream_file_chunks").await;
    let b = &*backend;
    let d = new_kb(b, "stream").await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    b.put_file(
        &d,
        "big.bin",
        Bytes::from(data.clone()),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let chunks: Vec<Bytes> = b
        .stream_file(&d, "big.bin", 100)
        .await
        .unwrap()
        .expect("stream")
        .map(|c| c.unwrap())
        .collect()
        .await;
    assert_eq!(chunks.len(), 10);
    assert!(chunks.iter().all(|c| c.len() == 100));
    assert_eq!(chunks.concat(), data);
    assert!(b.stream_file(&d, "nope.bin", 100).await.unwrap().is_none());
    assert!(
        b.stream_file(&unique("nokb"), "big.bin", 100)
            .await
            .unwrap()
            .is_none()
    );
}

/// put_stream stores a multi-chunk upload; stream_file reads it back identically.
pub async fn put_stream_round_trips(h: &dyn Harness) {
    let backend = fresh(h, "put_stream_round_trips").await;
    let b = &*backend;
    let d = new_kb(b, "pstream").await;
    let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 253) as u8).collect();
    let n = 100; // 6.25 MiB, more than one S3 multipart part
    let chunk = Bytes::from(chunk);
    let mut expected = md5::Md5::default();
    for _ in 0..n {
        md5::Digest::update(&mut expected, &chunk);
    }
    let expected = hex::encode(md5::Digest::finalize(expected));
    let c2 = chunk.clone();
    let input: ByteStream = futures::stream::iter((0..n).map(move |_| Ok(c2.clone()))).boxed();
    let f = b
        .put_stream(&d, "big/blob.bin", input, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(f.size_bytes, (chunk.len() * n) as u64);
    assert_eq!(f.checksum, expected);
    let mut s2 = b
        .stream_file(&d, "big/blob.bin", 1 << 20)
        .await
        .unwrap()
        .unwrap();
    let mut h = md5::Md5::default();
    let mut total = 0usize;
    while let Some(c) = s2.next().await {
        let c = c.unwrap();
        assert!(c.len() <= 1 << 20);
        total += c.len();
        md5::Digest::update(&mut h, &c);
    }
    assert_eq!(total, chunk.len() * n);
    assert_eq!(hex::encode(md5::Digest::finalize(h)), expected);
}

/// .gz files are stored exactly as uploaded, typed application/gzip.
pub async fn gz_stored_as_uploaded(h: &dyn Harness) {
    let backend = fresh(h, "gz_stored_as_uploaded").await;
    let b = &*backend;
    let d = new_kb(b, "gz").await;
    // A real gzip member header followed by arbitrary bytes: must not be decompressed.
    let raw: Vec<u8> = [
        0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03, 1, 2, 3, 4, 5,
    ]
    .to_vec();
    let f = b
        .put_file(
            &d,
            "archive/old.md.gz",
            Bytes::from(raw.clone()),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(f.content_type, "application/gzip");
    assert_eq!(f.size_bytes, raw.len() as u64);
    assert_eq!(
        b.get_file(&d, "archive/old.md.gz")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        &raw[..]
    );
    let streamed = collect(
        b.stream_file(&d, "archive/old.md.gz", 4)
            .await
            .unwrap()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(streamed.as_ref(), &raw[..]);
}
