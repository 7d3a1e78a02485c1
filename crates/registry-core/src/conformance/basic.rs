//! Conformance cases for single-registration operations.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Harness, cfg, fresh};
use crate::{
    MAX_BOT_ID_BYTES, RegisterOptions, Registration, RegistryBackendExt, RegistryError, Status,
};

/// A new registration is active, has all timestamps equal, a revision and the config's hash.
pub async fn register_new(h: &dyn Harness) {
    let b = fresh(h, "register_new").await;
    let reg = b.register("bot-1", cfg(1)).await.unwrap();
    assert_eq!(reg.bot_id, "bot-1");
    assert_eq!(*reg.config, cfg(1));
    assert_eq!(reg.status, Status::Active);
    assert!(reg.metadata.is_empty());
    assert_eq!(reg.created_at, reg.updated_at);
    assert!(reg.revision > 0);
    assert_eq!(reg.config_hash, crate::config_hash(&cfg(1)));
    let got = b.peek("bot-1").await.unwrap().expect("stored");
    assert_eq!(got, reg, "peek returns exactly what register returned");
}

/// Re-registering replaces the config, keeps `created_at` and advances `updated_at`.
pub async fn register_update_keeps_created_at(h: &dyn Harness) {
    let b = fresh(h, "register_update").await;
    let first = b.register("bot", cfg(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = b.register("bot", cfg(2)).await.unwrap();
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at > first.updated_at);
    assert_eq!(*b.peek_config("bot").await.unwrap().unwrap(), cfg(2));
}

/// The status is stored as given.
pub async fn register_with_status(h: &dyn Harness) {
    let b = fresh(h, "register_status").await;
    for status in ["inactive", "error", "active"] {
        let id = format!("bot-{status}");
        let reg = b
            .register_with(
                &id,
                Arc::new(cfg(1)),
                RegisterOptions::default().status(status),
            )
            .await
            .unwrap();
        assert_eq!(reg.status.as_str(), status);
        assert_eq!(b.peek(&id).await.unwrap().unwrap().status.as_str(), status);
    }
}

/// `get` of a present and a missing id.
pub async fn get_existing_and_missing(h: &dyn Harness) {
    let b = fresh(h, "get_existing").await;
    b.register("bot", cfg(1)).await.unwrap();
    let got = b.get("bot").await.unwrap().expect("present");
    assert_eq!(got.bot_id, "bot");
    assert_eq!(*got.config, cfg(1));
    assert!(b.get("nope").await.unwrap().is_none());
    assert!(b.get_config("nope").await.unwrap().is_none());
    assert!(b.peek_config("nope").await.unwrap().is_none());
}

/// `get` advances `last_accessed_at` (persistently); `peek` and `peek_config` never do.
pub async fn get_touches_and_peek_does_not(h: &dyn Harness) {
    let b = fresh(h, "touch").await;
    let reg = b.register("bot", cfg(1)).await.unwrap();
    tokio::time::sleep(h.capabilities().touch_resolution + std::time::Duration::from_millis(20))
        .await;
    b.peek("bot").await.unwrap();
    b.peek_config("bot").await.unwrap();
    assert_eq!(
        b.peek("bot").await.unwrap().unwrap().last_accessed_at,
        reg.last_accessed_at,
        "peek must not touch"
    );
    let got = b.get("bot").await.unwrap().unwrap();
    assert!(got.last_accessed_at > reg.last_accessed_at);
    let after = b.peek("bot").await.unwrap().unwrap();
    assert!(
        after.last_accessed_at > reg.last_accessed_at,
        "the touch is stored"
    );
    assert_eq!(after.updated_at, reg.updated_at, "a touch is not an update");
    assert_eq!(after.revision, reg.revision, "a touch takes no revision");
    assert_eq!(b.current_revision().await.unwrap(), reg.revision);
}

/// `get_config`/`peek_config` serve only active registrations; `get`/`peek` show any status.
pub async fn configs_are_served_only_when_active(h: &dyn Harness) {
    let b = fresh(h, "served_active").await;
    b.register("bot", cfg(1)).await.unwrap();
    assert_eq!(*b.get_config("bot").await.unwrap().unwrap(), cfg(1));
    assert!(b.deactivate("bot").await.unwrap());
    assert!(b.get_config("bot").await.unwrap().is_none());
    assert!(b.peek_config("bot").await.unwrap().is_none());
    assert_eq!(
        b.get("bot").await.unwrap().unwrap().status,
        Status::Inactive
    );
    b.register_with(
        "err",
        Arc::new(cfg(2)),
        RegisterOptions::default().status("error"),
    )
    .await
    .unwrap();
    assert!(b.peek_config("err").await.unwrap().is_none());
}

/// Only present and active registrations "exist".
pub async fn exists_means_present_and_active(h: &dyn Harness) {
    let b = fresh(h, "exists").await;
    b.register("active", cfg(1)).await.unwrap();
    b.register("inactive", cfg(1)).await.unwrap();
    b.deactivate("inactive").await.unwrap();
    assert!(b.exists("active").await.unwrap());
    assert!(!b.exists("inactive").await.unwrap());
    assert!(!b.exists("missing").await.unwrap());
}

/// `unregister` removes the row and reports whether it existed; a later register is fresh.
pub async fn unregister_is_a_hard_delete(h: &dyn Harness) {
    let b = fresh(h, "unregister").await;
    let first = b.register("bot", cfg(1)).await.unwrap();
    assert!(b.unregister("bot").await.unwrap());
    assert!(b.peek("bot").await.unwrap().is_none());
    assert!(!b.unregister("bot").await.unwrap());
    assert!(!b.unregister("never").await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = b.register("bot", cfg(1)).await.unwrap();
    assert!(
        again.created_at > first.created_at,
        "re-created ids get a fresh created_at"
    );
}

/// `deactivate` sets inactive, keeps config and metadata, is idempotent, false when missing.
pub async fn deactivate_is_a_soft_delete(h: &dyn Harness) {
    let b = fresh(h, "deactivate").await;
    let meta: Map<String, Value> = json!({"team": "a"}).as_object().unwrap().clone();
    let reg = b
        .register_with(
            "bot",
            Arc::new(cfg(1)),
            RegisterOptions::default().metadata(meta.clone()),
        )
        .await
        .unwrap();
    assert!(b.deactivate("bot").await.unwrap());
    let d = b.peek("bot").await.unwrap().unwrap();
    assert_eq!(d.status, Status::Inactive);
    assert_eq!(*d.metadata, meta);
    assert_eq!(*d.config, cfg(1));
    assert!(d.updated_at >= reg.updated_at);
    assert!(d.revision > reg.revision);
    assert!(
        b.deactivate("bot").await.unwrap(),
        "deactivating twice still reports true"
    );
    assert_eq!(
        b.peek("bot").await.unwrap().unwrap().revision,
        d.revision,
        "and changes nothing"
    );
    assert!(!b.deactivate("missing").await.unwrap());
}

/// `clear` removes every registration of every status and reports how many.
pub async fn clear_removes_everything(h: &dyn Harness) {
    let b = fresh(h, "clear").await;
    for i in 0..5 {
        b.register(&format!("bot-{i}"), cfg(i)).await.unwrap();
    }
    b.deactivate("bot-0").await.unwrap();
    assert_eq!(b.clear().await.unwrap(), 5);
    assert_eq!(b.count_all().await.unwrap(), 0);
    assert!(b.list_all().await.unwrap().is_empty());
    assert_eq!(b.clear().await.unwrap(), 0);
}

/// Metadata is stored, not aliased, and replaced wholesale by a re-register.
pub async fn metadata_is_stored_copied_and_replaced(h: &dyn Harness) {
    let b = fresh(h, "metadata").await;
    let mut meta: Map<String, Value> = json!({"team": "a", "tier": 1}).as_object().unwrap().clone();
    b.register_with(
        "bot",
        Arc::new(cfg(1)),
        RegisterOptions::default().metadata(meta.clone()),
    )
    .await
    .unwrap();
    meta.insert("team".into(), json!("mutated"));
    let got = b.peek("bot").await.unwrap().unwrap();
    assert_eq!(got.metadata.get("team"), Some(&json!("a")));
    b.register_with(
        "bot",
        Arc::new(cfg(1)),
        RegisterOptions::default().metadata(json!({"other": true}).as_object().unwrap().clone()),
    )
    .await
    .unwrap();
    let got = b.peek("bot").await.unwrap().unwrap();
    assert_eq!(*got.metadata, *json!({"other": true}).as_object().unwrap());
    b.register("bot", cfg(1)).await.unwrap();
    assert!(
        b.peek("bot").await.unwrap().unwrap().metadata.is_empty(),
        "omitted metadata clears"
    );
}

/// Re-registering a deactivated id with status active reactivates it.
pub async fn reactivate_by_registering(h: &dyn Harness) {
    let b = fresh(h, "reactivate").await;
    b.register("bot", cfg(1)).await.unwrap();
    b.deactivate("bot").await.unwrap();
    b.register("bot", cfg(1)).await.unwrap();
    assert!(b.exists("bot").await.unwrap());
    assert_eq!(b.list_ids().await.unwrap(), vec!["bot".to_owned()]);
}

/// Ids with path, URL and shell metacharacters round-trip exactly and never collide.
pub async fn special_character_ids_round_trip(h: &dyn Harness) {
    let b = fresh(h, "special_ids").await;
    let ids = [
        "with-dash",
        "with_underscore",
        "with.dot",
        "with:colon",
        "a/b",
        "..",
        ".",
        "a/../b",
        "../escape",
        "%2F",
        "%252F",
        "with space",
        "q?x=1#f",
        "back\\slash",
        "日本語-bot",
        "UPPER",
        "upper",
        "_meta",
        "~tilde",
        "a.json",
    ];
    for (i, id) in ids.iter().enumerate() {
        b.register(id, cfg(i as i64)).await.unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let got = b
            .peek(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id:?} not found"));
        assert_eq!(got.bot_id, *id);
        assert_eq!(*got.config, cfg(i as i64), "{id:?}");
    }
    let mut listed = b.list_ids().await.unwrap();
    listed.sort();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    assert!(b.unregister("a/b").await.unwrap());
    assert!(b.peek("a/b").await.unwrap().is_none());
    assert!(b.peek("a").await.unwrap().is_none());
    assert_eq!(b.count().await.unwrap(), ids.len() as u64 - 1);
}

/// Empty, NUL-bearing and oversized ids are refused by every operation and store nothing.
pub async fn hostile_ids_are_rejected_and_store_nothing(h: &dyn Harness) {
    let b = fresh(h, "hostile_ids").await;
    let long = "x".repeat(10 * 1024);
    let max = "y".repeat(MAX_BOT_ID_BYTES);
    for bad in ["", "nul\0byte", "new\nline", long.as_str()] {
        let err = b.register(bad, cfg(1)).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::InvalidId { .. }),
            "{bad:?}: {err}"
        );
        assert!(matches!(
            b.get(bad).await,
            Err(RegistryError::InvalidId { .. })
        ));
        assert!(matches!(
            b.peek(bad).await,
            Err(RegistryError::InvalidId { .. })
        ));
        assert!(matches!(
            b.deactivate(bad).await,
            Err(RegistryError::InvalidId { .. })
        ));
        assert!(matches!(
            b.unregister(bad).await,
            Err(RegistryError::InvalidId { .. })
        ));
    }
    assert_eq!(b.count_all().await.unwrap(), 0);
    b.register(&max, cfg(1)).await.unwrap();
    assert_eq!(b.peek(&max).await.unwrap().unwrap().bot_id, max);
}

/// A config that is not a JSON object is refused with an error naming the bot.
pub async fn config_must_be_an_object(h: &dyn Harness) {
    let b = fresh(h, "config_object").await;
    for bad in [json!([1, 2]), json!("s"), json!(null), json!(3)] {
        let err = b.register("bot", bad).await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::InvalidRegistration { bot_id, .. } if bot_id == "bot"),
            "{err}"
        );
    }
    let err = b
        .register_with(
            "bot",
            Arc::new(cfg(1)),
            RegisterOptions::default().status(""),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidRegistration { .. }),
        "{err}"
    );
    assert_eq!(b.count_all().await.unwrap(), 0);
}

/// Timestamps are UTC and the wire JSON of a stored registration parses back to it.
pub async fn timestamps_are_utc_and_wire_round_trips(h: &dyn Harness) {
    let b = fresh(h, "timestamps").await;
    let reg = b
        .register_with(
            "bot",
            Arc::new(json!({"nested": {"list": [1, 2.5, "x", null, true]}, "unicode": "é😀"})),
            RegisterOptions::default().metadata(json!({"k": [1]}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let before = crate::backend::now();
    assert!(reg.created_at <= before);
    let wire = reg.to_json();
    let ts = wire["created_at"].as_str().unwrap();
    assert!(ts.ends_with("+00:00"), "{ts}");
    assert_eq!(Registration::from_json(&wire).unwrap(), reg);
    assert_eq!(b.peek("bot").await.unwrap().unwrap(), reg);
}

/// Values handed out are shared and immutable: changing a copy never changes the store.
pub async fn stored_values_are_immutable(h: &dyn Harness) {
    let b = fresh(h, "immutable").await;
    b.register("bot", cfg(1)).await.unwrap();
    let mut got = b.peek_config("bot").await.unwrap().unwrap();
    Arc::make_mut(&mut got)["n"] = json!(999);
    assert_eq!(*b.peek_config("bot").await.unwrap().unwrap(), cfg(1));
}

/// `close` releases resources but keeps the data; a new instance sees it.
pub async fn close_keeps_data(h: &dyn Harness) {
    let store = super::unique_store("close_keeps");
    let b = h.open(&store).await;
    b.register("bot", cfg(1)).await.unwrap();
    b.close().await.unwrap();
    let again = h.open(&store).await;
    assert_eq!(*again.peek_config("bot").await.unwrap().unwrap(), cfg(1));
}
