//! The bridge between knowledge storage (`dynreg-knowledge-store`) and the event bus
//! (`dynreg-event-bus`); the storage crate itself knows no bus.
//!
//! * [`also_publish_to`] publishes every later state write of a backend
//!   on a bus: an `Event` of type `custom` on the topic [`StateWrite::topic`]
//!   (`ingest:metadata:write` / `ingest:snapshot:write`) with [`StateWrite::payload`]. It is a
//!   `StateWriteObserver`, so the publish is awaited inside the write, before the backend's
//!   local callbacks run; a failed publish is logged and never fails the write.
//! * [`subscribe_to_changes`] watches one kind of key of a backend through a bus,
//!   and [`ChangesSubscription`] is the guard that ends the watch (the
//!   Rust form of the original's `changes_subscription` context manager).
//!
//! Whoever observes the storage — a filesystem watcher, an S3 event notification bridge, an
//! application republishing writes — publishes an event on the bus with the **key as the
//! topic**. The subscription takes the bus pattern of [`KeyLayout::key_pattern`] and then
//! hands the handler only the events whose topic [`KeyLayout::parse_key`] puts in the watched
//! kind, domain and tenant scope (a glob `*` crosses `/`, so the pattern alone would also
//! match, say, a content file named `_metadata.json`), plus every
//! [`Delivery::Resync`]: events may have been missed, so rescan.
//!
//! Bus topics are at most 255 bytes with no whitespace or glob characters, so a key that is
//! not a valid topic (a path with a space) cannot be published or watched this way.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use dynreg_event_bus::{Delivery, Event, EventBus, EventBusError, EventType, spawn_handler};
use dynreg_knowledge_store::{
    KeyLayout, KnowledgeBackend, KnowledgeBackendExt, KnowledgeError, KnowledgeKeyKind,
    StateEvents, StateWrite, StateWriteObserver, TenantContext,
};
use tokio::task::JoinHandle;

/// What can go wrong starting a knowledge key watch ([`subscribe_to_changes`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnowledgeWatchError {
    /// The backend refused the watch (several kinds at once, an unknown kind, a hostile
    /// domain id or tenant context).
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
    /// Subscribing to the key pattern on the event bus failed.
    #[error("subscribe_to_changes: cannot subscribe to pattern {pattern:?}: {source}")]
    Subscribe {
        /// The key pattern.
        pattern: String,
        /// The bus error.
        #[source]
        source: EventBusError,
    },
}

/// The state-write observer [`also_publish_to`] adds: publishes each write on one bus.
#[derive(Debug)]
struct BusPublisher {
    bus: Arc<dyn EventBus>,
}

#[async_trait]
impl StateWriteObserver for BusPublisher {
    async fn on_state_write(&self, write: &StateWrite) {
        let event = Event::new(EventType::Custom, write.topic(), write.payload());
        if let Err(e) = self.bus.publish(write.topic(), &event).await {
            tracing::warn!(topic = write.topic(), domain_id = %write.domain_id, error = %e, "state-write event not published");
        }
    }
}

/// Publishes every later state write reported to `events` (a backend's
/// `KnowledgeBackend::state_events`) to `bus` too (the original's `also_publish_to`): an
/// `Event` of type `custom` on [`StateWrite::topic`] with [`StateWrite::payload`], awaited
/// inside the write, after the observers added before and before the local callbacks. A
/// failed publish is logged (`warn`) and never fails the write.
pub fn also_publish_to(events: &StateEvents, bus: Arc<dyn EventBus>) {
    events.add_observer(Arc::new(BusPublisher { bus }));
}

/// A live watch started by [`subscribe_to_changes`]. Dropping it ends the watch (the bus
/// subscription goes away once the handler task is torn down);
/// [`ChangesSubscription::cancel`] ends it and waits until the bus subscription is gone.
#[derive(Debug)]
pub struct ChangesSubscription {
    pattern: String,
    kind: KnowledgeKeyKind,
    task: Option<JoinHandle<()>>,
}

impl ChangesSubscription {
    /// The bus pattern subscribed to (the backend's `key_pattern` of the kind).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The watched kind.
    pub fn kind(&self) -> KnowledgeKeyKind {
        self.kind
    }

    /// Ends the watch; when this returns, the bus subscription is gone and the handler will
    /// not be called again.
    pub async fn cancel(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ChangesSubscription {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The one kind a subscription watches: `[]` means content; several different kinds are
/// refused, naming the call to make once per kind.
fn one_kind(kinds: &[KnowledgeKeyKind]) -> Result<KnowledgeKeyKind, KnowledgeError> {
    let Some(first) = kinds.first().copied() else {
        return Ok(KnowledgeKeyKind::Content);
    };
    if kinds.iter().all(|k| *k == first) {
        return Ok(first);
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    Err(KnowledgeError::InvalidKeyKind {
        operation: "subscribe_to_changes",
        kinds: names.join(", "),
        reason: format!(
            "a subscription watches one kind of key; call subscribe_to_changes(.., &[KnowledgeKeyKind::{first:?}], ..) once per kind"
        ),
    })
}

/// Whether a published key belongs to the watch.
fn watched(
    layout: &KeyLayout,
    kind: KnowledgeKeyKind,
    domain_id: Option<&str>,
    ctx: &TenantContext,
    key: &str,
) -> bool {
    let Some(k) = layout.parse_key(key) else {
        return false;
    };
    if k.kind != kind || domain_id.is_some_and(|d| d != k.domain_id) {
        return false;
    }
    kind == KnowledgeKeyKind::Content
        || ctx.state_prefix(k.domain_id).ok().as_deref() == Some(k.state_prefix)
}

/// Watches one kind of key of `backend` (`kinds` empty means content; more than one kind is
/// an `InvalidKeyKind` error — subscribe once per kind) of `domain_id` (`None`: every domain)
/// in `ctx`'s tenant scope (content is shared by every scope), calling `handler` for every
/// matching event and every resync, in order, on a spawned task. Handler errors are logged
/// and panics caught (see [`dynreg_event_bus::spawn_handler`]); delivery goes on.
///
/// A refusal of the backend is [`KnowledgeWatchError::Knowledge`]; a failed bus subscription
/// is [`KnowledgeWatchError::Subscribe`].
pub async fn subscribe_to_changes<B, F, Fut, E>(
    backend: &B,
    bus: &dyn EventBus,
    kinds: &[KnowledgeKeyKind],
    domain_id: Option<&str>,
    ctx: &TenantContext,
    mut handler: F,
) -> Result<ChangesSubscription, KnowledgeWatchError>
where
    B: KnowledgeBackend + ?Sized,
    F: FnMut(Delivery) -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let kind = one_kind(kinds)?;
    let pattern = backend.key_pattern(kind, domain_id, ctx)?;
    let subscription =
        bus.subscribe_pattern(&pattern)
            .await
            .map_err(|source| KnowledgeWatchError::Subscribe {
                pattern: pattern.clone(),
                source,
            })?;
    let layout = backend.key_layout().clone();
    let domain = domain_id.map(str::to_owned);
    let ctx = ctx.clone();
    let task = spawn_handler(subscription, move |delivery: Delivery| {
        let pass = match &delivery {
            Delivery::Event { topic, .. } => watched(&layout, kind, domain.as_deref(), &ctx, topic),
            Delivery::Resync { .. } => true,
        };
        let call = pass.then(|| handler(delivery));
        async move {
            match call {
                Some(fut) => fut.await,
                None => Ok(()),
            }
        }
    });
    Ok(ChangesSubscription {
        pattern,
        kind,
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_default_to_content_and_several_are_refused() {
        assert_eq!(one_kind(&[]).unwrap(), KnowledgeKeyKind::Content);
        assert_eq!(
            one_kind(&[KnowledgeKeyKind::Metadata, KnowledgeKeyKind::Metadata]).unwrap(),
            KnowledgeKeyKind::Metadata
        );
        let err = one_kind(&[KnowledgeKeyKind::Content, KnowledgeKeyKind::Metadata]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("once per kind") && msg.contains("content, metadata"),
            "{msg}"
        );
    }

    #[test]
    fn only_keys_of_the_kind_domain_and_scope_are_watched() {
        let l = KeyLayout::object("kb/");
        let single = TenantContext::SingleTenant;
        let acme = TenantContext::bound("acme");
        let m = KnowledgeKeyKind::Metadata;
        assert!(watched(&l, m, None, &single, "kb/d/_metadata.json"));
        assert!(!watched(
            &l,
            m,
            None,
            &single,
            "kb/d/content/_metadata.json"
        ));
        assert!(!watched(
            &l,
            m,
            None,
            &single,
            "kb/_scoped/tenants/acme/_state/d/_metadata.json"
        ));
        assert!(watched(
            &l,
            m,
            Some("d"),
            &acme,
            "kb/_scoped/tenants/acme/_state/d/_metadata.json"
        ));
        assert!(!watched(
            &l,
            m,
            Some("e"),
            &acme,
            "kb/_scoped/tenants/acme/_state/d/_metadata.json"
        ));
        assert!(!watched(
            &l,
            m,
            None,
            &acme,
            "kb/_scoped/tenants/beta/_state/d/_metadata.json"
        ));
        let c = KnowledgeKeyKind::Content;
        assert!(watched(&l, c, None, &acme, "kb/d/content/a.md"));
        assert!(!watched(&l, c, None, &single, "other/d/content/a.md"));
    }
}
