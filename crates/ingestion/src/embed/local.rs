//! A local sentence-embedding model on the CPU: a BERT encoder (all-MiniLM-L6-v2, or any BERT
//! checkpoint laid out the same way) run with candle and tokenised with the model's own
//! `tokenizer.json`.
//!
//! Invariants:
//! - Nothing is downloaded, at load or at run time: the model directory must hold
//!   `config.json`, `tokenizer.json` and `model.safetensors` (weights with or without the
//!   `bert.` prefix); `scripts/fetch-minilm.sh` puts all-MiniLM-L6-v2 there. A missing or
//!   unreadable file is an [`EmbedError::Config`] naming the directory and the file.
//! - Each text is cut to `max_seq_length` tokens, `[CLS]` and `[SEP]` included (default 256,
//!   sentence-transformers' setting for all-MiniLM-L6-v2), whatever truncation or padding
//!   `tokenizer.json` itself declares (it ships 128 and fixed padding).
//! - Texts go through the model `batch_size` at a time, longest first; a batch is padded to
//!   its longest sequence and the padding is masked out of attention and pooling, so a text's
//!   vector does not depend on its batch-mates (beyond float rounding).
//! - A vector is the mean of the last hidden states over the text's tokens, L2-normalised
//!   (sentence-transformers' `Pooling(mean)` then `Normalize`), with `hidden_size` entries
//!   (384 for all-MiniLM-L6-v2). `crates/ingestion/tests/fixtures/minilm_reference.json`
//!   holds reference vectors of an independent implementation (`scripts/minilm_reference.py`).
//! - Forward passes run on tokio's blocking pool, one at a time (one pass already uses every
//!   core); the result is in input order, one vector per text.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig, DTYPE};
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use super::{EmbedError, Embedder};

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The options of a local embedder.
#[derive(Debug, Clone)]
pub struct LocalEmbedderConfig {
    /// The directory holding `config.json`, `tokenizer.json` and `model.safetensors`.
    pub model_dir: PathBuf,
    /// Tokens per text at most, `[CLS]` and `[SEP]` included (default 256); at most the
    /// model's `max_position_embeddings`.
    pub max_seq_length: usize,
    /// Texts per forward pass (default 32).
    pub batch_size: usize,
    /// The width the caller expects; when set, a model of another width is an error.
    pub dimensions: Option<usize>,
}

impl LocalEmbedderConfig {
    /// sentence-transformers' `max_seq_length` of all-MiniLM-L6-v2.
    pub const DEFAULT_MAX_SEQ_LENGTH: usize = 256;
    /// The default number of texts per forward pass.
    pub const DEFAULT_BATCH_SIZE: usize = 32;

    /// Defaults for the model in `model_dir`.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        LocalEmbedderConfig {
            model_dir: model_dir.into(),
            max_seq_length: Self::DEFAULT_MAX_SEQ_LENGTH,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            dimensions: None,
        }
    }
}

/// The loaded model: shared with the blocking tasks that run it.
struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    pad_id: u32,
    dimensions: usize,
    dir: PathBuf,
}

/// An embedder running a BERT sentence-embedding model in process, on the CPU.
pub struct LocalEmbedder {
    config: LocalEmbedderConfig,
    model: Arc<Model>,
    /// One forward pass at a time.
    permit: Arc<Semaphore>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("config", &self.config)
            .field("dimensions", &self.model.dimensions)
            .finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Loads the model in `config.model_dir`. Blocking: it reads the weights (about 90 MB for
    /// all-MiniLM-L6-v2), so call it at start-up or in `spawn_blocking`.
    pub fn new(config: LocalEmbedderConfig) -> Result<Self, EmbedError> {
        let dir = config.model_dir.clone();
        let err = |what: String| {
            EmbedError::Config(format!(
                "local embedding model in {}: {what}",
                dir.display()
            ))
        };
        if config.batch_size == 0 || config.max_seq_length < 2 {
            return Err(err(
                "batch_size must be positive and max_seq_length at least 2".into(),
            ));
        }
        for name in MODEL_FILES {
            if !dir.join(name).is_file() {
                return Err(err(format!(
                    "{name} is missing (scripts/fetch-minilm.sh fetches all-MiniLM-L6-v2)"
                )));
            }
        }
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| err(format!("cannot read {name}: {e}")))
        };

        let bert_config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| err(format!("config.json is not a BERT config: {e}")))?;
        let dimensions = bert_config.hidden_size;
        if let Some(expected) = config.dimensions
            && expected != dimensions
        {
            return Err(err(format!(
                "the model gives {dimensions}-dimensional vectors; dimensions is {expected}"
            )));
        }
        if config.max_seq_length > bert_config.max_position_embeddings {
            return Err(err(format!(
                "max_seq_length {} exceeds the model's max_position_embeddings {}",
                config.max_seq_length, bert_config.max_position_embeddings
            )));
        }

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        // Our own truncation and padding, whatever the file says.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| err(format!("tokenizer.json: truncation: {e}")))?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > bert_config.vocab_size {
            return Err(err(format!(
                "tokenizer.json has {vocab} tokens but config.json's vocab_size is {}",
                bert_config.vocab_size
            )));
        }

        // Read into memory rather than mapped: the workspace forbids `unsafe`, and
        // `VarBuilder::from_mmaped_safetensors` is unsafe. The buffer is dropped after loading.
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| err(format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(vb, &bert_config)
            .map_err(|e| err(format!("model.safetensors does not fit config.json: {e}")))?;

        Ok(LocalEmbedder {
            model: Arc::new(Model {
                bert,
                tokenizer,
                pad_id: u32::try_from(bert_config.pad_token_id).unwrap_or(0),
                dimensions,
                dir,
            }),
            config,
            permit: Arc::new(Semaphore::new(1)),
        })
    }

    /// The model directory.
    pub fn model_dir(&self) -> &std::path::Path {
        &self.config.model_dir
    }

    /// The token ids the model sees for `text` (`[CLS]` … `[SEP]`, cut to `max_seq_length`).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.model
            .tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| {
                EmbedError::Service(format!(
                    "local embedding model in {}: tokenising: {e}",
                    self.config.model_dir.display()
                ))
            })
    }
}

impl Model {
    /// The unit vectors of one batch (blocking).
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            EmbedError::Service(format!(
                "local embedding model in {}: {what}: {e}",
                self.dir.display()
            ))
        };
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| fail("tokenising", &e))?;
        let n = encodings.len();
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        if len == 0 {
            // Only a tokenizer without [CLS]/[SEP] gets here: nothing to pool.
            return Ok(vec![vec![0.0; self.dimensions]; n]);
        }
        // Padded to the longest sequence of the batch; the mask marks the real tokens.
        let mut ids = vec![self.pad_id; n * len];
        let mut mask = vec![0u32; n * len];
        for (row, enc) in encodings.iter().enumerate() {
            let at = row * len;
            let real = enc.get_ids();
            ids[at..at + real.len()].copy_from_slice(real);
            mask[at..at + real.len()].copy_from_slice(enc.get_attention_mask());
        }

        let pooled = self
            .mean_pool(ids, mask, n, len)
            .map_err(|e| fail("forward pass", &e))?;
        Ok(pooled
            .into_iter()
            .map(|mut v| {
                super::l2_normalise(&mut v);
                v
            })
            .collect())
    }

    /// The mean of the last hidden states over the real tokens of each row of a padded
    /// `n × len` batch.
    fn mean_pool(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        n: usize,
        len: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &device)?;
        let mask = Tensor::from_vec(mask, (n, len), &device)?;
        let token_types = ids.zeros_like()?;
        // (n, len, hidden); padding keys are masked out of attention inside.
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let sum = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, hidden)
        let count = mask.sum(1)?.maximum(1f32)?; // (n, 1)
        sum.broadcast_div(&count)?.to_vec2::<f32>()
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn provider(&self) -> &'static str {
        "local"
    }

    fn dimensions(&self) -> usize {
        self.model.dimensions
    }

    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Longest first, so texts of like length share a batch and padding stays small.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.config.batch_size) {
            let owned: Vec<String> = batch.iter().map(|&i| texts[i].to_owned()).collect();
            let _permit = self
                .permit
                .acquire()
                .await
                .map_err(|_| EmbedError::Service("local embedder closed".into()))?;
            let model = Arc::clone(&self.model);
            let vectors = tokio::task::spawn_blocking(move || model.embed_batch(&owned))
                .await
                .map_err(|e| {
                    EmbedError::Service(format!(
                        "local embedding model in {}: the forward pass failed: {e}",
                        self.config.model_dir.display()
                    ))
                })??;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_with_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let e = LocalEmbedder::new(LocalEmbedderConfig::new(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.json is missing"), "{e}");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }
}
