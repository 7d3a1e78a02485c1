//! The pipeline against every knowledge backend: the same cases run on the memory backend, the
//! file backend (a temp dir), and with this crate's `s3` feature the S3 backend on
//! `object_store`'s in-memory store and a local S3-compatible server when
//! `DYNREG_TEST_S3_ENDPOINT` is set (skipped otherwise). Ported from the original's
//! `test_ingest_from_backend.py`, plus a case for each of the original's verified ingestion
//! bugs (same-stem id collisions, gzip from a backend, separator chunks, silent JSON loss,
//! content read as a path, the ignored default chunking).

#![allow(clippy::print_stdout)] // the skip notices the test policy asks for

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Value, json};

use dynreg_ingestion::{
    Chunk, ChunkingReport, IngestionError, Limits, Pipeline, PipelineEvent, PipelineOptions,
    SkipReason,
};
use dynreg_knowledge_store::{KnowledgeBackend, KnowledgeBackendExt, Metadata, PutOptions};

async fn new_kb(b: &dyn KnowledgeBackend) -> String {
    let d = format!("kb{:08x}", rand::random::<u32>());
    b.create_kb(&d, Metadata::new()).await.expect("create_kb");
    d
}

async fn put(b: &dyn KnowledgeBackend, d: &str, p: &str, content: impl Into<bytes::Bytes>) {
    b.put_file(d, p, content.into(), PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put_file({d}, {p}): {e}"));
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn run(b: &Arc<dyn KnowledgeBackend>, d: &str) -> (Vec<Chunk>, ChunkingReport) {
    Pipeline::new(b.clone())
        .collect(d, |_, _| {})
        .await
        .expect("pipeline run")
}

fn texts_of<'a>(chunks: &'a [Chunk], path: &str) -> Vec<&'a str> {
    chunks
        .iter()
        .filter(|c| c.file.path == path)
        .map(|c| c.text.as_str())
        .collect()
}

const MD: &str = "# Guide\n\nIntro text.\n\n## Install Steps\n\nRun the installer.\n\n```sh\nmake install\n```\n";
const YAML: &str = "name: Widget\nprice: 10\ntags: [a, b]\nspecs:\n  weight: 2kg\n";
const CSV: &str = "name,role,team\nAda,engineer,core\nGrace,admiral,navy\n";
const JSON: &str = r#"{"title": "Refunds", "description": "Refunds take five days.", "id": "x1"}"#;
const JSONL: &str =
    "{\"name\": \"a\", \"text\": \"first\"}\n{\"name\": \"b\", \"text\": \"second\"}\n";

/// Every supported type, and the `.gz` of each gives exactly the chunks of its plain version
/// (the original yields nothing, silently, for a gzipped file from a backend).
async fn every_type_and_its_gzip(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    let files = [
        ("guide.md", MD),
        ("notes.txt", "Plain text. Second sentence."),
        ("widget.yaml", YAML),
        ("people.csv", CSV),
        ("refund.json", JSON),
        ("events.jsonl", JSONL),
    ];
    for (p, c) in files {
        put(&*b, &d, p, c.to_owned()).await;
        put(&*b, &d, &format!("gz/{p}.gz"), gz(c.as_bytes())).await;
    }
    put(&*b, &d, "manual.pdf", b"%PDF-1.4".to_vec()).await;
    let (chunks, report) = run(&b, &d).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.total_files, 12);
    assert_eq!(report.files_skipped, 1);
    assert_eq!(report.skipped[0].reason, SkipReason::Unsupported);
    assert_eq!(report.files_by_type.get("markdown"), Some(&8));
    assert_eq!(report.files_by_type.get("json"), Some(&2));
    assert_eq!(report.files_by_type.get("jsonl"), Some(&2));
    for (p, _) in files {
        let plain = texts_of(&chunks, p);
        assert!(!plain.is_empty(), "{p} gave no chunk");
        assert_eq!(
            plain,
            texts_of(&chunks, &format!("gz/{p}.gz")),
            "{p}.gz differs from {p}"
        );
    }
    assert_eq!(report.total_chunks as usize, chunks.len());
    let md = texts_of(&chunks, "guide.md");
    assert_eq!(
        md,
        vec![
            "Intro text.",
            "Run the installer.\n\n```sh\nmake install\n```"
        ]
    );
    let csv = texts_of(&chunks, "people.csv");
    assert_eq!(
        csv,
        vec![
            "**role**: engineer\n**team**: core",
            "**role**: admiral\n**team**: navy"
        ]
    );
    let c = chunks.iter().find(|c| c.file.path == "people.csv").unwrap();
    assert_eq!(c.heading_path(), "People > Ada");
    let json = texts_of(&chunks, "refund.json");
    assert_eq!(json, vec!["Refunds\ndescription: Refunds take five days."]);
    let yaml = texts_of(&chunks, "widget.yaml").join("\n");
    for needle in ["**Price**: 10", "- a", "**Weight**: 2kg"] {
        assert!(yaml.contains(needle), "{needle:?} not in {yaml:?}");
    }
}

/// `*.md` matches root files only, `**/*.md` every folder; excludes and disabled patterns are
/// honoured; config files are skipped and counted.
async fn patterns_and_excludes(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    for p in ["root.md", "docs/a.md", "docs/deep/b.md", "drafts/c.md"] {
        put(&*b, &d, p, format!("# T\n\ncontent of {p}\n")).await;
    }
    put(&*b, &d, "data.json", JSON).await;
    put(&*b, &d, "knowledge_base.yaml", "patterns: ['*.md']\n").await;
    let (chunks, report) = run(&b, &d).await;
    let paths: BTreeSet<_> = chunks.iter().map(|c| c.file.path.as_str()).collect();
    assert_eq!(paths, BTreeSet::from(["root.md"]));
    assert_eq!(
        report.files_skipped, 0,
        "the config file does not match *.md"
    );

    put(
        &*b,
        &d,
        "knowledge_base.yaml",
        "patterns:\n  - pattern: '**/*.md'\n  - pattern: '**/*.json'\n    enabled: false\nexclude_patterns: ['drafts/*']\n",
    )
    .await;
    let (chunks, report) = run(&b, &d).await;
    let paths: BTreeSet<_> = chunks.iter().map(|c| c.file.path.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from(["docs/a.md", "docs/deep/b.md", "root.md"])
    );
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].reason, SkipReason::Excluded);

    // No config: every supported type anywhere; the config file itself is skipped and counted.
    put(&*b, &d, "knowledge_base.yaml", "name: x\n").await;
    let (chunks, report) = run(&b, &d).await;
    let paths: BTreeSet<_> = chunks.iter().map(|c| c.file.path.as_str()).collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert_eq!(
        report
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::ConfigFile)
            .count(),
        1
    );
}

/// The config is found at the root or under `_metadata/`; the root wins; a malformed or
/// non-mapping config is one error naming the file, and nothing is chunked.
async fn config_discovery_and_errors(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(&*b, &d, "a.md", "# A\n\nalpha\n").await;
    put(&*b, &d, "b.txt", "beta\n").await;
    put(
        &*b,
        &d,
        "_metadata/knowledge_base.json",
        r#"{"patterns": ["*.txt"]}"#,
    )
    .await;
    let (chunks, _) = run(&b, &d).await;
    assert_eq!(
        chunks
            .iter()
            .map(|c| c.file.path.as_str())
            .collect::<Vec<_>>(),
        vec!["b.txt"]
    );

    put(&*b, &d, "knowledge_base.yml", "patterns: ['*.md']\n").await;
    let (chunks, _) = run(&b, &d).await;
    assert_eq!(
        chunks
            .iter()
            .map(|c| c.file.path.as_str())
            .collect::<Vec<_>>(),
        vec!["a.md"]
    );

    put(&*b, &d, "knowledge_base.yml", "patterns: [unclosed\n").await;
    let e = Pipeline::new(b.clone())
        .collect(&d, |_, _| {})
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, IngestionError::Config { .. }), "{e:?}");
    assert!(
        msg.contains("knowledge_base.yml") && msg.contains(&d) && msg.contains("line"),
        "{msg}"
    );

    put(&*b, &d, "knowledge_base.yml", "- just\n- a list\n").await;
    let e = Pipeline::new(b.clone())
        .collect(&d, |_, _| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("did not decode to a dict"), "{e}");
}

/// A broken file is one error entry; every other file is chunked; the progress callback runs
/// once per chunked file with its chunk count.
async fn errors_per_file_and_progress(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(&*b, &d, "good.md", "# G\n\ngood\n").await;
    put(&*b, &d, "bad.json", "{not json").await;
    put(&*b, &d, "latin1.md", vec![b'#', b' ', 0xE9, b'\n']).await;
    put(&*b, &d, "ok.json", JSON).await;
    let mut progress = Vec::new();
    let (chunks, report) = Pipeline::new(b.clone())
        .collect(&d, |s, n| progress.push((s.to_owned(), n)))
        .await
        .unwrap();
    assert_eq!(report.total_files, 2);
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    let errs: BTreeMap<_, _> = report
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert!(errs["bad.json"].contains("bad.json") && errs["bad.json"].contains("invalid JSON"));
    assert!(
        errs["latin1.md"].contains("not valid UTF-8") && errs["latin1.md"].contains("offset 2")
    );
    let kind = b.kind();
    assert_eq!(report.errors[0].file, format!("{kind}://{d}/bad.json"));
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        progress,
        vec![
            (format!("{kind}://{d}/good.md"), 1),
            (format!("{kind}://{d}/ok.json"), 1)
        ]
    );
    let dict = serde_json::to_value(&report.errors[0]).unwrap();
    assert_eq!(
        dict.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["file", "error"],
        "the original's keys, in its order"
    );
}

/// Ids include the full path: same-stem files in different folders or of different types all
/// keep their chunks.
async fn same_stem_files_never_collide(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(&*b, &d, "a/intro.md", "# A\n\nfrom a\n").await;
    put(&*b, &d, "b/intro.md", "# B\n\nfrom b\n").await;
    put(&*b, &d, "intro.json", r#"{"text": "from json"}"#).await;
    let (chunks, report) = run(&b, &d).await;
    let ids: BTreeSet<_> = chunks.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(report.total_chunks, 3);
}

/// CSV and YAML transforms never produce separator-only chunks, and neither does markdown.
async fn no_separator_only_chunks(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(
        &*b,
        &d,
        "list.yaml",
        "- name: one\n  v: 1\n- name: two\n  v: 2\n",
    )
    .await;
    put(&*b, &d, "rows.csv", "k,v\na,1\nb,2\n").await;
    put(&*b, &d, "page.md", "# P\n\nbefore\n\n---\n\nafter\n\n***\n").await;
    let (chunks, _) = run(&b, &d).await;
    assert!(!chunks.is_empty());
    for c in &chunks {
        assert!(
            c.text.chars().any(char::is_alphanumeric),
            "noise chunk {:?} from {}",
            c.text,
            c.file.path
        );
    }
    assert_eq!(
        texts_of(&chunks, "list.yaml"),
        vec!["**Name**: one\n**V**: 1", "**Name**: two\n**V**: 2"]
    );
}

/// JSON without silent loss: a malformed JSONL line is a recorded error with its line number
/// (the other lines are chunked), long text is split not truncated, non-object elements stay.
async fn json_loses_nothing(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(
        &*b,
        &d,
        "log.jsonl",
        "{\"text\": \"one\"}\n{broken\n\n{\"text\": \"three\"}\n",
    )
    .await;
    let long = "word ".repeat(400);
    put(&*b, &d, "long.json", json!({"content": long}).to_string()).await;
    put(
        &*b,
        &d,
        "mixed.json",
        r#"[{"name": "obj"}, "a string", 42, [1, 2]]"#,
    )
    .await;
    let (chunks, report) = run(&b, &d).await;
    assert_eq!(texts_of(&chunks, "log.jsonl"), vec!["one", "three"]);
    assert_eq!(report.errors.len(), 1);
    let e = &report.errors[0];
    assert_eq!(
        (e.path.as_str(), e.line, e.fatal),
        ("log.jsonl", Some(2), false)
    );
    assert!(e.error.contains("log.jsonl line 2"), "{}", e.error);
    let pieces = texts_of(&chunks, "long.json");
    assert!(pieces.len() >= 4, "{}", pieces.len());
    assert!(
        pieces
            .iter()
            .all(|p| p.chars().count() <= 500 && !p.ends_with("..."))
    );
    assert_eq!(pieces.join(" ").split_whitespace().count(), 400);
    assert_eq!(
        texts_of(&chunks, "mixed.json"),
        vec!["obj", "a string", "42", "1, 2"]
    );
    // The JSON fields are metadata, flattened.
    let log = chunks.iter().find(|c| c.file.path == "log.jsonl").unwrap();
    assert_eq!(log.metadata()["text"], json!("one"));
}

/// A file whose content is a path is content: nothing is read from this machine's disk.
async fn content_is_never_a_path(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(&*b, &d, "x.csv", "/etc/passwd").await;
    put(&*b, &d, "y.yaml", "/etc/passwd").await;
    put(&*b, &d, "z.md", "/etc/passwd").await;
    let (chunks, report) = run(&b, &d).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for c in &chunks {
        assert!(
            !c.text.contains("root:"),
            "{} read the disk: {:?}",
            c.file.path,
            c.text
        );
    }
    assert_eq!(texts_of(&chunks, "y.yaml"), vec!["/etc/passwd"]);
    assert_eq!(texts_of(&chunks, "z.md"), vec!["/etc/passwd"]);
}

/// The knowledge base's `default_chunking` is honoured, and a pattern's chunking overrides it.
async fn default_chunking_is_honoured(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    let prose = "Sentence number one is here. ".repeat(40);
    put(&*b, &d, "a.md", format!("# A\n\n{prose}\n")).await;
    put(&*b, &d, "api/b.md", format!("# B\n\n{prose}\n")).await;
    put(
        &*b,
        &d,
        "knowledge_base.yaml",
        "default_chunking: {max_chunk_size: 100}\npatterns:\n  - pattern: 'api/**/*.md'\n    chunking: {max_chunk_size: 300}\n  - '**/*.md'\n",
    )
    .await;
    let (chunks, _) = run(&b, &d).await;
    let max = |p: &str| {
        chunks
            .iter()
            .filter(|c| c.file.path == p)
            .map(|c| c.text.chars().count())
            .max()
            .unwrap()
    };
    assert!(max("a.md") <= 100 && max("a.md") > 50, "{}", max("a.md"));
    assert!(
        max("api/b.md") <= 300 && max("api/b.md") > 100,
        "{}",
        max("api/b.md")
    );
}

/// Provenance: the system keys of the original, the byte range of each markdown chunk in its
/// source, the file checksum, tenant and generation in ids and metadata.
async fn provenance(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    let src =
        "# Top Level\n\nPara one.\n\n## Child\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nPara two.\n";
    put(&*b, &d, "docs/p.md", src).await;
    let info = b.get_file_info(&d, "docs/p.md").await.unwrap().unwrap();
    let options = PipelineOptions {
        tenant_id: Some("acme".into()),
        generation: Some("g7".into()),
        extra_metadata: json!({"team": "docs", "source": "caller"})
            .as_object()
            .unwrap()
            .clone(),
        ..Default::default()
    };
    let (chunks, _) = Pipeline::with_options(b.clone(), options)
        .collect(&d, |_, _| {})
        .await
        .unwrap();
    assert_eq!(chunks.len(), 2);
    for c in &chunks {
        let r = c.byte_range.start as usize..c.byte_range.end as usize;
        let first_line = c.text.lines().next().unwrap();
        assert!(
            src[r].starts_with(first_line),
            "{:?} not at {:?}",
            c.text,
            c.byte_range
        );
    }
    let m = chunks[1].metadata();
    assert_eq!(m["source_path"], json!("docs/p.md"));
    assert_eq!(m["source"], json!(format!("{}://{d}/docs/p.md", b.kind())));
    assert_eq!(m["domain_id"], json!(d));
    assert_eq!(m["tenant_id"], json!("acme"));
    assert_eq!(m["_generation"], json!("g7"));
    assert_eq!(m["chunk_index"], json!(1));
    assert_eq!(m["document_type"], json!("markdown"));
    assert_eq!(m["heading_path"], json!("Top Level > Child"));
    assert_eq!(m["heading_levels"], json!([1, 2]));
    assert_eq!(m["line_number"], json!(7));
    assert_eq!(m["checksum"], json!(info.checksum));
    assert_eq!(m["team"], json!("docs"));
    assert_eq!(chunks[1].id, format!("acme\x1f{d}\x1fg7\x1fdocs/p.md\x1f1"));
    assert_eq!(
        chunks[1].embedding_text,
        format!("Top Level: Child: {}", chunks[1].text)
    );
}

/// Hostile inputs: each a clear per-file error or correct chunks, never an abort of the run.
async fn hostile_inputs(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    // A gzip bomb: 64 members of 1 MiB of zeros each (about 1 KiB compressed apiece).
    let member = gz(&vec![0u8; 1 << 20]);
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 64)
        .collect();
    put(&*b, &d, "bomb.txt.gz", bomb).await;
    put(
        &*b,
        &d,
        "deep.json",
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    )
    .await;
    put(
        &*b,
        &d,
        "deep.yaml",
        format!("{}x{}", "[".repeat(10_000), "]".repeat(10_000)),
    )
    .await;
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    put(&*b, &d, "laughs.yaml", laughs).await;
    put(
        &*b,
        &d,
        "ragged.csv",
        "name,a,b\nx,1\ny,2,3,4\n\"multi\nline\",\"q,uoted\",z\n",
    )
    .await;
    put(&*b, &d, "crlf.md", "# Win\r\n\r\nline one\r\nline two\r\n").await;
    put(&*b, &d, "bom.md", "\u{feff}# Bom\n\nbody\n").await;
    put(&*b, &d, "bom.csv", "\u{feff}name,v\nx,1\n").await;
    put(&*b, &d, "oneline.md", "word ".repeat(1_000_000)).await;
    let limits = Limits {
        max_decompressed_bytes: 32 << 20,
        max_compression_ratio: 100,
        ..Limits::default()
    };
    let options = PipelineOptions {
        limits,
        ..Default::default()
    };
    let (chunks, report) = Pipeline::with_options(b.clone(), options)
        .collect(&d, |_, _| {})
        .await
        .unwrap();
    let errs: BTreeMap<_, _> = report
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert!(
        errs["bomb.txt.gz"].contains("max_compression_ratio"),
        "{errs:?}"
    );
    assert!(errs["deep.json"].contains("recursion limit"), "{errs:?}");
    assert!(errs["deep.yaml"].contains("deep.yaml"), "{errs:?}");
    assert!(errs["laughs.yaml"].contains("laughs.yaml"), "{errs:?}");
    assert_eq!(report.errors.len(), 4, "{errs:?}");
    assert_eq!(
        texts_of(&chunks, "ragged.csv"),
        vec![
            "**a**: 1",
            "**a**: 2\n**b**: 3\n**Column 4**: 4",
            "**a**: q,uoted\n**b**: z"
        ]
    );
    assert_eq!(
        chunks
            .iter()
            .find(|c| c.file.path == "ragged.csv" && c.index == 2)
            .unwrap()
            .heading_path(),
        "Ragged > multi line"
    );
    assert_eq!(texts_of(&chunks, "crlf.md"), vec!["line one\nline two"]);
    assert_eq!(texts_of(&chunks, "bom.md"), vec!["body"]);
    assert_eq!(
        chunks
            .iter()
            .find(|c| c.file.path == "bom.md")
            .unwrap()
            .heading_path(),
        "Bom"
    );
    assert_eq!(texts_of(&chunks, "bom.csv"), vec!["**v**: 1"]);
    let one = texts_of(&chunks, "oneline.md");
    assert_eq!(one.len(), 10_000);
    assert!(
        one.iter()
            .all(|t| t.split_whitespace().all(|w| w == "word"))
    );
}

/// Every limit refuses its file with an error that names the limit; other files go on.
async fn limits_name_themselves(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    put(&*b, &d, "big.md", "x ".repeat(5_000)).await;
    put(
        &*b,
        &d,
        "wide.jsonl",
        format!("{{\"text\": \"{}\"}}\n", "y".repeat(5_000)),
    )
    .await;
    put(&*b, &d, "many.txt", "z. ".repeat(2_000)).await;
    put(&*b, &d, "fine.md", "# F\n\nfine\n").await;
    let limits = Limits {
        max_document_bytes: 8_000,
        max_line_bytes: 1_000,
        max_chunks_per_file: 5,
        ..Limits::default()
    };
    let cfg = dynreg_ingestion::KnowledgeBaseConfig::from_value(
        &d,
        &json!({"default_chunking": {"max_chunk_size": 100}}),
    )
    .unwrap();
    let options = PipelineOptions {
        limits,
        config: Some(cfg),
        ..Default::default()
    };
    let (chunks, report) = Pipeline::with_options(b.clone(), options)
        .collect(&d, |_, _| {})
        .await
        .unwrap();
    let errs: BTreeMap<_, _> = report
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert!(errs["big.md"].contains("max_document_bytes"), "{errs:?}");
    assert!(errs["wide.jsonl"].contains("max_line_bytes"), "{errs:?}");
    assert!(errs["many.txt"].contains("max_chunks_per_file"), "{errs:?}");
    assert_eq!(
        chunks
            .iter()
            .map(|c| c.file.path.as_str())
            .collect::<Vec<_>>(),
        vec!["fine.md"]
    );
    let limits = Limits {
        max_file_bytes: 10,
        ..Limits::default()
    };
    let options = PipelineOptions {
        limits,
        ..Default::default()
    };
    let (_, report) = Pipeline::with_options(b.clone(), options)
        .collect(&d, |_, _| {})
        .await
        .unwrap();
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.error.contains("max_file_bytes"))
    );
}

/// Streaming: a large CSV arrives in many batches before its `Done`, each file's events are
/// contiguous, and dropping the stream stops the run.
async fn streams_in_batches(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    let mut csv = String::from("id,body\n");
    for i in 0..5_000 {
        csv.push_str(&format!("row{i},text of row {i}\n"));
    }
    put(&*b, &d, "big.csv.gz", gz(csv.as_bytes())).await;
    put(&*b, &d, "small.md", "# S\n\nsmall\n").await;
    let options = PipelineOptions {
        batch_size: Some(100),
        ..Default::default()
    };
    let pipeline = Pipeline::with_options(b.clone(), options);
    let mut stream = pipeline.stream(&d).await.unwrap();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut batches = 0;
    while let Some(event) = stream.next().await {
        match event {
            PipelineEvent::Chunks(batch) => {
                assert!(batch.len() <= 100);
                batches += 1;
                order.push(("chunks".into(), batch[0].file.path.clone()));
            }
            PipelineEvent::Done { file, chunks } => {
                order.push(("done".into(), file.path.clone()));
                if file.path == "big.csv.gz" {
                    assert_eq!(chunks, 5_000);
                }
            }
            PipelineEvent::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(batches, 51);
    let done_big = order
        .iter()
        .position(|(k, p)| k == "done" && p == "big.csv.gz")
        .unwrap();
    assert!(order[..done_big].iter().all(|(_, p)| p == "big.csv.gz"));
    let mut stream = pipeline.stream(&d).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Some(PipelineEvent::Chunks(_))
    ));
    drop(stream);
}

/// `only_paths` narrows a run to the named files (the basis of incremental ingestion).
async fn only_paths(b: Arc<dyn KnowledgeBackend>) {
    let d = new_kb(&*b).await;
    for p in ["a.md", "b.md", "c.md"] {
        put(&*b, &d, p, format!("# {p}\n\nbody {p}\n")).await;
    }
    let options = PipelineOptions {
        only_paths: Some(BTreeSet::from(["b.md".to_owned()])),
        ..Default::default()
    };
    let (chunks, report) = Pipeline::with_options(b.clone(), options)
        .collect(&d, |_, _| {})
        .await
        .unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(report.total_files, 1);
    assert_eq!(chunks[0].metadata()["source_path"], Value::from("b.md"));
}

dynreg_knowledge_store::knowledge_backend_tests!(
    every_type_and_its_gzip,
    patterns_and_excludes,
    config_discovery_and_errors,
    errors_per_file_and_progress,
    same_stem_files_never_collide,
    no_separator_only_chunks,
    json_loses_nothing,
    content_is_never_a_path,
    default_chunking_is_honoured,
    provenance,
    hostile_inputs,
    limits_name_themselves,
    streams_in_batches,
    only_paths,
);
