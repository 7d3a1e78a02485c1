//! Conformance cases for listing, counting, filtering, sorting and pagination.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Harness, cfg, fresh};
use crate::{
    ListQuery, RegisterOptions, RegistryBackend, RegistryBackendExt, RegistryError, SortSpec,
    Status,
};

fn meta(v: Value) -> Map<String, Value> {
    v.as_object().expect("object").clone()
}

fn ids(regs: &[std::sync::Arc<crate::Registration>]) -> Vec<&str> {
    regs.iter().map(|r| r.bot_id.as_str()).collect()
}

async fn seed(b: &dyn RegistryBackend) {
    // c, a, b registered out of order; b inactive.
    for (id, team, tier) in [("c", "x", 3), ("a", "y", 1), ("b", "x", 2), ("d", "x", 4)] {
        b.register_with(
            id,
            Arc::new(cfg(tier)),
            RegisterOptions::default().metadata(meta(json!({"team": team, "tier": tier}))),
        )
        .await
        .unwrap();
    }
    b.register_with("e", Arc::new(cfg(0)), RegisterOptions::default())
        .await
        .unwrap();
    b.deactivate("b").await.unwrap();
}

/// list_all / list_active / list_inactive / list_ids and the counts agree, ordered by bot_id.
pub async fn list_and_count(h: &dyn Harness) {
    let b = fresh(h, "list_count").await;
    assert!(b.list_all().await.unwrap().is_empty());
    seed(&*b).await;
    assert_eq!(ids(&b.list_all().await.unwrap()), ["a", "b", "c", "d", "e"]);
    assert_eq!(ids(&b.list_active().await.unwrap()), ["a", "c", "d", "e"]);
    assert_eq!(ids(&b.list_inactive().await.unwrap()), ["b"]);
    assert_eq!(b.list_ids().await.unwrap(), ["a", "c", "d", "e"]);
    assert_eq!(b.count().await.unwrap(), 4);
    assert_eq!(b.count_all().await.unwrap(), 5);
    assert_eq!(b.count_inactive().await.unwrap(), 1);
    let q = ListQuery::with_status(Status::Other("error".into()));
    assert!(b.list(&q).await.unwrap().is_empty());
}

/// Metadata filters: AND over keys, equality of values, inactive included by list_all,
/// empty filter is no filter, counts honour filters.
pub async fn filter_metadata_semantics(h: &dyn Harness) {
    let b = fresh(h, "filter_meta").await;
    seed(&*b).await;
    let team_x = ListQuery::all().filter("team", json!("x"));
    assert_eq!(ids(&b.list(&team_x).await.unwrap()), ["b", "c", "d"]);
    let active_x = ListQuery::with_status(Status::Active).filter("team", json!("x"));
    assert_eq!(ids(&b.list(&active_x).await.unwrap()), ["c", "d"]);
    let both = ListQuery::all()
        .filter("team", json!("x"))
        .filter("tier", json!(3));
    assert_eq!(ids(&b.list(&both).await.unwrap()), ["c"]);
    let none = ListQuery::all().filter("team", json!("nobody"));
    assert!(b.list(&none).await.unwrap().is_empty());
    let wrong_type = ListQuery::all().filter("tier", json!("3"));
    assert!(b.list(&wrong_type).await.unwrap().is_empty(), "3 != \"3\"");
    let empty = ListQuery {
        filter_metadata: Some(Map::new()),
        ..ListQuery::all()
    };
    assert_eq!(b.list(&empty).await.unwrap().len(), 5);
    let f = meta(json!({"team": "x"}));
    assert_eq!(
        b.count_where(Some(&Status::Active), Some(&f))
            .await
            .unwrap(),
        2
    );
    assert_eq!(b.count_where(None, Some(&f)).await.unwrap(), 3);
    assert_eq!(b.count_where(None, Some(&Map::new())).await.unwrap(), 5);
    let missing = meta(json!({"team": null}));
    assert_eq!(
        b.count_where(None, Some(&missing)).await.unwrap(),
        0,
        "null matches only an explicit null, never a missing key"
    );
}

/// Sorting (asc, desc, metadata fields, missing values), limit and offset.
pub async fn sort_limit_offset(h: &dyn Harness) {
    let b = fresh(h, "sort_page").await;
    seed(&*b).await;
    let q = |q: ListQuery| {
        let b = b.clone();
        async move {
            ids(&b.list(&q).await.unwrap())
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        q(ListQuery::with_status(Status::Active).sort_by(SortSpec::asc("bot_id"))).await,
        ["a", "c", "d", "e"]
    );
    assert_eq!(
        q(ListQuery::all().sort_by(SortSpec::desc("bot_id"))).await,
        ["e", "d", "c", "b", "a"]
    );
    // Missing metadata values sort last ascending, first descending.
    assert_eq!(
        q(ListQuery::all().sort_by(SortSpec::asc("metadata.tier"))).await,
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        q(ListQuery::all().sort_by(SortSpec::desc("metadata.tier"))).await,
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        q(ListQuery::all()
            .sort_by(SortSpec::asc("metadata.team"))
            .sort_by(SortSpec::desc("metadata.tier")))
        .await,
        ["d", "c", "b", "a", "e"]
    );
    assert_eq!(
        q(ListQuery::all()
            .sort_by(SortSpec::asc("status"))
            .sort_by(SortSpec::desc("bot_id")))
        .await,
        ["e", "d", "c", "a", "b"]
    );
    assert_eq!(
        q(ListQuery::all().sort_by(SortSpec::asc("revision"))).await,
        ["c", "a", "d", "e", "b"]
    );
    assert_eq!(
        q(ListQuery::with_status(Status::Active).limit(2)).await,
        ["a", "c"]
    );
    assert_eq!(
        q(ListQuery::with_status(Status::Active).offset(2)).await,
        ["d", "e"]
    );
    assert_eq!(
        q(ListQuery::with_status(Status::Active).offset(1).limit(2)).await,
        ["c", "d"]
    );
    assert_eq!(q(ListQuery::all().limit(0)).await, Vec::<String>::new());
    assert_eq!(q(ListQuery::all().offset(10)).await, Vec::<String>::new());
    assert_eq!(
        q(ListQuery::all()
            .filter("team", json!("x"))
            .offset(1)
            .limit(1))
        .await,
        ["c"]
    );
    let err = b
        .list(&ListQuery::all().sort_by(SortSpec::asc("colour")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidQuery { .. }) && err.to_string().contains("colour"),
        "{err}"
    );
    assert!(SortSpec::parse("bot_id:DESC").is_ok());
    assert!(SortSpec::parse(":asc").is_err());
    assert!(SortSpec::parse("bot_id:up").is_err());
}

/// Metadata filters of every JSON type, on keys a query language must quote, mean exact JSON
/// equality: `1` is not `1.0`'s string, `true` is not `1`, an array or object must be equal as a
/// whole, and a filtered list or count never misses a match or includes a non-match.
pub async fn metadata_filters_of_every_json_type(h: &dyn Harness) {
    let b = fresh(h, "filter_types").await;
    let rows = [
        ("int", json!({"v": 1, "a.b": "dot", "q\"k": "quote"})),
        ("float", json!({"v": 1.5, "日本": "語"})),
        ("bool", json!({"v": true, "tags": ["x", "y"]})),
        ("int1", json!({"v": 1, "tags": ["x"]})),
        ("null", json!({"v": null, "obj": {"k": [1, {"z": null}]}})),
        ("str", json!({"v": "1", "obj": {"k": [1]}})),
        ("none", json!({})),
    ];
    for (id, m) in &rows {
        b.register_with(
            id,
            std::sync::Arc::new(cfg(0)),
            crate::RegisterOptions::default().metadata(meta(m.clone())),
        )
        .await
        .unwrap();
    }
    let cases: &[(Value, &[&str])] = &[
        (json!({"v": 1}), &["int", "int1"]),
        (json!({"v": 1.5}), &["float"]),
        (json!({"v": true}), &["bool"]),
        (json!({"v": "1"}), &["str"]),
        (json!({"v": null}), &["null"]),
        (json!({"tags": ["x", "y"]}), &["bool"]),
        (json!({"tags": ["x"]}), &["int1"]),
        (json!({"obj": {"k": [1, {"z": null}]}}), &["null"]),
        (json!({"obj": {"k": [1]}}), &["str"]),
        (json!({"a.b": "dot"}), &["int"]),
        (json!({"q\"k": "quote"}), &["int"]),
        (json!({"日本": "語"}), &["float"]),
        (json!({"v": 1, "tags": ["x"]}), &["int1"]),
        (json!({"v": 2}), &[]),
    ];
    for (filter, want) in cases {
        let q = ListQuery {
            filter_metadata: Some(meta(filter.clone())),
            ..ListQuery::all()
        };
        assert_eq!(ids(&b.list(&q).await.unwrap()), *want, "filter {filter}");
        let n = b
            .count_where(None, Some(&meta(filter.clone())))
            .await
            .unwrap();
        assert_eq!(n, want.len() as u64, "count of filter {filter}");
    }
}
