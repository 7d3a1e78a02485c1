//! Content uploads of the S3 backend. A stream is cut into parts of [`PART_SIZE`] (8 MiB): a
//! stream of one part is one plain PUT, a longer one a multipart upload that is aborted when
//! any part fails, so at most one part is held in memory and a failed upload replaces nothing.
//! Size and MD5 (the index entry's checksum) are computed over the bytes as they are sent.
//!
//! Uploads write content objects only. The caller records a write intent first
//! ([`super::intents`]) and commits the index entry afterwards ([`super::commit`]).

use super::obj_path;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};

use super::S3KnowledgeBackend;
use crate::error::Result;
use crate::stream::{ByteStream, rechunk};

/// The part size of multipart uploads (and the most a streamed upload holds in memory).
pub(super) const PART_SIZE: usize = 8 * 1024 * 1024;

impl S3KnowledgeBackend {
    /// Uploads a stream to `loc` (one PUT, or a multipart upload aborted on failure) and
    /// returns its size and MD5.
    pub(super) async fn upload_stream(
        &self,
        d: &str,
        key: &str,
        loc: &ObjPath,
        content: ByteStream,
    ) -> Result<(u64, String)> {
        let mut parts = rechunk(content, PART_SIZE);
        let mut md5 = md5::Md5::default();
        let mut size = 0u64;
        let first = parts.next().await.transpose()?.unwrap_or_default();
        md5::Digest::update(&mut md5, &first);
        size += first.len() as u64;
        if first.len() < PART_SIZE {
            // One part: a plain PUT.
            self.store
                .put(loc, PutPayload::from(first))
                .await
                .map_err(|e| self.err(d, key, e))?;
        } else {
            let mut upload: Box<dyn MultipartUpload> = self
                .store
                .put_multipart(loc)
                .await
                .map_err(|e| self.err(d, key, e))?;
            let result: Result<()> = async {
                upload
                    .put_part(PutPayload::from(first))
                    .await
                    .map_err(|e| self.err(d, key, e))?;
                while let Some(part) = parts.next().await {
                    let part = part?;
                    md5::Digest::update(&mut md5, &part);
                    size += part.len() as u64;
                    upload
                        .put_part(PutPayload::from(part))
                        .await
                        .map_err(|e| self.err(d, key, e))?;
                }
                upload.complete().await.map_err(|e| self.err(d, key, e))?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        Ok((size, hex::encode(md5::Digest::finalize(md5))))
    }

    /// Uploads one in-memory file to its content key with a single PUT.
    pub(super) async fn upload_small(&self, d: &str, path: &str, content: Bytes) -> Result<()> {
        let key = self.content_key(d, path);
        self.store
            .put(&obj_path(key.as_str()), PutPayload::from(content))
            .await
            .map_err(|e| self.err(d, &key, e))?;
        Ok(())
    }
}
