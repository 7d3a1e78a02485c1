//! The one reconnect supervisor of the server buses (features `postgres` and `redis`): the task
//! that keeps one server connection alive — the Postgres LISTEN connection, the Redis pub/sub
//! connection, and each bus's publishing connection.
//!
//! A transport plugs in as a [`Link`]: how to connect, how to restore its server-side state on a
//! new connection (re-`LISTEN`, re-`SUBSCRIBE`), how to read and handle what the server sends, how
//! to apply a subscription change, how to probe liveness and how to close. [`supervise`] does the
//! rest, the same way for every connection:
//!
//! * **Lifecycle.** It starts from an already opened connection (a bus's constructor reports an
//!   unreachable server itself): restore → serve until the connection breaks (the link's message
//!   stream ends, handling a message or applying a change fails, a probe fails or times out) →
//!   close → wait one back-off delay → connect → restore → serve … A failed connect or restore
//!   closes what was opened and waits the next, longer delay.
//! * **Back-off.** [`Backoff`]: delays grow from the configured base to the cap, jittered and
//!   never above the cap; reset once a connection is up and restored.
//! * **Resync.** After a *re*connect (never for the first connection), when the supervisor has a
//!   router, every subscription receives [`ResyncReason::Reconnected`] — after the link restored
//!   its server-side state, so every event published after the marker is delivered.
//! * **Commands.** Subscription changes ([`Command::Interest`]) are applied in order, on the
//!   server while connected and to the link's record while disconnected (its `restore` replays
//!   the record); [`Command::Sync`] is acknowledged once every earlier command has been applied.
//! * **Shutdown.** The shutdown watch turning `true` (or its sender, or the command channel's
//!   last sender, going away) ends the task promptly while serving or waiting, and is checked
//!   before every connect; the current connection is closed first.
//!
//! The real differences between the supervised connections are parameters ([`Settings`]):
//! * `resync` — listeners only: a dropped listening connection silently misses events, so its
//!   subscribers must re-read. A dropped publishing connection misses nothing silently (a
//!   publish while it is down fails with `Disconnected`), so it signals nothing.
//! * `commands` — listeners only: publishers hold no server-side subscription state.
//! * `probe` — listeners probe every `probe_interval` with a timeout of `probe_interval.max(1 s)`;
//!   the Redis publisher PINGs every `probe_interval` with its response timeout
//!   (`connect_timeout`); the Postgres publisher has no probe: its connection's driver task ends
//!   when the connection does, which its link reports as the end of its message stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Interval, MissedTickBehavior};

use crate::backoff::Backoff;
use crate::router::{Interest, Router};
use crate::subscription::ResyncReason;

/// What a bus asks of its listener's supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    /// The subscriber table's server-side interest changed.
    Interest(Interest),
    /// Acknowledge once every earlier command has been applied.
    Sync(oneshot::Sender<()>),
}

/// One kind of server connection, as the supervisor drives it. Every method is called from the
/// supervisor's task only, one at a time.
pub(crate) trait Link: Send + 'static {
    /// A live connection.
    type Conn: Send;
    /// One thing the server sent on a connection.
    type Message: Send;
    /// A transport error (logged; never returned to a caller).
    type Error: std::fmt::Display + Send;

    /// Names the connection in log lines, e.g. `postgres event bus: LISTEN`.
    const NAME: &'static str;

    /// Opens a new connection.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;

    /// Re-establishes the link's recorded server-side state on a new connection (also called
    /// for the first connection, when the record is still empty).
    fn restore(
        &mut self,
        _conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Called once a connection is up and restored (a publisher puts it in its slot).
    fn up(&mut self, _conn: &Self::Conn) {}

    /// The next message; `None` once the connection has ended. Must be cancel-safe: the
    /// supervisor drops this future whenever a command, a probe or shutdown comes first.
    fn recv(&mut self, conn: &mut Self::Conn)
    -> impl Future<Output = Option<Self::Message>> + Send;

    /// Handles one message. An error means the connection broke.
    fn handle(
        &mut self,
        conn: &mut Self::Conn,
        message: Self::Message,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Applies a subscription change: on `conn` when connected, and always to the link's record
    /// (which [`Link::restore`] replays). An error means the connection broke. Only called when
    /// the supervisor has a command channel.
    fn apply(
        &mut self,
        _conn: Option<&mut Self::Conn>,
        _interest: Interest,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Whether the connection answers (the supervisor bounds this with [`Probe::timeout`]). Only
    /// called when the supervisor probes.
    fn probe(&mut self, _conn: &mut Self::Conn) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// Closes a connection (after it broke, or at shutdown).
    fn close(&mut self, conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// How many server-side subscriptions (channels, patterns) the link holds, for logs.
    fn interest_count(&self) -> usize {
        0
    }
}

/// A liveness probe: every `every`, [`Link::probe`] must answer `true` within `timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// Probe cadence.
    pub(crate) every: Duration,
    /// How long one probe may take.
    pub(crate) timeout: Duration,
}

impl Probe {
    /// A listening connection's probe: every `interval`, answering within `interval` but at
    /// least 1 s (a short interval must not fail a healthy but briefly busy server).
    pub(crate) fn listener(interval: Duration) -> Self {
        Probe {
            every: interval,
            timeout: interval.max(Duration::from_secs(1)),
        }
    }
}

/// How one connection is supervised (see the module documentation for why these differ).
pub(crate) struct Settings {
    /// Reconnect delays.
    pub(crate) backoff: Backoff,
    /// Liveness probe, if the link is probed.
    pub(crate) probe: Option<Probe>,
    /// Every subscription of this router gets [`ResyncReason::Reconnected`] after a reconnect.
    pub(crate) resync: Option<Arc<Router>>,
    /// Subscription changes to apply, in order.
    pub(crate) commands: Option<mpsc::UnboundedReceiver<Command>>,
    /// Becomes `true` when the bus closes.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Settings {
    /// A listener's settings: probed every `probe_interval`, a resync to every subscription of
    /// `router` after a reconnect, and the subscription changes of `commands`.
    pub(crate) fn listener(
        connection: &crate::config::ConnectionOptions,
        router: &Arc<Router>,
        commands: mpsc::UnboundedReceiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Settings {
            backoff: connection.backoff(),
            probe: Some(Probe::listener(connection.probe_interval)),
            resync: Some(Arc::clone(router)),
            commands: Some(commands),
            shutdown,
        }
    }
}

enum Outcome {
    Shutdown,
    Lost,
}

struct Supervisor<L: Link> {
    link: L,
    backoff: Backoff,
    probe: Option<Probe>,
    resync: Option<Arc<Router>>,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    shutdown: watch::Receiver<bool>,
    /// The shutdown sender or the command channel went away: stop as on shutdown.
    orphaned: bool,
}

/// Keeps `link` connected until shutdown, starting with the already opened connection `first`.
pub(crate) async fn supervise<L: Link>(link: L, first: L::Conn, settings: Settings) {
    let Settings {
        backoff,
        probe,
        resync,
        commands,
        shutdown,
    } = settings;
    Supervisor {
        link,
        backoff,
        probe,
        resync,
        commands,
        shutdown,
        orphaned: false,
    }
    .run(first)
    .await;
}

/// The next command, or never when there is no command channel. Cancel-safe.
async fn next_command(commands: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

/// The next probe tick, or never without a probe. Cancel-safe.
async fn next_tick(probe: &mut Option<Interval>) {
    match probe {
        Some(probe) => {
            probe.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl<L: Link> Supervisor<L> {
    fn stopping(&self) -> bool {
        self.orphaned || *self.shutdown.borrow()
    }

    /// Whether a `shutdown.changed()` result means "stop".
    fn shutdown_changed(&mut self, changed: Result<(), watch::error::RecvError>) -> bool {
        if changed.is_err() {
            self.orphaned = true;
        }
        self.stopping()
    }

    async fn run(mut self, first: L::Conn) {
        let mut connection = Some(first);
        let mut reconnecting = false;
        while !self.stopping() {
            let mut conn = match connection.take() {
                Some(conn) => conn,
                None => match self.link.connect().await {
                    Ok(conn) => conn,
                    Err(error) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(%error, ?delay, "{} reconnect failed", L::NAME);
                        self.sleep_offline(delay).await;
                        continue;
                    }
                },
            };
            if let Err(error) = self.link.restore(&mut conn).await {
                let delay = self.backoff.next_delay();
                tracing::warn!(%error, ?delay, "{}: restoring subscriptions failed", L::NAME);
                self.link.close(conn).await;
                self.sleep_offline(delay).await;
                continue;
            }
            self.backoff.reset();
            self.link.up(&conn);
            if reconnecting {
                tracing::warn!(
                    subscriptions = self.link.interest_count(),
                    "{}: re-established dropped connection",
                    L::NAME
                );
                metrics::counter!("dynreg_bus_reconnects_total", "link" => L::NAME).increment(1);
                if let Some(router) = &self.resync {
                    router.resync_all(ResyncReason::Reconnected);
                }
            }
            let outcome = self.serve(&mut conn).await;
            self.link.close(conn).await;
            match outcome {
                Outcome::Shutdown => break,
                Outcome::Lost => {
                    reconnecting = true;
                    let delay = self.backoff.next_delay();
                    tracing::warn!(?delay, "{} connection lost; reconnecting", L::NAME);
                    self.sleep_offline(delay).await;
                }
            }
        }
    }

    /// Serves a live connection until it breaks or the bus shuts down.
    async fn serve(&mut self, conn: &mut L::Conn) -> Outcome {
        let mut probe = match self.probe {
            Some(p) => {
                let mut interval = tokio::time::interval(p.every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                // The first tick is immediate; the first probe is one interval from now.
                interval.tick().await;
                Some(interval)
            }
            None => None,
        };
        loop {
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if self.shutdown_changed(changed) {
                        return Outcome::Shutdown;
                    }
                }
                message = self.link.recv(conn) => match message {
                    Some(message) => {
                        if self.link.handle(conn, message).await.is_err() {
                            return Outcome::Lost;
                        }
                    }
                    None => return Outcome::Lost,
                },
                command = next_command(&mut self.commands) => match command {
                    Some(Command::Sync(ack)) => {
                        let _ = ack.send(());
                    }
                    Some(Command::Interest(interest)) => {
                        if self.link.apply(Some(conn), interest).await.is_err() {
                            return Outcome::Lost;
                        }
                    }
                    None => {
                        self.orphaned = true;
                        return Outcome::Shutdown;
                    }
                },
                _ = next_tick(&mut probe) => {
                    let timeout = self.probe.map_or(Duration::MAX, |p| p.timeout);
                    let alive = tokio::time::timeout(timeout, self.link.probe(conn)).await;
                    if !matches!(alive, Ok(true)) {
                        return Outcome::Lost;
                    }
                }
            }
        }
    }

    /// Waits `delay` without a connection, applying commands meanwhile (to the link's record
    /// only; `restore` replays it on the next connection).
    async fn sleep_offline(&mut self, delay: Duration) {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                changed = self.shutdown.changed() => {
                    if self.shutdown_changed(changed) {
                        return;
                    }
                }
                command = next_command(&mut self.commands) => match command {
                    Some(Command::Sync(ack)) => {
                        let _ = ack.send(());
                    }
                    Some(Command::Interest(interest)) => {
                        // Without a connection nothing can fail.
                        let _ = self.link.apply(None, interest).await;
                    }
                    None => {
                        self.orphaned = true;
                        return;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::subscription::{Delivery, Subscription};

    /// A fake transport: each connection is a channel the test can cut (by dropping its
    /// sender); connects can be made to fail; the record is a set of topics.
    #[derive(Default)]
    struct Shared {
        senders: Mutex<Vec<mpsc::UnboundedSender<u32>>>,
        connects: AtomicUsize,
        failing: AtomicBool,
        dead: AtomicBool,
        restores: Mutex<Vec<BTreeSet<String>>>,
        handled: Mutex<Vec<u32>>,
    }

    struct Fake {
        shared: Arc<Shared>,
        record: BTreeSet<String>,
    }

    fn open(shared: &Shared) -> mpsc::UnboundedReceiver<u32> {
        let (tx, rx) = mpsc::unbounded_channel();
        shared.senders.lock().unwrap().push(tx);
        rx
    }

    impl Link for Fake {
        type Conn = mpsc::UnboundedReceiver<u32>;
        type Message = u32;
        type Error = &'static str;
        const NAME: &'static str = "test link";

        async fn connect(&mut self) -> Result<Self::Conn, &'static str> {
            self.shared.connects.fetch_add(1, Ordering::SeqCst);
            if self.shared.failing.load(Ordering::SeqCst) {
                return Err("refused");
            }
            Ok(open(&self.shared))
        }
        async fn restore(&mut self, _: &mut Self::Conn) -> Result<(), &'static str> {
            self.shared
                .restores
                .lock()
                .unwrap()
                .push(self.record.clone());
            Ok(())
        }
        async fn recv(&mut self, conn: &mut Self::Conn) -> Option<u32> {
            conn.recv().await
        }
        async fn handle(&mut self, _: &mut Self::Conn, message: u32) -> Result<(), &'static str> {
            self.shared.handled.lock().unwrap().push(message);
            Ok(())
        }
        async fn apply(
            &mut self,
            _: Option<&mut Self::Conn>,
            interest: Interest,
        ) -> Result<(), &'static str> {
            match interest {
                Interest::TopicAdded(topic) => self.record.insert(topic),
                Interest::TopicRemoved(topic) => self.record.remove(&topic),
                _ => false,
            };
            Ok(())
        }
        async fn probe(&mut self, _: &mut Self::Conn) -> bool {
            !self.shared.dead.load(Ordering::SeqCst)
        }
        async fn close(&mut self, conn: Self::Conn) {
            drop(conn);
        }
    }

    fn cut(shared: &Shared) {
        shared.senders.lock().unwrap().clear();
    }

    async fn sync(commands: &mpsc::UnboundedSender<Command>) {
        let (ack, done) = oneshot::channel();
        commands.send(Command::Sync(ack)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("sync acknowledged")
            .unwrap();
    }

    async fn next(sub: &mut Subscription) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a delivery")
            .expect("subscription open")
    }

    fn reconnected() -> Delivery {
        Delivery::Resync {
            reason: ResyncReason::Reconnected,
        }
    }

    #[tokio::test]
    async fn reconnects_with_backoff_restores_the_record_then_resyncs_and_shuts_down() {
        let shared = Arc::new(Shared::default());
        let router = Router::new(8, None);
        let mut sub = router.subscribe("a:b").unwrap();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let first = open(&shared);
        let task = tokio::spawn(supervise(
            Fake {
                shared: Arc::clone(&shared),
                record: BTreeSet::new(),
            },
            first,
            Settings {
                backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
                probe: Some(Probe::listener(Duration::from_millis(50))),
                resync: Some(Arc::clone(&router)),
                commands: Some(command_rx),
                shutdown: shutdown_rx,
            },
        ));
        commands
            .send(Command::Interest(Interest::TopicAdded("x".into())))
            .unwrap();
        sync(&commands).await;
        shared.senders.lock().unwrap()[0].send(7).unwrap();
        sync(&commands).await;
        // The first connection is restored (empty record) but never signals a resync.
        assert_eq!(shared.restores.lock().unwrap().len(), 1);
        assert!(sub.try_next().is_none());

        // Cut it while connects fail: changes are still applied (and acknowledged) offline.
        shared.failing.store(true, Ordering::SeqCst);
        cut(&shared);
        commands
            .send(Command::Interest(Interest::TopicAdded("y".into())))
            .unwrap();
        sync(&commands).await;
        while shared.connects.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(sub.try_next().is_none(), "no resync before a reconnect");
        shared.failing.store(false, Ordering::SeqCst);
        assert_eq!(next(&mut sub).await, reconnected());
        let restores = shared.restores.lock().unwrap().clone();
        assert_eq!(
            restores.last().unwrap(),
            &BTreeSet::from(["x".to_owned(), "y".to_owned()])
        );
        assert_eq!(*shared.handled.lock().unwrap(), vec![7]);

        // A failed probe is a lost connection too.
        let attempts = shared.connects.load(Ordering::SeqCst);
        shared.dead.store(true, Ordering::SeqCst);
        while shared.connects.load(Ordering::SeqCst) == attempts {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.dead.store(false, Ordering::SeqCst);
        assert_eq!(next(&mut sub).await, reconnected());

        // Shutdown while waiting out a back-off ends the task promptly.
        shared.failing.store(true, Ordering::SeqCst);
        cut(&shared);
        let attempts = shared.connects.load(Ordering::SeqCst);
        while shared.connects.load(Ordering::SeqCst) < attempts + 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("supervisor stopped on shutdown")
            .unwrap();
    }
}
