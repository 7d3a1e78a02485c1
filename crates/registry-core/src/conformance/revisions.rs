//! Conformance cases for revisions, the change feed and conditional writes.

use std::sync::Arc;

use super::{Harness, cfg, fresh};
use crate::{
    Change, ChangeFeed, Deactivation, ListQuery, RegisterOptions, RegistryBackendExt,
    RegistryError, Status, WriteCondition, WriteEffect,
};

/// Every committed write takes a new, higher revision; no-op writes and touches take none.
pub async fn revisions_are_monotonic_and_skip_no_ops(h: &dyn Harness) {
    let b = fresh(h, "revisions").await;
    assert_eq!(b.current_revision().await.unwrap(), 0);
    let r1 = b.register("a", cfg(1)).await.unwrap().revision;
    let r2 = b.register("b", cfg(1)).await.unwrap().revision;
    assert!(r2 > r1);
    let same = b.register("a", cfg(1)).await.unwrap();
    assert_eq!(
        same.revision, r1,
        "identical re-register keeps the revision"
    );
    assert_eq!(b.current_revision().await.unwrap(), r2);
    b.get("a").await.unwrap();
    assert_eq!(
        b.current_revision().await.unwrap(),
        r2,
        "touches take no revision"
    );
    let r3 = b.register("a", cfg(2)).await.unwrap().revision;
    assert!(r3 > r2);
    b.deactivate("a").await.unwrap();
    let r4 = b.peek("a").await.unwrap().unwrap().revision;
    assert!(r4 > r3);
    let r5 = b
        .register_with(
            "a",
            Arc::new(cfg(2)),
            RegisterOptions::default().status(Status::Active),
        )
        .await
        .unwrap()
        .revision;
    assert!(r5 > r4, "a status change is a change");
    b.unregister("b").await.unwrap();
    let r6 = b.current_revision().await.unwrap();
    assert!(r6 > r5);
}

fn feed(f: ChangeFeed) -> (Vec<Change>, u64) {
    match f {
        ChangeFeed::Changes {
            changes,
            current_revision,
        } => (changes, current_revision),
        other => panic!("expected changes, got {other:?}"),
    }
}

/// `changes_since` lists the latest state of each changed id and deletion tombstones, in
/// revision order, and following the cursor never misses or repeats a change.
pub async fn changes_since_reports_upserts_and_tombstones(h: &dyn Harness) {
    let b = fresh(h, "changes_since").await;
    let (none, cur0) = feed(b.changes_since(0).await.unwrap());
    assert!(none.is_empty());
    assert_eq!(cur0, 0);
    b.register("a", cfg(1)).await.unwrap();
    b.register("b", cfg(1)).await.unwrap();
    b.register("c", cfg(1)).await.unwrap();
    let (all, cursor) = feed(b.changes_since(0).await.unwrap());
    assert_eq!(
        all.iter().map(Change::bot_id).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(cursor, b.current_revision().await.unwrap());

    b.register("a", cfg(2)).await.unwrap();
    b.unregister("b").await.unwrap();
    b.deactivate("c").await.unwrap();
    b.register("d", cfg(1)).await.unwrap();
    b.register("a", cfg(3)).await.unwrap();
    let (changes, cursor2) = feed(b.changes_since(cursor).await.unwrap());
    let revs: Vec<u64> = changes.iter().map(Change::revision).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "ascending: {revs:?}");
    assert!(revs.iter().all(|r| *r > cursor && *r <= cursor2));
    let summary: Vec<(String, &str)> = changes
        .iter()
        .map(|c| match c {
            Change::Upsert(r) => (
                r.bot_id.clone(),
                if r.is_active() { "active" } else { "inactive" },
            ),
            Change::Deleted { bot_id, .. } => (bot_id.clone(), "deleted"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("b".to_owned(), "deleted"),
            ("c".to_owned(), "inactive"),
            ("d".to_owned(), "active"),
            ("a".to_owned(), "active")
        ]
    );
    let Change::Upsert(a) = &changes[3] else {
        unreachable!()
    };
    assert_eq!(*a.config, cfg(3), "the latest state of a");
    let (empty, cursor3) = feed(b.changes_since(cursor2).await.unwrap());
    assert!(empty.is_empty());
    assert_eq!(cursor3, cursor2);

    // A deleted and re-created id shows up as its new state.
    b.unregister("d").await.unwrap();
    b.register("d", cfg(9)).await.unwrap();
    let (changes, _) = feed(b.changes_since(cursor2).await.unwrap());
    let last = changes.last().unwrap();
    assert!(
        matches!(last, Change::Upsert(r) if r.bot_id == "d" && *r.config == cfg(9)),
        "{changes:?}"
    );

    // clear() produces a tombstone per id.
    let before = b.current_revision().await.unwrap();
    let removed = b.clear().await.unwrap();
    let (changes, _) = feed(b.changes_since(before).await.unwrap());
    assert_eq!(changes.len() as u64, removed);
    assert!(changes.iter().all(|c| matches!(c, Change::Deleted { .. })));
}

/// A cursor ahead of the registry (e.g. after it was recreated) must relist.
pub async fn changes_since_a_future_cursor_is_expired(h: &dyn Harness) {
    let b = fresh(h, "future_cursor").await;
    b.register("a", cfg(1)).await.unwrap();
    let cur = b.current_revision().await.unwrap();
    match b.changes_since(cur + 100).await.unwrap() {
        ChangeFeed::Expired {
            cursor,
            current_revision,
            ..
        } => {
            assert_eq!(cursor, cur + 100);
            assert_eq!(current_revision, cur);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

/// Create-only and compare-and-swap writes fail with a conflict naming id, expected, actual.
pub async fn conditional_writes_conflict(h: &dyn Harness) {
    let b = fresh(h, "conditional").await;
    let r1 = b
        .register_with(
            "bot",
            Arc::new(cfg(1)),
            RegisterOptions::default().create_only(),
        )
        .await
        .unwrap();
    let err = b
        .register_with(
            "bot",
            Arc::new(cfg(2)),
            RegisterOptions::default().create_only(),
        )
        .await
        .unwrap_err();
    match &err {
        RegistryError::Conflict {
            bot_id,
            expected,
            actual,
        } => {
            assert_eq!(bot_id, "bot");
            assert_eq!(*expected, WriteCondition::MustNotExist);
            assert_eq!(*actual, Some(r1.revision));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("\"bot\"") && msg.contains(&r1.revision.to_string()),
        "{msg}"
    );
    let r2 = b
        .register_with(
            "bot",
            Arc::new(cfg(2)),
            RegisterOptions::default().if_revision(r1.revision),
        )
        .await
        .unwrap();
    assert!(r2.revision > r1.revision);
    let stale = b
        .register_with(
            "bot",
            Arc::new(cfg(3)),
            RegisterOptions::default().if_revision(r1.revision),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, RegistryError::Conflict { expected: WriteCondition::Revision(e), actual: Some(a), .. } if e == r1.revision && a == r2.revision),
        "{stale}"
    );
    let missing = b
        .register_with(
            "ghost",
            Arc::new(cfg(1)),
            RegisterOptions::default().if_revision(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(missing, RegistryError::Conflict { actual: None, .. }),
        "{missing}"
    );
    assert!(b.peek("ghost").await.unwrap().is_none());
    assert_eq!(
        *b.peek_config("bot").await.unwrap().unwrap(),
        cfg(2),
        "failed writes change nothing"
    );
}

/// Configs and metadata holding NUL, control and non-ASCII characters round-trip, and
/// re-registering them unchanged is still a no-op (no backend may choke comparing them).
pub async fn unusual_text_round_trips_and_re_registers_as_a_no_op(h: &dyn Harness) {
    let b = fresh(h, "unusual_text").await;
    let config = serde_json::json!({"prompt": "nul:\u{0} tab:\t bell:\u{7} é 日本 🦀", "n": 1.5});
    let mut metadata = serde_json::Map::new();
    metadata.insert("note".into(), serde_json::json!("nul:\u{0} \u{1f} ✓"));
    metadata.insert("a".into(), serde_json::json!([1, {"b": null}]));
    let opts = || RegisterOptions::default().metadata(metadata.clone());
    let first = b
        .register_with("u", Arc::new(config.clone()), opts())
        .await
        .unwrap();
    let again = b
        .register_with("u", Arc::new(config.clone()), opts())
        .await
        .unwrap();
    assert_eq!(
        again.revision, first.revision,
        "an identical re-register is a no-op"
    );
    let stored = b.peek("u").await.unwrap().unwrap();
    assert_eq!(*stored.config, config);
    assert_eq!(*stored.metadata, metadata);
}

/// What a Python writer sends is what comes back: integers beyond 64 bits exact, floats with
/// their value (`1.5e-300`, `1e-05`), and the order of object keys, in configs and in
/// metadata. Re-registering the same values — also with keys in another order — is a no-op
/// that keeps what was stored.
pub async fn numbers_and_key_order_survive_storage(h: &dyn Harness) {
    let b = fresh(h, "fidelity").await;
    // The text Python's json.dumps writes for these values.
    let text = r#"{"z": 18446744073709551616, "neg": -1180591620717411303424, "tiny": 1.5e-300, "small": 1e-05, "third": 0.30000000000000004, "a": {"y": [1.0, 1e+16, "\u00e9"], "b": null}, "m": true}"#;
    let config: serde_json::Value = serde_json::from_str(text).unwrap();
    let metadata: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"zeta": 1, "alpha": 340282366920938463463374607431768211456, "mid": 2.5e-08}"#,
    )
    .unwrap();
    let opts = || RegisterOptions::default().metadata(metadata.clone());
    let first = b
        .register_with("f", Arc::new(config.clone()), opts())
        .await
        .unwrap();
    let stored = b.peek("f").await.unwrap().unwrap();
    // Integers: every digit. Floats: the same double.
    let got = &*stored.config;
    assert_eq!(got["z"].to_string(), "18446744073709551616");
    assert_eq!(got["neg"].to_string(), "-1180591620717411303424");
    assert_eq!(
        stored.metadata["alpha"].to_string(),
        "340282366920938463463374607431768211456"
    );
    for (key, want) in [("tiny", 1.5e-300), ("small", 1e-05), ("third", 0.1 + 0.2)] {
        assert_eq!(got[key].as_f64(), Some(want), "{key}: {}", got[key]);
    }
    assert_eq!(got["a"]["y"][1].as_f64(), Some(1e16));
    assert_eq!(stored.metadata["mid"].as_f64(), Some(2.5e-08));
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(got), ["z", "neg", "tiny", "small", "third", "a", "m"]);
    assert_eq!(keys(&got["a"]), ["y", "b"]);
    let meta: Vec<&String> = stored.metadata.keys().collect();
    assert_eq!(meta, ["zeta", "alpha", "mid"]);
    let again = b
        .register_with("f", Arc::new(config.clone()), opts())
        .await
        .unwrap();
    assert_eq!(
        again.revision, first.revision,
        "the same text again is a no-op"
    );
    // The same values with every object's keys reversed: still a no-op, the first order kept.
    fn reversed(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.iter()
                    .rev()
                    .map(|(k, v)| (k.clone(), reversed(v)))
                    .collect(),
            ),
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.iter().map(reversed).collect())
            }
            other => other.clone(),
        }
    }
    let turned = reversed(&serde_json::Value::Object(metadata.clone()));
    let turned = RegisterOptions::default().metadata(turned.as_object().unwrap().clone());
    let again = b
        .register_with("f", Arc::new(reversed(&config)), turned)
        .await
        .unwrap();
    assert_eq!(
        again.revision, first.revision,
        "another key order is a no-op"
    );
    let kept = b.peek("f").await.unwrap().unwrap();
    assert_eq!(
        keys(&kept.config),
        ["z", "neg", "tiny", "small", "third", "a", "m"]
    );
    let meta: Vec<&String> = kept.metadata.keys().collect();
    assert_eq!(meta, ["zeta", "alpha", "mid"]);
}

/// `register_reporting` and `deactivate_reporting` say exactly what each write did, with the
/// revision it committed at — also when writers race: of 20 concurrent creates of one id,
/// exactly one reports `Created`, and every reported revision is distinct.
pub async fn writes_report_what_they_did(h: &dyn Harness) {
    let b = fresh(h, "reports").await;
    let opts = RegisterOptions::default;
    let created = b
        .register_reporting("a", Arc::new(cfg(1)), opts())
        .await
        .unwrap();
    assert_eq!(created.effect, WriteEffect::Created);
    let same = b
        .register_reporting("a", Arc::new(cfg(1)), opts())
        .await
        .unwrap();
    assert_eq!(same.effect, WriteEffect::Unchanged);
    assert_eq!(same.registration.revision, created.registration.revision);
    let updated = b
        .register_reporting("a", Arc::new(cfg(2)), opts())
        .await
        .unwrap();
    assert_eq!(updated.effect, WriteEffect::Updated);
    assert!(updated.registration.revision > created.registration.revision);
    assert_eq!(
        b.current_revision().await.unwrap(),
        updated.registration.revision
    );

    let off = b.deactivate_reporting("a").await.unwrap();
    assert_eq!(off.effect, WriteEffect::Updated);
    let rev = off.revision.expect("a deactivation takes a revision");
    assert!(rev > updated.registration.revision);
    assert_eq!(b.peek("a").await.unwrap().unwrap().revision, rev);
    assert_eq!(
        b.deactivate_reporting("a").await.unwrap(),
        Deactivation::UNCHANGED
    );
    assert_eq!(
        b.deactivate_reporting("missing").await.unwrap(),
        Deactivation::ABSENT
    );
    assert!(!b.deactivate("missing").await.unwrap());
    assert!(b.deactivate("a").await.unwrap());

    // Re-registering after an unregister creates the id again.
    assert!(b.unregister("a").await.unwrap());
    let again = b
        .register_reporting("a", Arc::new(cfg(2)), opts())
        .await
        .unwrap();
    assert_eq!(again.effect, WriteEffect::Created);

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                b.register_reporting("raced", Arc::new(cfg(i)), RegisterOptions::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    let mut revisions = std::collections::BTreeSet::new();
    for t in tasks {
        let w = t.await.unwrap();
        match w.effect {
            WriteEffect::Created => created += 1,
            WriteEffect::Updated => {}
            other => panic!("a register of a new config reported {other:?}"),
        }
        assert!(
            revisions.insert(w.registration.revision),
            "revision {} reported twice",
            w.registration.revision
        );
    }
    assert_eq!(
        created, 1,
        "exactly one of 20 racing creates created the id"
    );
}

/// `unregister_if` deletes only at the expected revision; otherwise (another revision, or
/// absent) it is a conflict that deletes nothing, and the deletion is one change in the feed.
pub async fn conditional_unregister(h: &dyn Harness) {
    let b = fresh(h, "cond_unregister").await;
    let r1 = b.register("bot", cfg(1)).await.unwrap();
    let r2 = b.register("bot", cfg(2)).await.unwrap();
    match b.unregister_if("bot", r1.revision).await.unwrap_err() {
        RegistryError::Conflict {
            bot_id,
            expected,
            actual,
        } => {
            assert_eq!(bot_id, "bot");
            assert_eq!(expected, WriteCondition::Revision(r1.revision));
            assert_eq!(actual, Some(r2.revision));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(b.peek("bot").await.unwrap().unwrap().revision, r2.revision);
    assert_eq!(b.current_revision().await.unwrap(), r2.revision);
    b.unregister_if("bot", r2.revision).await.unwrap();
    assert!(b.peek("bot").await.unwrap().is_none());
    let ChangeFeed::Changes { changes, .. } = b.changes_since(r2.revision).await.unwrap() else {
        panic!("a recent cursor is never expired")
    };
    assert!(
        matches!(&changes[..], [Change::Deleted { bot_id, .. }] if bot_id == "bot"),
        "{changes:?}"
    );
    match b.unregister_if("bot", r2.revision).await.unwrap_err() {
        RegistryError::Conflict { actual, .. } => assert_eq!(actual, None),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(matches!(
        b.unregister_if("nul\0byte", 1).await,
        Err(RegistryError::InvalidId { .. })
    ));
}

/// Cursors, revisions and page sizes at the ends of their types never wrap around at a storage
/// boundary: a cursor beyond any revision is expired, a condition on an impossible revision is a
/// conflict, and huge limits and offsets mean "everything" and "nothing".
pub async fn extreme_cursors_and_limits(h: &dyn Harness) {
    let b = fresh(h, "extremes").await;
    b.register("a", cfg(1)).await.unwrap();
    b.register("b", cfg(2)).await.unwrap();
    let current = b.current_revision().await.unwrap();
    for cursor in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64] {
        match b.changes_since(cursor).await.unwrap() {
            ChangeFeed::Expired {
                cursor: c,
                current_revision,
                ..
            } => assert_eq!((c, current_revision), (cursor, current)),
            other => panic!("cursor {cursor}: expected Expired, got {other:?}"),
        }
    }
    for expected in [u64::MAX, i64::MAX as u64 + 1] {
        let err = b
            .register_with(
                "a",
                Arc::new(cfg(9)),
                RegisterOptions::default().if_revision(expected),
            )
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "if_revision({expected}): {err}");
        assert!(
            b.unregister_if("a", expected)
                .await
                .unwrap_err()
                .is_conflict()
        );
    }
    assert_eq!(*b.peek_config("a").await.unwrap().unwrap(), cfg(1));
    let all = |q: ListQuery| {
        let b = b.clone();
        async move {
            b.list(&q)
                .await
                .unwrap()
                .iter()
                .map(|r| r.bot_id.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all(ListQuery::default().limit(usize::MAX)).await,
        ["a", "b"]
    );
    assert!(
        all(ListQuery::default().offset(usize::MAX))
            .await
            .is_empty()
    );
    assert_eq!(
        all(ListQuery::default().offset(1).limit(usize::MAX)).await,
        ["b"]
    );
    assert!(all(ListQuery::default().limit(0)).await.is_empty());
    assert_eq!(
        b.current_revision().await.unwrap(),
        current,
        "nothing was written"
    );
}
