//! Conformance cases of versions and change detection: the knowledge-base identity of
//! the original and the diffs against retained versions.

use std::collections::BTreeSet;

use super::{Harness, fresh, new_kb, put};
use crate::identity::kb_identity;
use crate::{IngestionStatus, KnowledgeBackendExt, KnowledgeError, StatusUpdate};

/// Checksums: empty KB is "", the identity is the original's formula over list_files.
pub async fn checksum_is_the_original_identity(h: &dyn Harness) {
    let backend = fresh(h, "checksum_is_the_original_identity").await;
    let b = &*backend;
    let d = new_kb(b, "cksum").await;
    assert_eq!(b.get_checksum(&d).await.unwrap(), "");
    put(b, &d, "b.md", "bee").await;
    put(b, &d, "a.md", "ay").await;
    put(b, &d, "a.md:x", "colon").await;
    let files = b.list_files(&d, None).await.unwrap();
    let expected = kb_identity(files.iter().map(|f| (f.path.as_str(), f.checksum.as_str())));
    assert_eq!(b.get_checksum(&d).await.unwrap(), expected);
    assert_eq!(expected.len(), 32);
    assert!(b.has_changes_since(&d, "").await.unwrap());
}

/// rc1: an unchanged KB reports no changes; a changed one does.
pub async fn unchanged_then_changed(h: &dyn Harness) {
    let backend = fresh(h, "unchanged_then_changed").await;
    let b = &*backend;
    let d = new_kb(b, "rc1").await;
    put(b, &d, "a.md", "a").await;
    let v = b.get_checksum(&d).await.unwrap();
    assert!(!b.has_changes_since(&d, &v).await.unwrap());
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert!(cs.is_empty());
    assert_eq!(cs.version, v);
    put(b, &d, "a.md", "changed").await;
    assert!(b.has_changes_since(&d, &v).await.unwrap());
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.modified, vec!["a.md"]);
    assert_ne!(cs.version, v);
}

/// The empty baseline "" diffs as "everything added", and an emptied KB returns to "".
pub async fn empty_baseline_round_trips(h: &dyn Harness) {
    let backend = fresh(h, "empty_baseline_round_trips").await;
    let b = &*backend;
    let d = new_kb(b, "empty").await;
    let v0 = b.get_checksum(&d).await.unwrap();
    assert_eq!(v0, "");
    assert!(!b.has_changes_since(&d, &v0).await.unwrap());
    put(b, &d, "x.md", "x").await;
    put(b, &d, "y.md", "y").await;
    let cs = b.list_changes_since(&d, "").await.unwrap();
    assert_eq!(cs.added, vec!["x.md", "y.md"]);
    assert!(cs.modified.is_empty() && cs.deleted.is_empty());
    let v1 = cs.version.clone();
    b.delete_file(&d, "x.md").await.unwrap();
    b.delete_file(&d, "y.md").await.unwrap();
    let cs = b.list_changes_since(&d, &v1).await.unwrap();
    assert_eq!(cs.deleted, vec!["x.md", "y.md"]);
    assert_eq!(cs.version, "");
    assert!(!b.has_changes_since(&d, "").await.unwrap());
}

/// A diff is minimal, disjoint and sorted: added, modified, deleted.
pub async fn diff_disjoint_and_correct(h: &dyn Harness) {
    let backend = fresh(h, "diff_disjoint_and_correct").await;
    let b = &*backend;
    let d = new_kb(b, "diff").await;
    for p in ["keep.md", "mod.md", "del2.md", "del1.md"] {
        put(b, &d, p, p).await;
    }
    let v = b.get_checksum(&d).await.unwrap();
    put(b, &d, "mod.md", "modified").await;
    put(b, &d, "keep.md", "keep.md").await; // same bytes: not a change
    b.delete_file(&d, "del2.md").await.unwrap();
    b.delete_file(&d, "del1.md").await.unwrap();
    put(b, &d, "new/b.md", "b").await;
    put(b, &d, "new/a.md", "a").await;
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.added, vec!["new/a.md", "new/b.md"]);
    assert_eq!(cs.modified, vec!["mod.md"]);
    assert_eq!(cs.deleted, vec!["del1.md", "del2.md"]);
    let all: BTreeSet<_> = cs
        .added
        .iter()
        .chain(&cs.modified)
        .chain(&cs.deleted)
        .collect();
    assert_eq!(all.len(), 5, "disjoint");
    assert_eq!(cs.version, b.get_checksum(&d).await.unwrap());
    // The version just handed out is itself retained.
    assert!(
        b.list_changes_since(&d, &cs.version)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An unretained version is InvalidVersion from list_changes_since and "changed" from
/// has_changes_since; a malformed version is refused the same way.
pub async fn unretained_version(h: &dyn Harness) {
    let backend = fresh(h, "unretained_version").await;
    let b = &*backend;
    let d = new_kb(b, "unret").await;
    put(b, &d, "a.md", "a").await;
    let never = "0123456789abcdef0123456789abcdef";
    let err = b.list_changes_since(&d, never).await.unwrap_err();
    assert!(
        matches!(err, KnowledgeError::InvalidVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&d) && err.to_string().contains(never));
    assert!(b.has_changes_since(&d, never).await.unwrap());
    for bad in ["../../etc/passwd", "a/b", ".."] {
        let err = b.list_changes_since(&d, bad).await.unwrap_err();
        assert!(
            matches!(err, KnowledgeError::InvalidVersion { .. }),
            "{bad}"
        );
    }
}

/// No spurious re-ingest: repeated checks of an unchanged KB are quiet, a real change shows.
pub async fn no_spurious_reingest_then_detects(h: &dyn Harness) {
    let backend = fresh(h, "no_spurious_reingest_then_detects").await;
    let b = &*backend;
    let d = new_kb(b, "spur").await;
    put(b, &d, "a.md", "a").await;
    put(b, &d, "b.md", "b").await;
    let v = b.get_checksum(&d).await.unwrap();
    for _ in 0..3 {
        assert!(!b.has_changes_since(&d, &v).await.unwrap());
    }
    b.set_ingestion_status(&d, StatusUpdate::new(IngestionStatus::Ready))
        .await
        .unwrap();
    assert!(
        !b.has_changes_since(&d, &v).await.unwrap(),
        "status is not content"
    );
    put(b, &d, "c.md", "c").await;
    let cs = b.list_changes_since(&d, &v).await.unwrap();
    assert_eq!(cs.added, vec!["c.md"]);
}
