//! Where the `local` embedder's tests and benchmark find all-MiniLM-L6-v2.

use std::path::PathBuf;

/// `DYNREG_MINILM_DIR`, else `target/models/all-minilm-l6-v2` (where `scripts/fetch-minilm.sh`
/// puts it), if it holds the weights. Without them: `None` after saying that `what` was
/// skipped — or a panic under `DYNREG_REQUIRE_ALL_BACKENDS=1` (CI), where nothing may skip.
pub fn model_dir(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DYNREG_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/models/all-minilm-l6-v2")
        });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let why = format!(
        "no model in {} (run scripts/fetch-minilm.sh)",
        dir.display()
    );
    assert!(
        std::env::var("DYNREG_REQUIRE_ALL_BACKENDS").as_deref() != Ok("1"),
        "{what}: {why}"
    );
    eprintln!("skipped: {what}: {why}");
    None
}
