//! `InstanceFactory`: how a cache builds and tears down the instance of one bot (the Rust shape
//! of the original's `_create_instance` / `_destroy_instance`).

use std::sync::Arc;

use async_trait::async_trait;
use dynreg_registry_core::Registration;
use serde_json::Value;

use crate::error::SharedError;

/// Builds instances of `T` from bot configs and releases them.
///
/// `create` runs outside every cache lock, so slow builds of different ids run in parallel and
/// never delay hits. `destroy` is called exactly once for every instance that was built, when
/// it leaves the cache (eviction, invalidation, expiry, replacement, `close`) or when it was
/// built from a config that changed during the build. Callers may still hold clones of the
/// `Arc<T>`; `destroy` should release external resources, memory is freed with the last clone.
#[async_trait]
pub trait InstanceFactory<T>: Send + Sync + 'static
where
    T: Send + Sync + 'static,
{
    /// The factory's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Builds the instance of `bot_id` from its (active) config.
    async fn create(&self, bot_id: &str, config: Arc<Value>) -> Result<T, Self::Error>;

    /// Builds the instance from the whole registration (revision, hash, metadata available).
    /// The default calls [`InstanceFactory::create`].
    async fn create_from(&self, registration: &Registration) -> Result<T, Self::Error> {
        self.create(&registration.bot_id, Arc::clone(&registration.config))
            .await
    }

    /// Releases an instance that left the cache. The default does nothing.
    async fn destroy(&self, instance: Arc<T>) {
        drop(instance);
    }
}

/// The object-safe form the manager stores.
#[async_trait]
pub(crate) trait DynFactory<T>: Send + Sync {
    async fn create(&self, registration: &Registration) -> Result<T, SharedError>;
    async fn destroy(&self, instance: Arc<T>);
}

pub(crate) struct Erased<F>(pub(crate) F);

#[async_trait]
impl<T, F> DynFactory<T> for Erased<F>
where
    T: Send + Sync + 'static,
    F: InstanceFactory<T>,
{
    async fn create(&self, registration: &Registration) -> Result<T, SharedError> {
        self.0
            .create_from(registration)
            .await
            .map_err(|e| Arc::new(e) as SharedError)
    }

    async fn destroy(&self, instance: Arc<T>) {
        self.0.destroy(instance).await;
    }
}
