//! A worker's assignments: the desired set from the control plane's feed turned into
//! apps loaded on this runtime and one route table for the whole pool.
//!
//! - An assignment at a new revision is loaded beside the one serving (fetched by
//!   digest, compiled or taken from the cache, providers opened), and swapped in only
//!   when ready: requests never see a gap, and a revision that fails to load leaves the
//!   previous one serving.
//! - Apps the feed no longer lists are dropped; apps of the pool held elsewhere are
//!   forwarded to the workers ready to serve them.
//! - Every feed is kept in the data directory, so a restarted worker serves its last
//!   assignments even while the control plane is away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use stratus_proto::binding::Binding;
use stratus_proto::pb;

use super::fetch::Components;
use crate::capabilities::{Capabilities, Providers};
use crate::queues::EmbeddedQueues;
use crate::runtime::{App, Runtime};
use crate::trigger::queue::QueueConsumer;
use crate::trigger::routes::{Backend, Entry, Routes};
use std::sync::atomic::Ordering;
use stratus_proto::triggers::{QueueSource, QueueTrigger};

/// A failed revision is tried again on a later feed after this long.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

/// Where a status report goes (the control plane, when it is reachable).
pub type Reporter = Arc<dyn Fn(pb::StatusReport) + Send + Sync>;

/// The provider namespace prefix of a deployed app (`TENANT.APP`): tenants cannot
/// contain `.`, so two tenants' apps never share a namespace, and the result is a valid
/// app name for the runtime.
pub fn namespace(tenant: &str, app: &str) -> String {
    stratus_proto::names::app_namespace(tenant, app)
}

fn owner(tenant: &str, app: &str) -> String {
    format!("{tenant}/{app}")
}

struct Loaded {
    revision: i64,
    app: Arc<App>,
    routes: Vec<String>,
    /// The queue triggers as the feed gave them, and their running consumers.
    queues: Vec<pb::QueueAssignment>,
    consumers: Vec<QueueConsumer>,
}

#[derive(Default)]
struct State {
    /// The last feed applied.
    feed: pb::AssignmentFeed,
    loaded: HashMap<String, Loaded>,
    /// Loads in flight, by owner: their revision.
    loading: HashMap<String, i64>,
    /// Revisions that failed to load, with why and when.
    failed: HashMap<String, (i64, String, Instant)>,
}

pub struct Assignments {
    runtime: Runtime,
    routes: Arc<Routes>,
    providers: Arc<Providers>,
    components: Components,
    reporter: Reporter,
    queues: EmbeddedQueues,
    /// Where embedded providers keep their files.
    providers_dir: PathBuf,
    /// The last feed, kept across restarts.
    state_file: PathBuf,
    /// This worker's own HTTP address, never a forwarding target.
    own_address: String,
    worker_id: String,
    state: Mutex<State>,
}

/// Where a worker's assignments run and whom they are reported to.
pub struct Setup {
    pub runtime: Runtime,
    pub routes: Arc<Routes>,
    pub providers: Arc<Providers>,
    pub components: Components,
    pub reporter: Reporter,
    /// The embedded queues `embedded` queue triggers read.
    pub queues: EmbeddedQueues,
}

impl Assignments {
    pub fn new(setup: Setup, config: &super::AgentConfig) -> Arc<Self> {
        Arc::new(Self {
            runtime: setup.runtime,
            routes: setup.routes,
            providers: setup.providers,
            components: setup.components,
            reporter: setup.reporter,
            queues: setup.queues,
            providers_dir: config.providers_dir.clone(),
            state_file: config.state_dir.join("assignments.pb"),
            own_address: config.http_address.clone(),
            worker_id: config.worker_id.clone(),
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, a: &pb::Assignment, state: pb::AssignmentState, message: String) {
        (self.reporter)(pb::StatusReport {
            worker_id: self.worker_id.clone(),
            tenant: a.tenant.clone(),
            app: a.app.clone(),
            revision: a.revision,
            state: state as i32,
            message,
        });
    }

    /// The generation of the last feed applied (0: none).
    pub fn generation(&self) -> u64 {
        self.state().feed.generation
    }

    /// Apps loaded and serving.
    pub fn ready_count(&self) -> usize {
        self.state().loaded.len()
    }

    /// How many assignments the last feed listed.
    pub fn assigned_count(&self) -> usize {
        self.state().feed.assignments.len()
    }

    /// Applies the feed kept by the previous run, if any, before the control plane is
    /// reachable: its routes are installed at once (an app still loading answers 503)
    /// and the returned future loads its apps concurrently, from the local copies of
    /// their components, so one app whose provider is slow to fail delays only itself.
    pub fn restore(self: &Arc<Self>) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
        let feed = match std::fs::read(&self.state_file) {
            Ok(bytes) => pb::AssignmentFeed::decode(bytes.as_slice())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => pb::AssignmentFeed::default(),
            Err(e) => return Err(e.into()),
        };
        if !feed.assignments.is_empty() {
            tracing::info!(
                generation = feed.generation,
                assignments = feed.assignments.len(),
                "restoring the last assignments"
            );
        }
        let loads = self.apply_inner(feed, false);
        Ok(async move {
            futures::future::join_all(loads).await;
        })
    }

    /// Makes the worker run what `feed` says; returns once every new load finished (a
    /// failed one leaves its previous revision serving).
    pub async fn apply(self: &Arc<Self>, feed: pb::AssignmentFeed) {
        let loads = self.apply_inner(feed, true);
        futures::future::join_all(loads).await;
    }

    /// Applies a feed without waiting for its loads (a stream keeps reading the next
    /// feed meanwhile).
    pub fn apply_in_background(self: &Arc<Self>, feed: pb::AssignmentFeed) {
        for load in self.apply_inner(feed, true) {
            tokio::spawn(load);
        }
    }

    fn apply_inner(
        self: &Arc<Self>,
        feed: pb::AssignmentFeed,
        persist: bool,
    ) -> Vec<impl Future<Output = ()> + Send + 'static> {
        if persist && let Err(e) = self.persist(&feed) {
            tracing::warn!(error = %e, "keeping the assignments on disk");
        }
        let mut loads = Vec::new();
        {
            let mut state = self.state();
            let wanted: std::collections::HashSet<String> = feed
                .assignments
                .iter()
                .map(|a| owner(&a.tenant, &a.app))
                .collect();
            state.loaded.retain(|o, _| wanted.contains(o));
            state.failed.retain(|o, _| wanted.contains(o));
            for a in &feed.assignments {
                let o = owner(&a.tenant, &a.app);
                if let Some(loaded) = state.loaded.get_mut(&o)
                    && loaded.revision == a.revision
                {
                    // Routes change only with a new revision; a queue's share also
                    // moves when workers come and go.
                    if loaded.queues != a.queues {
                        loaded.consumers = self.start_consumers(a, &loaded.app);
                        loaded.queues = a.queues.clone();
                    }
                    continue;
                }
                if state.loading.get(&o) == Some(&a.revision) {
                    continue;
                }
                if let Some((rev, _, at)) = state.failed.get(&o)
                    && *rev == a.revision
                    && at.elapsed() < RETRY_FAILED_AFTER
                {
                    continue;
                }
                state.loading.insert(o, a.revision);
                let this = self.clone();
                let a = a.clone();
                loads.push(async move { this.load(a).await });
            }
            state.feed = feed;
        }
        self.rebuild_routes();
        loads
    }

    /// Tries again the assignments whose load failed long enough ago (a provider or the
    /// registry may be back), without waiting for the control plane to send a new feed.
    pub fn retry_failed(self: &Arc<Self>) {
        let feed = {
            let state = self.state();
            let due = state
                .failed
                .values()
                .any(|(_, _, at)| at.elapsed() >= RETRY_FAILED_AFTER);
            if !due {
                return;
            }
            state.feed.clone()
        };
        for load in self.apply_inner(feed, false) {
            tokio::spawn(load);
        }
    }

    /// Sends the state of every assignment again: after a reconnect the control plane
    /// may have lost what was reported while it was away.
    pub fn report_all(&self) {
        let (ready, failed): (Vec<pb::Assignment>, Vec<(pb::Assignment, String)>) = {
            let state = self.state();
            let mut ready = Vec::new();
            let mut failed = Vec::new();
            for a in &state.feed.assignments {
                let o = owner(&a.tenant, &a.app);
                if state
                    .loaded
                    .get(&o)
                    .is_some_and(|l| l.revision == a.revision)
                {
                    ready.push(a.clone());
                } else if let Some((rev, why, _)) = state.failed.get(&o)
                    && *rev == a.revision
                {
                    failed.push((a.clone(), why.clone()));
                }
            }
            (ready, failed)
        };
        for a in ready {
            self.report(&a, pb::AssignmentState::Ready, String::new());
        }
        for (a, why) in failed {
            self.report(&a, pb::AssignmentState::Failed, why);
        }
    }

    async fn load(self: Arc<Self>, a: pb::Assignment) {
        let o = owner(&a.tenant, &a.app);
        let started = Instant::now();
        let result = self.try_load(&a).await;
        let mut state = self.state();
        if state.loading.get(&o) == Some(&a.revision) {
            state.loading.remove(&o);
        }
        // Installed only if it is still what the feed wants: a newer revision, or a
        // removal, may have arrived while it loaded.
        let current = state
            .feed
            .assignments
            .iter()
            .find(|x| x.tenant == a.tenant && x.app == a.app)
            .map(|x| x.revision);
        if current != Some(a.revision) {
            return;
        }
        match result {
            Ok(app) => {
                state.failed.remove(&o);
                let app = Arc::new(app);
                // The previous revision's consumers stop as these start; messages they
                // still handle finish and are acknowledged.
                let consumers = self.start_consumers(&a, &app);
                state.loaded.insert(
                    o.clone(),
                    Loaded {
                        revision: a.revision,
                        app,
                        routes: a.routes.clone(),
                        queues: a.queues.clone(),
                        consumers,
                    },
                );
                drop(state);
                self.rebuild_routes();
                tracing::info!(
                    app = %o,
                    version = a.version,
                    revision = a.revision,
                    ms = started.elapsed().as_millis() as u64,
                    "serving"
                );
                self.report(&a, pb::AssignmentState::Ready, String::new());
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(app = %o, revision = a.revision, error = %why, "loading failed");
                state
                    .failed
                    .insert(o, (a.revision, why.clone(), Instant::now()));
                drop(state);
                self.report(&a, pb::AssignmentState::Failed, why);
            }
        }
    }

    /// Starts the consumers of an assignment's queue triggers (a share of 0 runs none).
    fn start_consumers(&self, a: &pb::Assignment, app: &Arc<App>) -> Vec<QueueConsumer> {
        let mut consumers = Vec::new();
        for q in &a.queues {
            if q.concurrency == 0 {
                continue;
            }
            match q.spec.parse::<QueueTrigger>() {
                Ok(mut trigger) => {
                    // A worker's embedded queues are shared by its tenants: each
                    // tenant's names are its own.
                    if let QueueSource::Embedded { queue } = &mut trigger.source {
                        *queue = format!("{}.{queue}", a.tenant);
                        if let Some(dead) = &mut trigger.dead_letter {
                            *dead = format!("{}.{dead}", a.tenant);
                        }
                    }
                    let name = format!("{}.{}", namespace(&a.tenant, &a.app), trigger.name);
                    consumers.push(QueueConsumer::start(
                        app.clone(),
                        trigger,
                        q.concurrency,
                        name,
                        self.queues.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(app = %owner(&a.tenant, &a.app), spec = %q.spec, error = %e, "skipping a queue trigger this worker cannot read");
                }
            }
        }
        consumers
    }

    /// The state of every queue trigger consumed here, for the heartbeat.
    pub fn trigger_states(&self) -> Vec<pb::TriggerState> {
        let state = self.state();
        let mut out = Vec::new();
        for a in &state.feed.assignments {
            let Some(loaded) = state.loaded.get(&owner(&a.tenant, &a.app)) else {
                continue;
            };
            for c in &loaded.consumers {
                let s = &c.status;
                out.push(pb::TriggerState {
                    tenant: a.tenant.clone(),
                    app: a.app.clone(),
                    trigger: c.trigger.name.clone(),
                    failing: s.failing().unwrap_or_default(),
                    in_flight: s.in_flight.load(Ordering::Relaxed),
                    handled: s.handled.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                    backlog: s.backlog.load(Ordering::Relaxed),
                });
            }
        }
        out
    }

    /// A loaded app, for a timer run dispatched to this worker.
    pub fn app(&self, tenant: &str, app: &str) -> Option<Arc<App>> {
        self.state()
            .loaded
            .get(&owner(tenant, app))
            .map(|l| l.app.clone())
    }

    async fn try_load(&self, a: &pb::Assignment) -> anyhow::Result<App> {
        use anyhow::Context;
        self.report(a, pb::AssignmentState::Fetching, String::new());
        let bytes = self
            .components
            .get(&a.digest)
            .await
            .with_context(|| format!("fetching component {}", a.digest))?;
        self.report(a, pb::AssignmentState::Compiling, String::new());
        let bindings = a
            .bindings
            .iter()
            .map(|b| b.parse::<Binding>())
            .collect::<Result<Vec<_>, _>>()
            .context("reading the bindings")?;
        let name = namespace(&a.tenant, &a.app);
        let caps =
            Capabilities::open_shared(&bindings, &name, &self.providers_dir, &self.providers)
                .await
                .context("opening the bound providers")?;
        let runtime = self.runtime.clone();
        // Compiling is CPU work; keep it off the threads serving requests.
        let app = tokio::task::spawn_blocking(move || runtime.load(&name, &bytes, caps))
            .await
            .context("loading the component")??;
        Ok(app)
    }

    /// One table for the pool: apps loaded here answer locally, the rest go to the
    /// workers ready to serve them, or get 503 until one is.
    fn rebuild_routes(&self) {
        // Built and installed under the state lock, so two loads finishing together can
        // never install their snapshots in the wrong order.
        let state = self.state();
        let mut entries: Vec<Entry> = Vec::with_capacity(state.feed.routes.len());
        let mut seen = std::collections::HashSet::new();
        for r in &state.feed.routes {
            let o = owner(&r.tenant, &r.app);
            let (backend, prefixes) = match state.loaded.get(&o) {
                Some(l) => (Backend::Local(l.app.clone()), l.routes.clone()),
                None => {
                    let peers: Vec<String> = r
                        .ready_peers
                        .iter()
                        .filter(|p| **p != self.own_address)
                        .cloned()
                        .collect();
                    let backend = if peers.is_empty() {
                        Backend::Unavailable
                    } else {
                        Backend::Peers(peers.into())
                    };
                    (backend, r.routes.clone())
                }
            };
            seen.insert(o);
            entries.push(Entry { prefixes, backend });
        }
        // Loaded apps the pool table does not list yet still answer locally.
        for (o, l) in &state.loaded {
            if !seen.contains(o) {
                entries.push(Entry {
                    prefixes: l.routes.clone(),
                    backend: Backend::Local(l.app.clone()),
                });
            }
        }
        self.routes.replace(entries);
    }

    fn persist(&self, feed: &pb::AssignmentFeed) -> std::io::Result<()> {
        // Bindings may hold credentials: owner-only, written whole.
        let tmp = self.state_file.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        std::io::Write::write_all(&mut file, &feed.encode_to_vec())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.state_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_of_tenants_and_apps_never_alias() {
        let names = [
            namespace("acme", "shop"),
            namespace("acme", "shop.v2"),
            namespace("acme-eu", "shop"),
            namespace("globex", "shop"),
        ];
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        for n in &names {
            // The runtime accepts it as an app name, so it cannot hold a `/`.
            assert!(stratus_proto::names::check_namespace(n).is_ok(), "{n}");
        }
        // `a` + `b.c` and `a.b` + `c` would alias; tenants cannot contain `.`.
        assert!(stratus_proto::names::check_tenant("a.b").is_err());
    }
}
