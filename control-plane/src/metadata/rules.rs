//! The rules every change to an app must keep, checked inside the change's transaction:
//! bindings well-formed, routes not overlapping another app's, and every import of the
//! live version bound.

use stratus_proto::binding::Binding;
use stratus_proto::interfaces::Handler;
use stratus_proto::triggers::QueueTrigger;

use crate::timers::{TimerError, TimerTrigger};

use super::records::AppChange;
use super::sql::{Tx, Value, first, now, text};
use super::workers::bump_app_pool;
use super::{MetadataError, load_bindings, load_version};

pub(super) async fn apply_change(
    tx: &mut dyn Tx,
    id: &str,
    change: AppChange,
) -> Result<(), MetadataError> {
    if change.changes_serving() {
        // The old pool (workers there must drop it) and the new one both change.
        bump_app_pool(tx, id).await?;
        // Revisions also order an app's incarnations: one deleted and made again under
        // the same name starts above every revision the old one had (they never exceed
        // the clock), so no worker mistakes the new app for the one it still runs.
        tx.execute(
            "UPDATE apps SET revision = CASE WHEN revision + 1 > $2 THEN revision + 1 ELSE $2 END WHERE id = $1",
            &[id.into(), now().into()],
        )
        .await?;
    }
    if let Some(pool) = &change.pool {
        stratus_proto::names::check_pool(pool).map_err(|e| MetadataError::Refused {
            code: "invalid_name",
            message: e.to_string(),
        })?;
        tx.execute(
            "UPDATE apps SET pool = $1 WHERE id = $2",
            &[pool.as_str().into(), id.into()],
        )
        .await?;
        bump_app_pool(tx, id).await?;
    }
    if let Some(replicas) = change.replicas {
        tx.execute(
            "UPDATE apps SET replicas = $1 WHERE id = $2",
            &[replicas.to_db().into(), id.into()],
        )
        .await?;
    }
    if let Some(live) = change.live_version {
        // Fails with NotFound for a version this app does not have.
        load_version(tx, id, live).await?;
        tx.execute(
            "UPDATE apps SET live_version = $1 WHERE id = $2",
            &[live.into(), id.into()],
        )
        .await?;
    }
    let rebinding = change.bindings.is_some()
        || !change.set_bindings.is_empty()
        || !change.remove_bindings.is_empty();
    let mut bindings: Vec<Binding> = match change.bindings {
        Some(b) => b,
        None => load_bindings(tx, id).await?,
    };
    for name in &change.remove_bindings {
        let before = bindings.len();
        bindings.retain(|b| &b.name() != name);
        if bindings.len() == before {
            return Err(MetadataError::NotFound(format!("binding `{name}`")));
        }
    }
    for b in change.set_bindings {
        bindings.retain(|old| old.name() != b.name());
        bindings.push(b);
    }
    if rebinding {
        // What the tenancy policy allows was checked at the API; stored bindings may
        // name backends.
        stratus_proto::providers::check_stored(&bindings).map_err(|e| MetadataError::Refused {
            code: "invalid_binding",
            message: e.to_string(),
        })?;
        tx.execute("DELETE FROM bindings WHERE app_id = $1", &[id.into()])
            .await?;
        for b in &bindings {
            tx.execute(
                "INSERT INTO bindings (app_id, name, spec) VALUES ($1, $2, $3)",
                &[id.into(), b.name().into(), b.to_string().into()],
            )
            .await?;
        }
    }
    if let Some(routes) = change.routes {
        // Held until commit: a concurrent route change waits here, then sees these.
        tx.execute(
            "UPDATE route_space SET changes = changes + 1 WHERE id = 1",
            &[],
        )
        .await?;
        tx.execute(
            "DELETE FROM triggers WHERE app_id = $1 AND kind = 'http'",
            &[id.into()],
        )
        .await?;
        check_routes(tx, id, &routes).await?;
        for route in routes {
            tx.execute(
                "INSERT INTO triggers (app_id, kind, key, spec) VALUES ($1, 'http', $2, '{}')",
                &[id.into(), route.into()],
            )
            .await?;
        }
    }
    if let Some(queues) = &change.queues {
        replace_triggers(tx, id, "queue", queues, |spec| {
            spec.parse::<QueueTrigger>()
                .map(|t| t.name)
                .map_err(|e| e.to_string())
        })
        .await?;
    }
    if let Some(timers) = &change.timers {
        replace_triggers(tx, id, "timer", timers, |spec| {
            spec.parse::<TimerTrigger>()
                .map(|t| t.name)
                .map_err(|e| e.to_string())
        })
        .await?;
    }
    tx.execute(
        "UPDATE apps SET updated_at = $1 WHERE id = $2",
        &[now().into(), id.into()],
    )
    .await?;
    // The rule every change must keep: the live version's imports are all bound.
    let rows = tx
        .query("SELECT live_version FROM apps WHERE id = $1", &[id.into()])
        .await?;
    let live = match first(&rows)?.first() {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    if let Some(live) = live {
        let version = load_version(tx, id, live).await?;
        stratus_proto::interfaces::check_imports(
            version.imports.iter().map(String::as_str),
            &bindings,
        )
        .map_err(|e| MetadataError::Refused {
            code: "missing_binding",
            message: format!("version {live}: {e}"),
        })?;
        check_handlers(tx, id, live, &version.handlers).await?;
    }
    Ok(())
}

/// Replaces an app's triggers of one kind; `name` reads a spec's trigger name.
async fn replace_triggers(
    tx: &mut dyn Tx,
    id: &str,
    kind: &str,
    specs: &[String],
    name: impl Fn(&str) -> Result<String, String>,
) -> Result<(), MetadataError> {
    tx.execute(
        "DELETE FROM triggers WHERE app_id = $1 AND kind = $2",
        &[id.into(), kind.into()],
    )
    .await?;
    let mut names = std::collections::HashSet::new();
    for spec in specs {
        let trigger = name(spec).map_err(|message| MetadataError::Refused {
            code: "invalid_trigger",
            message,
        })?;
        if !names.insert(trigger.clone()) {
            return Err(MetadataError::Refused {
                code: "invalid_trigger",
                message: format!("trigger `{trigger}` is defined twice"),
            });
        }
        // Unique per kind across apps, so the key carries the app.
        tx.execute(
            "INSERT INTO triggers (app_id, kind, key, spec) VALUES ($1, $2, $3, $4)",
            &[
                id.into(),
                kind.into(),
                format!("{id}/{trigger}").into(),
                spec.as_str().into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The rule every change must keep: the live version exports the handler each of the
/// app's triggers calls.
async fn check_handlers(
    tx: &mut dyn Tx,
    id: &str,
    live: i64,
    handlers: &[Handler],
) -> Result<(), MetadataError> {
    let rows = tx
        .query(
            "SELECT kind, key, spec FROM triggers WHERE app_id = $1 ORDER BY kind, key",
            &[id.into()],
        )
        .await?;
    for row in &rows {
        let kind = text(row, 0)?;
        let (needs, trigger) = match kind.as_str() {
            "http" => (Handler::Http, "an HTTP route".to_string()),
            "queue" => (Handler::Message, "a queue".to_string()),
            _ => {
                let timer: TimerTrigger = text(row, 2)?.parse().map_err(|e: TimerError| {
                    MetadataError::Backend(format!("stored timer unreadable: {e}"))
                })?;
                if timer.route.is_some() {
                    (
                        Handler::Http,
                        format!("timer `{}`, which targets a route,", timer.name),
                    )
                } else {
                    (Handler::Timer, format!("timer `{}`", timer.name))
                }
            }
        };
        if !handlers.contains(&needs) {
            let exports = if handlers.is_empty() {
                "no handler".to_string()
            } else {
                handlers
                    .iter()
                    .map(|h| format!("a {} handler", h.as_str()))
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            return Err(MetadataError::Refused {
                code: "missing_handler",
                message: format!(
                    "version {live} cannot take {trigger}: it needs an export of {}, and the component exports {exports}",
                    needs.export_names()
                ),
            });
        }
    }
    Ok(())
}

/// Refuses routes that overlap another app's: equal, or one a prefix of the other at a
/// segment boundary (else `/shop/checkout` could take part of another tenant's `/shop`).
pub(super) async fn check_routes(
    tx: &mut dyn Tx,
    id: &str,
    routes: &[String],
) -> Result<(), MetadataError> {
    if routes.is_empty() {
        return Ok(());
    }
    let taken = tx
        .query(
            "SELECT key FROM triggers WHERE kind = 'http' AND app_id <> $1",
            &[id.into()],
        )
        .await?;
    for row in &taken {
        let other = text(row, 0)?;
        if let Some(route) = routes
            .iter()
            .find(|r| stratus_proto::names::routes_overlap(r, &other))
        {
            // Never say which app holds it: it may belong to another tenant.
            return Err(MetadataError::Conflict(format!(
                "route `{route}` overlaps a route another app serves"
            )));
        }
    }
    Ok(())
}
