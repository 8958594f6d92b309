//! The placement decision, a pure function of the cluster: which workers of its pool
//! each live app should run on.
//!
//! - An app wants `replicas` workers of its pool (or all of them), at most as many as
//!   are up.
//! - New placements go to the up workers with room, preferring labels (zones) the app
//!   does not use yet, then the least loaded, then the lowest id (stable).
//! - Extra placements go, not-ready first, then from the most loaded worker.
//! - Placements on draining workers stay until the app is ready on as many up workers
//!   as it wants (make before break), or forever if no worker is up to take them.
//! - Placements on workers outside the app's pool (it moved, or the worker did) go.

use std::collections::{HashMap, HashSet};

use crate::metadata::{Cluster, PlacementChanges, WorkerSlot, WorkerState};

pub fn plan(cluster: &Cluster) -> PlacementChanges {
    let workers: HashMap<&str, &WorkerSlot> =
        cluster.workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut up_by_pool: HashMap<&str, Vec<&WorkerSlot>> = HashMap::new();
    for w in &cluster.workers {
        if w.state == WorkerState::Up {
            up_by_pool.entry(w.pool.as_str()).or_default().push(w);
        }
    }
    let mut load: HashMap<&str, u32> = HashMap::new();
    let mut by_app: HashMap<&str, Vec<(&str, bool)>> = HashMap::new();
    for p in &cluster.placements {
        *load.entry(p.worker.as_str()).or_default() += 1;
        by_app
            .entry(p.app.as_str())
            .or_default()
            .push((p.worker.as_str(), p.ready));
    }
    let mut changes = PlacementChanges::default();
    let mut live = HashSet::new();
    for app in &cluster.apps {
        live.insert(app.id.as_str());
        let current = by_app
            .get(app.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let pool_up = up_by_pool
            .get(app.pool.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut on_up: Vec<(&str, bool)> = Vec::new();
        let mut draining: Vec<&str> = Vec::new();
        for &(worker, ready) in current {
            match workers.get(worker) {
                Some(w) if w.pool == app.pool && w.state == WorkerState::Up => {
                    on_up.push((worker, ready));
                }
                Some(w) if w.pool == app.pool && w.state == WorkerState::Draining => {
                    draining.push(worker);
                }
                _ => {
                    changes.remove.push((app.id.clone(), worker.to_string()));
                    if let Some(n) = load.get_mut(worker) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
        let want = app.replicas.wanted(pool_up.len());
        if on_up.len() > want {
            // Keep the ready ones on the least loaded workers.
            on_up.sort_by_key(|(w, ready)| (!*ready, load.get(w).copied().unwrap_or(0), *w));
            for (worker, _) in on_up.split_off(want) {
                changes.remove.push((app.id.clone(), worker.to_string()));
                if let Some(n) = load.get_mut(worker) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        if on_up.len() < want {
            let mut candidates: Vec<&WorkerSlot> = pool_up
                .iter()
                .copied()
                .filter(|w| {
                    !on_up.iter().any(|(id, _)| *id == w.id)
                        && load.get(w.id.as_str()).copied().unwrap_or(0) < w.capacity
                })
                .collect();
            while on_up.len() < want {
                let used: Vec<&WorkerSlot> = on_up
                    .iter()
                    .filter_map(|(id, _)| workers.get(id).copied())
                    .collect();
                let best = candidates
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| {
                        (
                            shared_labels(w, &used),
                            load.get(w.id.as_str()).copied().unwrap_or(0),
                            w.id.as_str(),
                        )
                    })
                    .map(|(i, _)| i);
                let Some(i) = best else { break };
                let chosen = candidates.swap_remove(i);
                *load.entry(chosen.id.as_str()).or_default() += 1;
                changes.add.push((app.id.clone(), chosen.id.clone()));
                on_up.push((chosen.id.as_str(), false));
            }
        }
        let ready_up = on_up.iter().filter(|(_, ready)| *ready).count();
        if want > 0 && ready_up >= want {
            for worker in draining {
                changes.remove.push((app.id.clone(), worker.to_string()));
            }
        }
    }
    // Placements of apps that are no longer live.
    for p in &cluster.placements {
        if !live.contains(p.app.as_str()) {
            changes.remove.push((p.app.clone(), p.worker.clone()));
        }
    }
    changes
}

/// How many label values `w` shares with the workers already running the app.
fn shared_labels(w: &WorkerSlot, used: &[&WorkerSlot]) -> usize {
    used.iter()
        .map(|u| {
            w.labels
                .iter()
                .filter(|(k, v)| u.labels.get(*k) == Some(v))
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::{AppSlot, Placement, Replicas};

    fn worker(id: &str, zone: &str, state: WorkerState) -> WorkerSlot {
        WorkerSlot {
            id: id.into(),
            pool: "default".into(),
            labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            capacity: 100,
            state,
        }
    }

    fn app(id: &str, replicas: Replicas) -> AppSlot {
        AppSlot {
            id: id.into(),
            pool: "default".into(),
            replicas,
        }
    }

    fn placed(app: &str, worker: &str, ready: bool) -> Placement {
        Placement {
            app: app.into(),
            worker: worker.into(),
            ready,
        }
    }

    fn apply(cluster: &mut Cluster, changes: &PlacementChanges) {
        cluster
            .placements
            .retain(|p| !changes.remove.contains(&(p.app.clone(), p.worker.clone())));
        for (a, w) in &changes.add {
            cluster.placements.push(placed(a, w, true));
        }
    }

    #[test]
    fn replicas_spread_across_zones_then_load() {
        let mut cluster = Cluster {
            workers: vec![
                worker("w1", "a", WorkerState::Up),
                worker("w2", "a", WorkerState::Up),
                worker("w3", "b", WorkerState::Up),
            ],
            apps: vec![app("x", Replicas::Count(2)), app("y", Replicas::Count(2))],
            placements: vec![],
        };
        let changes = plan(&cluster);
        let on = |a: &str| -> Vec<String> {
            changes
                .add
                .iter()
                .filter(|(app, _)| app == a)
                .map(|(_, w)| w.clone())
                .collect()
        };
        assert_eq!(on("x"), ["w1", "w3"], "one per zone");
        assert_eq!(
            on("y"),
            ["w2", "w3"],
            "zone b is taken once each; then load"
        );
        apply(&mut cluster, &changes);
        assert_eq!(plan(&cluster), PlacementChanges::default(), "a fixed point");
    }

    #[test]
    fn all_means_every_up_worker_and_counts_cap_at_the_pool() {
        let cluster = Cluster {
            workers: vec![
                worker("w1", "a", WorkerState::Up),
                worker("w2", "b", WorkerState::Up),
            ],
            apps: vec![app("x", Replicas::All), app("y", Replicas::Count(5))],
            placements: vec![],
        };
        let changes = plan(&cluster);
        assert_eq!(changes.add.len(), 4);
    }

    #[test]
    fn draining_keeps_its_apps_until_replacements_are_ready() {
        let mut cluster = Cluster {
            workers: vec![
                worker("w1", "a", WorkerState::Draining),
                worker("w2", "a", WorkerState::Up),
            ],
            apps: vec![app("x", Replicas::Count(1))],
            placements: vec![placed("x", "w1", true)],
        };
        let changes = plan(&cluster);
        assert_eq!(changes.add, [("x".to_string(), "w2".to_string())]);
        assert!(
            changes.remove.is_empty(),
            "the replacement is not ready yet"
        );
        cluster.placements.push(placed("x", "w2", false));
        assert!(plan(&cluster).remove.is_empty());
        cluster.placements.retain(|p| p.worker != "w2");
        cluster.placements.push(placed("x", "w2", true));
        assert_eq!(plan(&cluster).remove, [("x".to_string(), "w1".to_string())]);
    }

    #[test]
    fn extras_and_foreign_placements_go_and_capacity_holds() {
        let mut full = worker("w2", "b", WorkerState::Up);
        full.capacity = 0;
        let mut other_pool = worker("w3", "a", WorkerState::Up);
        other_pool.pool = "gpu".into();
        let cluster = Cluster {
            workers: vec![worker("w1", "a", WorkerState::Up), full, other_pool],
            apps: vec![app("x", Replicas::Count(1)), app("y", Replicas::Count(1))],
            placements: vec![
                placed("x", "w1", false),
                placed("x", "w3", true),
                placed("gone", "w1", true),
            ],
        };
        let changes = plan(&cluster);
        assert_eq!(changes.add, [("y".to_string(), "w1".to_string())]);
        assert!(
            changes
                .remove
                .contains(&("x".to_string(), "w3".to_string()))
        );
        assert!(
            changes
                .remove
                .contains(&("gone".to_string(), "w1".to_string()))
        );
    }
}
