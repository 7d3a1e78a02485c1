//! The chunkers on their own (no backend): markdown structure, heading modes, overlap and the
//! size rule, through `chunk_bytes`.

use serde_json::{Map, json};

use dynreg_ingestion::{
    Chunk, ChunkingConfig, Format, HeadingInclusion, Limits, SourceFile, chunk_bytes,
};

fn file(path: &str) -> SourceFile {
    let (format, gzip) = Format::of(path).unwrap();
    SourceFile {
        domain_id: "d".into(),
        tenant_id: None,
        generation: None,
        path: path.into(),
        source: format!("memory://d/{path}"),
        checksum: String::new(),
        size_bytes: 0,
        format,
        gzip,
        metadata: Map::new(),
    }
}

fn chunk(path: &str, content: &str, cfg: &ChunkingConfig) -> Vec<Chunk> {
    chunk_bytes(file(path), content.as_bytes(), cfg, &Limits::default()).unwrap()
}

fn cfg(v: serde_json::Value) -> ChunkingConfig {
    ChunkingConfig::from_map(v.as_object().unwrap()).unwrap()
}

const DOC: &str = "# Manual\n\nOverview paragraph.\n\n## Setup Guide\n\n- step one\n- step two\n\n| k | v |\n|---|---|\n| a | 1 |\n\n```rust\nfn main() {}\n```\n\n### Linux\n\nUse apt.\n\n## FAQ\n\nAsk us.\n";

#[test]
fn blocks_under_one_heading_are_packed_and_headings_split_chunks() {
    let chunks = chunk("m.md", DOC, &ChunkingConfig::default());
    let got: Vec<(String, &str)> = chunks
        .iter()
        .map(|c| (c.heading_path(), c.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Manual".into(), "Overview paragraph."),
            (
                "Manual > Setup Guide".into(),
                "- step one\n- step two\n\n| k | v |\n|---|---|\n| a | 1 |\n\n```rust\nfn main() {}\n```"
            ),
            ("Manual > Setup Guide > Linux".into(), "Use apt."),
            ("Manual > FAQ".into(), "Ask us."),
        ]
    );
    assert_eq!(chunks[2].embedding_text, "Setup Guide: Linux: Use apt.");
    assert_eq!(
        chunks.iter().map(|c| c.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(chunks[2].line_number, Some(20));
}

#[test]
fn without_combining_every_block_is_its_own_chunk() {
    let chunks = chunk("m.md", DOC, &cfg(json!({"combine_under_heading": false})));
    assert_eq!(chunks.len(), 6);
    assert!(chunks[3].text.starts_with("```rust"));
}

#[test]
fn atomic_blocks_stay_whole_when_they_fit_and_split_by_lines_when_not() {
    let code: String = (0..40).map(|i| format!("let x{i} = {i};\n")).collect();
    let md = format!("# C\n\nshort intro\n\n```\n{code}```\n");
    let chunks = chunk("c.md", &md, &cfg(json!({"max_chunk_size": 120})));
    assert!(chunks.len() > 4);
    assert_eq!(chunks[0].text, "short intro");
    for c in &chunks[1..] {
        assert!(c.text.chars().count() <= 120);
        for line in c.text.lines() {
            assert!(
                line.starts_with("let ") || line.starts_with("```"),
                "{line:?} was cut"
            );
        }
    }
    let list = "- item one\n- item two\n";
    let chunks = chunk(
        "l.md",
        &format!("# L\n\n{list}"),
        &ChunkingConfig::default(),
    );
    assert_eq!(chunks[0].text, list.trim());
}

#[test]
fn heading_inclusion_modes() {
    let md = "# Top Title\n\n## Sub\n\nbody\n";
    let c = |mode: &str| chunk("h.md", md, &cfg(json!({"heading_inclusion": mode})))[0].clone();
    let m = c("in_metadata");
    assert_eq!(
        (m.text.as_str(), m.embedding_text.as_str()),
        ("body", "Top Title: Sub: body")
    );
    let t = c("in_text");
    assert_eq!(t.text, "# Top Title\n## Sub\n\nbody");
    assert_eq!(t.embedding_text, t.text);
    let b = c("both");
    assert_eq!(
        (b.text.as_str(), b.embedding_text.as_str()),
        ("# Top Title\n## Sub\n\nbody", "Top Title: Sub: body")
    );
    let n = c("none");
    assert_eq!(
        (n.text.as_str(), n.embedding_text.as_str()),
        ("body", "body")
    );
    assert_eq!(
        cfg(json!({"heading_inclusion": "both"})).heading_inclusion,
        HeadingInclusion::Both
    );
}

#[test]
fn overlap_repeats_words_across_split_prose() {
    let prose = (0..200)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let chunks = chunk(
        "o.txt",
        &prose,
        &cfg(json!({"max_chunk_size": 100, "chunk_overlap": 20})),
    );
    assert!(chunks.len() > 3);
    for w in chunks.windows(2) {
        let last = w[0].text.split(' ').next_back().unwrap();
        assert!(
            w[1].text.split(' ').take(6).any(|x| x == last),
            "{:?} / {:?}",
            w[0].text,
            w[1].text
        );
    }
    assert!(
        ChunkingConfig::from_map(
            json!({"max_chunk_size": 10, "chunk_overlap": 10})
                .as_object()
                .unwrap()
        )
        .is_err()
    );
}

#[test]
fn text_files_have_no_markdown_structure() {
    let chunks = chunk(
        "t.txt",
        "# not a heading\n\njust text\n",
        &ChunkingConfig::default(),
    );
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, "# not a heading\n\njust text");
    assert!(chunks[0].headings.is_empty());
}

#[test]
fn json_text_rule_and_text_fields() {
    let obj = r#"{"name": "Widget", "id": "123", "created_at": "2024-01-01T00:00:00Z", "description": "A small part", "color": "red", "_internal": 1, "meta": {"a": {"b": 2}}}"#;
    let chunks = chunk("w.json", obj, &ChunkingConfig::default());
    assert_eq!(
        chunks[0].text,
        "Widget\ndescription: A small part\ncolor: red\nmeta: {\"a\":{\"b\":2}}"
    );
    assert_eq!(chunks[0].metadata()["meta.a.b"], json!(2));
    let chunks = chunk(
        "w.json",
        obj,
        &cfg(json!({"text_fields": ["color", "name"]})),
    );
    assert_eq!(chunks[0].text, "color: red\nname: Widget");
}
