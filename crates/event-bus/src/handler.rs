//! `spawn_handler`: the original's callback style on top of a [`Subscription`] — a task that
//! calls a handler for every delivery, logging (and surviving) handler errors and panics.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::subscription::{Delivery, Subscription};

/// Spawns a task that awaits `handler(delivery)` for every item of `subscription`, in order.
/// A handler error is logged ("error in event handler for subscription ...") and a panic is
/// caught and logged; delivery goes on. The task ends when the subscription ends (bus closed)
/// or when the returned handle is aborted (which drops the subscription and unsubscribes).
pub fn spawn_handler<F, Fut, E>(mut subscription: Subscription, mut handler: F) -> JoinHandle<()>
where
    F: FnMut(Delivery) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        while let Some(delivery) = subscription.next().await {
            match AssertUnwindSafe(handler(delivery)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(
                    subscription = subscription.id(),
                    target = subscription.target(),
                    %error,
                    "error in event handler for subscription"
                ),
                Err(_) => tracing::error!(
                    subscription = subscription.id(),
                    target = subscription.target(),
                    "event handler panicked; delivery continues"
                ),
            }
        }
    })
}
