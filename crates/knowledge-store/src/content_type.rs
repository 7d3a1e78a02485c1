//! Content-type guessing from the file extension, matching what the original stored
//! (`mimetypes` plus `application/gzip` for compressed files, which are stored as uploaded).

/// Guesses a MIME type from the last extension of `path`.
pub fn guess_content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "md" | "markdown" => "text/markdown",
        "txt" | "text" | "log" => "text/plain",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "yaml" | "yml" => "application/yaml",
        "xml" => "application/xml",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "text/javascript",
        "pdf" => "application/pdf",
        "gz" | "tgz" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "rst" => "text/x-rst",
        "py" => "text/x-python",
        "toml" => "application/toml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::guess_content_type;

    #[test]
    fn guesses_what_the_original_stored() {
        assert_eq!(guess_content_type("archive/old.md.gz"), "application/gzip");
        assert_eq!(guess_content_type("content/guide.md"), "text/markdown");
        assert_eq!(guess_content_type("data/faq.json"), "application/json");
        assert_eq!(guess_content_type("data/products.csv"), "text/csv");
        assert_eq!(guess_content_type("data/settings.yaml"), "application/yaml");
        assert_eq!(guess_content_type("notes/readme.txt"), "text/plain");
        assert_eq!(guess_content_type("bin/blob"), "application/octet-stream");
        assert_eq!(guess_content_type(".bashrc"), "application/octet-stream");
    }
}
