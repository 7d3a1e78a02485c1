//! Conformance cases for concurrent writers: tasks on one instance and two instances on one
//! storage. No update may be lost and no revision handed out twice.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::{Harness, cfg, fresh, unique_store};
use crate::{
    Change, ChangeFeed, RegisterOptions, RegistryBackend, RegistryBackendExt, RegistryError,
};

/// 100 concurrent registers of distinct ids all land with distinct revisions.
pub async fn concurrent_registers_all_land(h: &dyn Harness) {
    let b = fresh(h, "concurrent_registers").await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.register(&format!("bot-{i:03}"), cfg(i)).await.unwrap() })
        })
        .collect();
    let mut revs = HashSet::new();
    for t in tasks {
        assert!(
            revs.insert(t.await.unwrap().revision),
            "a revision was handed out twice"
        );
    }
    assert_eq!(b.count().await.unwrap(), 100);
}

/// Mixed concurrent registers, reads and deactivations leave exactly the expected rows.
pub async fn concurrent_read_write(h: &dyn Harness) {
    let b = fresh(h, "concurrent_rw").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("bot-{i}");
            b.register(&id, cfg(i)).await.unwrap();
            b.get(&id).await.unwrap().unwrap();
            b.list_active().await.unwrap();
            if i % 3 == 0 {
                b.deactivate(&id).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.count_all().await.unwrap(), 60);
    assert_eq!(b.count_inactive().await.unwrap(), 20);
}

async fn increment(b: &dyn RegistryBackend, id: &str) {
    loop {
        let cur = b.peek(id).await.unwrap().expect("seeded");
        let n = cur.config["count"].as_i64().unwrap();
        let opts = RegisterOptions::default()
            .status(cur.status.clone())
            .if_revision(cur.revision);
        match b
            .register_with(id, Arc::new(json!({"count": n + 1})), opts)
            .await
        {
            Ok(_) => return,
            Err(RegistryError::Conflict { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("increment of {id}: {e}"),
        }
    }
}

/// 50 tasks increment counters on the same 5 ids by compare-and-swap while touching reads and
/// deactivations run alongside: every increment survives.
pub async fn no_lost_update_under_contention(h: &dyn Harness) {
    let b = fresh(h, "lost_update").await;
    let ids: Vec<String> = (0..5).map(|i| format!("counter-{i}")).collect();
    for id in &ids {
        b.register(id, json!({"count": 0})).await.unwrap();
    }
    let per_task = 6;
    let tasks: Vec<_> = (0..50)
        .map(|t| {
            let (b, ids) = (b.clone(), ids.clone());
            tokio::spawn(async move {
                for k in 0..per_task {
                    let id = &ids[(t + k) % ids.len()];
                    increment(&*b, id).await;
                    b.get(id).await.unwrap();
                    if (t + k) % 7 == 0 {
                        b.deactivate(id).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = 0;
    for id in &ids {
        total += b.peek(id).await.unwrap().unwrap().config["count"]
            .as_i64()
            .unwrap();
    }
    assert_eq!(total, 50 * per_task as i64, "every increment must survive");
}

/// Touching reads racing registers never bring back an older config.
pub async fn touch_never_reverts_a_register(h: &dyn Harness) {
    let b = fresh(h, "touch_race").await;
    b.register("bot", cfg(0)).await.unwrap();
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                b.get("bot").await.unwrap();
                b.get_config("bot").await.unwrap();
            }
        })
    };
    for i in 1..=50 {
        b.register("bot", cfg(i)).await.unwrap();
        assert_eq!(*b.peek_config("bot").await.unwrap().unwrap(), cfg(i));
    }
    reader.await.unwrap();
    assert_eq!(*b.peek_config("bot").await.unwrap().unwrap(), cfg(50));
}

/// Two instances on one storage write concurrently: nothing is lost, every revision is
/// unique, each sees the other's writes and the change feed reports all of them.
pub async fn two_instances_share_storage_and_revisions(h: &dyn Harness) {
    let store = unique_store("two_instances");
    let (x, y) = (h.open(&store).await, h.open(&store).await);
    let write = |b: Arc<dyn RegistryBackend>, prefix: &'static str| {
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..40 {
                revs.push(
                    b.register(&format!("{prefix}-{i}"), cfg(i))
                        .await
                        .unwrap()
                        .revision,
                );
                if i % 4 == 0 {
                    revs.push(
                        b.register("shared", json!({"by": prefix, "i": i}))
                            .await
                            .unwrap()
                            .revision,
                    );
                }
            }
            revs
        })
    };
    let (rx, ry) = (write(x.clone(), "x"), write(y.clone(), "y"));
    let (rx, ry) = (rx.await.unwrap(), ry.await.unwrap());
    let all: Vec<u64> = rx.iter().chain(&ry).copied().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "a revision was handed out twice: {all:?}"
    );
    assert_eq!(x.count().await.unwrap(), 81);
    assert_eq!(y.count().await.unwrap(), 81);
    let cur = x.current_revision().await.unwrap();
    assert_eq!(cur, y.current_revision().await.unwrap());
    assert!(all.iter().all(|r| *r <= cur));
    let ChangeFeed::Changes { changes, .. } = y.changes_since(0).await.unwrap() else {
        panic!("a fresh store can answer from 0")
    };
    assert_eq!(changes.len(), 81);
    assert!(changes.iter().all(|c| matches!(c, Change::Upsert(_))));
    // Conditional writes across instances: exactly one of two racing CAS writes wins.
    let base = x.peek("shared").await.unwrap().unwrap().revision;
    let a = x.register_with(
        "shared",
        Arc::new(cfg(100)),
        RegisterOptions::default().if_revision(base),
    );
    let b = y.register_with(
        "shared",
        Arc::new(cfg(200)),
        RegisterOptions::default().if_revision(base),
    );
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() ^ b.is_ok(), "exactly one CAS wins: {a:?} / {b:?}");
    let winner = if a.is_ok() { cfg(100) } else { cfg(200) };
    assert_eq!(*y.peek_config("shared").await.unwrap().unwrap(), winner);
}
