//! The vector-store conformance suite: one async function per behaviour, run by every store's
//! tests through [`vector_store_conformance_tests!`](crate::vector_store_conformance_tests),
//! the same shape as dynreg's other suites: a store's test file implements [`Harness`] (opens
//! an empty store of 4 dimensions) and expands the macro with an `Option<impl Harness>` (`None`
//! when a server is not configured: every case is then skipped after the constructor printed
//! why).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{Filter, VectorError, VectorRecord, VectorStore};

/// Opens stores under test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// An empty store of 4 dimensions, cosine similarity.
    async fn open(&self) -> Arc<dyn VectorStore>;
}

fn rec(id: &str, v: [f32; 4], meta: Value) -> VectorRecord {
    VectorRecord {
        id: id.into(),
        vector: v.to_vec(),
        metadata: meta.as_object().cloned().unwrap_or_default(),
    }
}

fn filter(v: Value) -> Filter {
    Filter::from_value(&v).expect("an object")
}

async fn seeded(h: &dyn Harness) -> Arc<dyn VectorStore> {
    let s = h.open().await;
    s.upsert(vec![
        rec(
            "a",
            [1.0, 0.0, 0.0, 0.0],
            json!({"kind": "faq", "tags": ["x", "y"], "n": 1}),
        ),
        rec(
            "b",
            [0.9, 0.1, 0.0, 0.0],
            json!({"kind": "doc", "tags": ["y"], "n": 2}),
        ),
        rec("c", [0.1, 1.0, 0.0, 0.0], json!({"kind": "doc", "n": 3})),
        rec(
            "d",
            [0.0, 0.0, 1.0, 0.0],
            json!({"kind": "faq", "n": 4, "_stale": true}),
        ),
    ])
    .await
    .expect("upsert");
    s
}

fn ids(hits: &[super::SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// Search returns the nearest first, at most k, with scores and metadata.
pub async fn search_orders_by_similarity(h: &dyn Harness) {
    let s = seeded(h).await;
    let hits = s
        .search(&[1.0, 0.0, 0.0, 0.0], 3, &Filter::all())
        .await
        .unwrap();
    assert_eq!(ids(&hits), vec!["a", "b", "c"]);
    assert!((hits[0].score - 1.0).abs() < 1e-5, "{}", hits[0].score);
    assert!(hits[0].score >= hits[1].score && hits[1].score >= hits[2].score);
    assert_eq!(hits[0].metadata["kind"], json!("faq"));
    assert_eq!(
        s.search(&[1.0, 0.0, 0.0, 0.0], 100, &Filter::all())
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(
        s.search(&[1.0, 0.0, 0.0, 0.0], 0, &Filter::all())
            .await
            .unwrap()
            .is_empty()
    );
    let empty = h.open().await;
    assert!(
        empty
            .search(&[1.0, 0.0, 0.0, 0.0], 5, &Filter::all())
            .await
            .unwrap()
            .is_empty()
    );
}

/// The original's filter semantics, in search and count.
pub async fn filters_have_the_original_semantics(h: &dyn Harness) {
    let s = seeded(h).await;
    let q = [1.0, 0.0, 0.0, 0.0];
    let count = |f: Value| {
        let s = s.clone();
        async move { s.count(&filter(f)).await.unwrap() }
    };
    assert_eq!(count(json!({})).await, 4);
    assert_eq!(count(json!({"kind": "faq"})).await, 2);
    assert_eq!(count(json!({"kind": ["faq", "doc"]})).await, 4);
    assert_eq!(count(json!({"tags": "y"})).await, 2);
    assert_eq!(count(json!({"tags": ["x", "z"]})).await, 1);
    assert_eq!(count(json!({"kind": []})).await, 0);
    assert_eq!(count(json!({"missing": 1})).await, 0);
    assert_eq!(count(json!({"kind": "doc", "n": 3})).await, 1);
    assert_eq!(count(json!({"n": 2.0})).await, 1);
    let hits = s
        .search(&q, 5, &filter(json!({"kind": "doc"})))
        .await
        .unwrap();
    assert_eq!(ids(&hits), vec!["b", "c"]);
}

/// Upserting an existing id replaces its vector and metadata; delete and clear remove.
pub async fn upsert_replaces_and_deletes_remove(h: &dyn Harness) {
    let s = seeded(h).await;
    s.upsert(vec![rec(
        "a",
        [0.0, 0.0, 0.0, 1.0],
        json!({"kind": "moved"}),
    )])
    .await
    .unwrap();
    assert_eq!(s.count(&Filter::all()).await.unwrap(), 4);
    let hits = s
        .search(&[0.0, 0.0, 0.0, 1.0], 1, &Filter::all())
        .await
        .unwrap();
    assert_eq!(
        (hits[0].id.as_str(), &hits[0].metadata["kind"]),
        ("a", &json!("moved"))
    );
    // An id twice in one batch (new or known): the last one wins, one row each.
    s.upsert(vec![
        rec("e", [0.0, 1.0, 0.0, 0.0], json!({"kind": "first"})),
        rec("b", [0.0, 1.0, 1.0, 0.0], json!({"kind": "doc", "v": 1})),
        rec("e", [0.0, 0.0, 0.0, 1.0], json!({"kind": "last"})),
        rec("b", [0.9, 0.1, 0.0, 0.0], json!({"kind": "doc", "n": 2})),
    ])
    .await
    .unwrap();
    assert_eq!(s.count(&Filter::all()).await.unwrap(), 5);
    assert_eq!(s.count(&filter(json!({"kind": "last"}))).await.unwrap(), 1);
    assert_eq!(s.count(&filter(json!({"kind": "first"}))).await.unwrap(), 0);
    assert_eq!(s.count(&filter(json!({"v": 1}))).await.unwrap(), 0);
    let hits = s
        .search(&[0.0, 0.0, 0.0, 1.0], 2, &Filter::all())
        .await
        .unwrap();
    let mut nearest = ids(&hits);
    nearest.sort_unstable();
    assert_eq!(nearest, vec!["a", "e"]);
    assert_eq!(s.delete(&["e".into()]).await.unwrap(), 1);
    assert_eq!(s.delete(&["a".into(), "zz".into()]).await.unwrap(), 1);
    assert_eq!(s.count(&Filter::all()).await.unwrap(), 3);
    // The rows that moved into the hole are still found by id and vector.
    let hits = s
        .search(&[0.0, 0.0, 1.0, 0.0], 1, &Filter::all())
        .await
        .unwrap();
    assert_eq!(hits[0].id, "d");
    assert_eq!(s.clear(&filter(json!({"kind": "doc"}))).await.unwrap(), 2);
    assert_eq!(
        ids(&s
            .search(&[1.0, 1.0, 1.0, 1.0], 9, &Filter::all())
            .await
            .unwrap()),
        vec!["d"]
    );
    assert_eq!(s.clear(&filter(json!({"kind": []}))).await.unwrap(), 0);
    assert_eq!(s.clear(&Filter::all()).await.unwrap(), 1);
    assert_eq!(s.count(&Filter::all()).await.unwrap(), 0);
}

/// `update_metadata_where` patches matching records only.
pub async fn update_metadata_where_patches_matches(h: &dyn Harness) {
    let s = seeded(h).await;
    let mut patch = Map::new();
    patch.insert("_stale".into(), json!(true));
    assert_eq!(
        s.update_metadata_where(&filter(json!({"kind": "doc"})), &patch)
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.count(&filter(json!({"_stale": true}))).await.unwrap(), 3);
    assert_eq!(
        s.count(&filter(json!({"kind": "doc", "n": 2})))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.update_metadata_where(&filter(json!({"kind": []})), &patch)
            .await
            .unwrap(),
        0
    );
}

/// Exclusions leave matching rows out of search and count, with the same value semantics.
pub async fn exclusions_leave_rows_out(h: &dyn Harness) {
    let s = seeded(h).await;
    let visible = Filter::all().without("_stale", true);
    assert_eq!(s.count(&visible).await.unwrap(), 3);
    let hits = s.search(&[0.0, 0.0, 1.0, 0.0], 4, &visible).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.id != "d"));
    assert_eq!(
        s.count(&filter(json!({"kind": "doc"})).without("tags", "y"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.count(&Filter::all().without("n", json!([1, 2])))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.count(&Filter::all().without("kind", json!([])))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        s.clear(&filter(json!({"kind": "faq"})).without("_stale", true))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.count(&Filter::all()).await.unwrap(), 3);
}

/// Several patches as one step; each update selects its rows before any is applied.
pub async fn atomic_updates_select_before_they_apply(h: &dyn Harness) {
    let s = seeded(h).await;
    let mut stale = Map::new();
    stale.insert("_stale".into(), json!(true));
    let mut fresh = Map::new();
    fresh.insert("_stale".into(), json!(false));
    // Swap: retire the faq rows that are live, revive the one that was stale.
    let counts = s
        .update_metadata_atomically(&[
            (
                filter(json!({"kind": "faq"})).without("_stale", true),
                stale,
            ),
            (filter(json!({"_stale": true})), fresh),
        ])
        .await
        .unwrap();
    assert_eq!(counts, vec![1, 1]);
    assert_eq!(s.count(&filter(json!({"_stale": true}))).await.unwrap(), 1);
    assert_eq!(
        s.count(&filter(json!({"_stale": true, "kind": "faq", "n": 1})))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.count(&filter(json!({"_stale": false, "n": 4})))
            .await
            .unwrap(),
        1
    );
}

/// Distinct key combinations with their counts (a missing key is null).
pub async fn distinct_groups_records(h: &dyn Harness) {
    let s = seeded(h).await;
    let mut groups = s
        .distinct(&Filter::all(), &["kind", "_stale"])
        .await
        .unwrap();
    groups.sort_by_key(|(k, _)| serde_json::to_string(k).unwrap());
    assert_eq!(
        groups,
        vec![
            (vec![json!("doc"), Value::Null], 2),
            (vec![json!("faq"), Value::Null], 1),
            (vec![json!("faq"), json!(true)], 1),
        ]
    );
    let none = s
        .distinct(&filter(json!({"kind": []})), &["kind"])
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Every metadata key behaves the same: a store may index some keys (the memory store keeps
/// `source_path`, the swap flags and a few others as interned columns), so the same values
/// under an indexed key and under a plain one (`mirror`) must give the same counts, searches,
/// exclusions and groups — across strings, booleans, numbers, lists, objects, null and
/// missing, after metadata patches, a few deletions and a bulk clear.
pub async fn indexed_and_plain_keys_agree(h: &dyn Harness) {
    let s = h.open().await;
    let values = [
        json!("a"),
        json!("b"),
        json!(["a", "c"]),
        json!(1),
        json!(1.5),
        json!(true),
        json!(false),
        json!({"o": 1}),
        Value::Null,
    ];
    let mut records = Vec::new();
    for i in 0..40usize {
        let mut meta = Map::new();
        if i % 10 != 9 {
            let v = values[i % values.len()].clone();
            meta.insert("source_path".into(), v.clone());
            meta.insert("_stale".into(), v.clone());
            meta.insert("mirror".into(), v);
        }
        meta.insert("i".into(), json!(i));
        let x = i as f32 / 40.0;
        records.push(rec(
            &format!("r{i:02}"),
            [1.0, x, 1.0 - x, 0.5],
            Value::Object(meta),
        ));
    }
    s.upsert(records).await.unwrap();
    let probes = [
        json!("a"),
        json!(["a", "b"]),
        json!([]),
        json!(1),
        json!(1.0),
        json!([1.5, "c"]),
        json!(true),
        json!([false, "b"]),
        json!({"o": 1}),
        json!("zzz"),
    ];
    let q = [1.0, 0.3, 0.2, 0.5];
    let agree = |stage: &'static str| {
        let s = s.clone();
        let probes = probes.clone();
        async move {
            for p in &probes {
                for key in ["source_path", "_stale"] {
                    let indexed = Filter::all().with(key, p.clone());
                    let plain = Filter::all().with("mirror", p.clone());
                    assert_eq!(
                        s.count(&indexed).await.unwrap(),
                        s.count(&plain).await.unwrap(),
                        "{stage}: count {key} = {p}"
                    );
                    let a = s.search(&q, 50, &indexed).await.unwrap();
                    let b = s.search(&q, 50, &plain).await.unwrap();
                    assert_eq!(ids(&a), ids(&b), "{stage}: search {key} = {p}");
                    let a = Filter::all().without(key, p.clone());
                    let b = Filter::all().without("mirror", p.clone());
                    assert_eq!(
                        s.count(&a).await.unwrap(),
                        s.count(&b).await.unwrap(),
                        "{stage}: exclusion {key} = {p}"
                    );
                }
            }
            let norm = |mut g: Vec<(Vec<Value>, u64)>| {
                g.sort_by_key(|(k, _)| serde_json::to_string(k).unwrap());
                g
            };
            assert_eq!(
                norm(
                    s.distinct(&Filter::all(), &["source_path", "_stale"])
                        .await
                        .unwrap()
                ),
                norm(
                    s.distinct(&Filter::all(), &["mirror", "mirror"])
                        .await
                        .unwrap()
                ),
                "{stage}: distinct"
            );
        }
    };
    agree("seeded").await;
    assert_eq!(
        s.count(&Filter::all().with("source_path", "a"))
            .await
            .unwrap(),
        8
    );

    let mut patch = Map::new();
    for key in ["source_path", "_stale", "mirror"] {
        patch.insert(key.into(), json!("b"));
    }
    let n = s
        .update_metadata_where(&Filter::all().with("mirror", json!([1, true])), &patch)
        .await
        .unwrap();
    assert_eq!(n, 8);
    agree("patched").await;

    s.delete(&["r00".into(), "r13".into(), "r27".into()])
        .await
        .unwrap();
    agree("three deleted").await;
    let cleared = s
        .clear(&Filter::all().with("mirror", json!(["b", "a", false])))
        .await
        .unwrap();
    assert!(cleared >= 10, "{cleared}");
    agree("bulk cleared").await;
}

/// A vector of the wrong width is refused with the id, and nothing of the batch is written.
pub async fn wrong_width_is_refused_whole(h: &dyn Harness) {
    let s = h.open().await;
    let bad = VectorRecord {
        id: "bad".into(),
        vector: vec![1.0; 3],
        metadata: Map::new(),
    };
    let good = rec("good", [1.0, 0.0, 0.0, 0.0], json!({}));
    let e = s.upsert(vec![good, bad]).await.unwrap_err();
    assert!(
        matches!(
            e,
            VectorError::Dimensions {
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"bad\""));
    assert_eq!(s.count(&Filter::all()).await.unwrap(), 0);
    assert!(s.search(&[1.0; 5], 1, &Filter::all()).await.is_err());
}

/// Generates one `#[tokio::test]` per conformance case for a harness expression of type
/// `Option<impl Harness>`.
#[macro_export]
macro_rules! vector_store_conformance_tests {
    ($harness:expr) => {
        $crate::vector_store_conformance_tests!(@cases $harness;
            search_orders_by_similarity, filters_have_the_original_semantics,
            upsert_replaces_and_deletes_remove, update_metadata_where_patches_matches,
            exclusions_leave_rows_out, atomic_updates_select_before_they_apply,
            distinct_groups_records, wrong_width_is_refused_whole,
            indexed_and_plain_keys_agree);
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some(h) = $harness {
                    $crate::vector::conformance::$case(&h).await;
                }
            }
        )*
    };
}
