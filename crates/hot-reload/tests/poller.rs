//! RegistryPoller: cursor polling, relist on expiry, interval validation, no lost changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynreg_hot_reload::{HotReloadError, PollBatch, RegistryPoller};
use dynreg_registry_core::{Change, InMemoryBackend, RegistryBackend, RegistryBackendExt};
use serde_json::json;

fn backend() -> Arc<InMemoryBackend> {
    Arc::new(InMemoryBackend::new())
}

#[test]
fn zero_negative_and_nan_intervals_are_rejected() {
    let b = backend() as Arc<dyn RegistryBackend>;
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = RegistryPoller::from_secs_f64(b.clone(), bad).unwrap_err();
        assert!(
            matches!(e, HotReloadError::InvalidPollInterval { .. }),
            "{e}"
        );
    }
    assert!(RegistryPoller::new(b.clone(), Duration::ZERO).is_err());
    assert!(RegistryPoller::from_secs_f64(b, 0.1).is_ok());
}

#[tokio::test]
async fn reports_created_updated_deactivated_and_deleted() {
    let b = backend();
    let p = RegistryPoller::new(b.clone(), Duration::from_secs(1)).unwrap();
    assert!(p.poll_once().await.unwrap().changes.is_empty()); // initialises the cursor
    b.register("a", json!({"v": 1})).await.unwrap();
    b.register("b", json!({})).await.unwrap();
    let batch = p.poll_once().await.unwrap();
    assert_eq!(batch.changes.len(), 2);
    assert!(p.poll_once().await.unwrap().changes.is_empty());
    b.register("a", json!({"v": 2})).await.unwrap();
    b.deactivate("b").await.unwrap();
    let batch = p.poll_once().await.unwrap();
    match &batch.changes[..] {
        [Change::Upsert(a), Change::Upsert(bb)] => {
            assert_eq!(a.config["v"], 2);
            assert!(!bb.is_active());
        }
        other => panic!("unexpected {other:?}"),
    }
    b.unregister("a").await.unwrap();
    let batch = p.poll_once().await.unwrap();
    assert!(matches!(&batch.changes[..], [Change::Deleted { bot_id, .. }] if bot_id == "a"));
}

#[tokio::test]
async fn an_expired_cursor_relists_everything() {
    let b = Arc::new(InMemoryBackend::with_tombstone_retention(1));
    b.register("keep", json!({})).await.unwrap();
    let p = RegistryPoller::new(b.clone(), Duration::from_secs(1)).unwrap();
    p.set_cursor(b.current_revision().await.unwrap()).await;
    for i in 0..3 {
        b.register(&format!("gone{i}"), json!({})).await.unwrap();
        b.unregister(&format!("gone{i}")).await.unwrap();
    }
    let batch = p.poll_once().await.unwrap();
    assert!(batch.relisted, "{batch:?}");
    assert_eq!(batch.changes.len(), 1);
    assert_eq!(p.stats().relists, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_lost_while_writers_run_during_polls() {
    let b = backend();
    let p = RegistryPoller::new(b.clone(), Duration::from_millis(1)).unwrap();
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    p.add_change_callback(move |batch: &PollBatch| {
        s.lock()
            .unwrap()
            .extend(batch.changes.iter().map(Change::revision));
    });
    p.poll_once().await.unwrap();
    p.start();
    let writer = {
        let b = b.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                b.register(&format!("id{i}"), json!({"i": i}))
                    .await
                    .unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    writer.await.unwrap();
    let last = b.current_revision().await.unwrap();
    for _ in 0..2000 {
        if seen.lock().unwrap().last() == Some(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.stop();
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got.len(),
        300,
        "every registration reported exactly once by revision"
    );
}

#[tokio::test]
async fn callbacks_can_be_removed() {
    let b = backend();
    let p = RegistryPoller::new(b.clone(), Duration::from_secs(1)).unwrap();
    let n = Arc::new(Mutex::new(0));
    let n2 = n.clone();
    let id = p.add_change_callback(move |_| *n2.lock().unwrap() += 1);
    p.poll_once().await.unwrap();
    b.register("a", json!({})).await.unwrap();
    p.poll_once().await.unwrap();
    assert!(p.remove_change_callback(id));
    assert!(!p.remove_change_callback(id));
    b.register("b", json!({})).await.unwrap();
    p.poll_once().await.unwrap();
    assert_eq!(*n.lock().unwrap(), 1);
}

/// The poller counts its polls and reports how far behind the registry each poll found it.
#[test]
fn polls_and_lag_are_measured() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = backend();
            let p = RegistryPoller::new(b.clone(), Duration::from_secs(1)).unwrap();
            p.poll_once().await.unwrap();
            for i in 0..3 {
                b.register(&format!("b{i}"), serde_json::json!({}))
                    .await
                    .unwrap();
            }
            p.poll_once().await.unwrap();
        });
    });
    let mut polls = 0;
    let mut lag = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        match (key.key().name(), value) {
            ("dynreg_poller_polls_total", DebugValue::Counter(n)) => polls += n,
            ("dynreg_poller_lag_revisions", DebugValue::Gauge(g)) => lag = Some(g.into_inner()),
            _ => {}
        }
    }
    assert_eq!((polls, lag), (2, Some(3.0)));
}
