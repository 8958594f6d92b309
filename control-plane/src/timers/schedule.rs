//! Timer triggers: `NAME=cron(EXPR)`, `NAME=rate(N UNIT)` or `NAME=at(DATETIME)`,
//! optionally followed by `:OPTION=VALUE,…` (`tz`, `catch_up`, `route`, `retries`,
//! `backoff_ms`), and when each fires next.
//!
//! Cron takes five fields, or six with seconds first; it is evaluated in the trigger's
//! IANA time zone, so `0 9 * * *` in `Europe/Paris` fires at 09:00 Paris time on both
//! sides of a DST change. A rate counts from the Unix epoch, so every replica computes
//! the same instants.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// What to do with scheduled times missed while no control plane ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Fire none of them.
    Skip,
    /// Fire the latest one.
    One,
    /// Fire each, up to [`MAX_CATCH_UP`].
    All,
}

/// The most missed times one trigger fires when it catches up with `all`.
pub const MAX_CATCH_UP: usize = 100;

impl CatchUp {
    fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Schedule {
    /// The expression as written and its parsed form.
    Cron(String, Box<croner::Cron>),
    /// Every this many milliseconds.
    Rate(u64, String),
    /// Once, at this instant (milliseconds since the epoch), as written.
    At(i64, String),
}

#[derive(Debug, Clone)]
pub struct TimerTrigger {
    pub name: String,
    pub schedule: Schedule,
    pub tz: Tz,
    pub catch_up: CatchUp,
    /// GET this route of the app instead of calling its timer handler.
    pub route: Option<String>,
    /// Attempts at one scheduled time before it is recorded as failed (1–10).
    pub retries: u32,
    /// The delay before the second attempt, doubling after (capped at 10 minutes).
    pub backoff_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimerError {
    #[error(
        "a timer trigger is `NAME=cron(EXPR)`, `NAME=rate(N UNIT)` or `NAME=at(DATETIME)`, then optionally `:tz=ZONE,catch_up=skip|one|all,route=/PATH,retries=N,backoff_ms=N`; got `{0}`"
    )]
    Malformed(String),
    #[error("trigger name `{0}`: letters, digits, `-`, `_` and `.`, 1 to 80")]
    Name(String),
    #[error("invalid cron expression `{0}`: {1}")]
    Cron(String, String),
    #[error("invalid rate `{0}`: expected e.g. `rate(30 seconds)` or `rate(5 minutes)`")]
    Rate(String),
    #[error(
        "invalid time `{0}`: expected e.g. `at(2026-12-24T18:00:00)` (in the trigger's time zone) or RFC 3339"
    )]
    At(String),
    #[error("unknown time zone `{0}`; use an IANA name such as `Europe/Paris`")]
    Zone(String),
    #[error("invalid `{0}`: {1}")]
    Invalid(&'static str, String),
    #[error("unknown option `{0}` for a timer trigger")]
    UnknownOption(String),
}

impl TimerTrigger {
    /// The first scheduled time strictly after `after_ms`, if there is one.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match &self.schedule {
            Schedule::Cron(_, cron) => {
                let after = self.tz.timestamp_millis_opt(after_ms).single()?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                Some(next.with_timezone(&Utc).timestamp_millis())
            }
            Schedule::Rate(period, _) => {
                let period = i64::try_from(*period).ok()?.max(1);
                Some((after_ms.div_euclid(period) + 1) * period)
            }
            Schedule::At(at, _) => (*at > after_ms).then_some(*at),
        }
    }

    /// The latest `keep` scheduled times in `(after_ms, until_ms]`, oldest first. Walks
    /// forward from `after_ms` (at most a day of per-second times is 86,400 steps).
    pub fn latest_due(&self, after_ms: i64, until_ms: i64, keep: usize) -> Vec<i64> {
        let mut out = std::collections::VecDeque::with_capacity(keep + 1);
        let mut at = after_ms;
        while let Some(next) = self.next_after(at).filter(|n| *n <= until_ms) {
            out.push_back(next);
            if out.len() > keep {
                out.pop_front();
            }
            at = next;
        }
        out.into()
    }

    /// The scheduled times in `(after_ms, until_ms]`, at most `limit` of them, oldest
    /// first.
    pub fn due(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = after_ms;
        while out.len() < limit {
            match self.next_after(at) {
                Some(next) if next <= until_ms => {
                    out.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        out
    }
}

fn parse_rate(s: &str) -> Option<u64> {
    let (n, unit) = s.trim().split_once(' ')?;
    let n: u64 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let ms = match unit.trim().trim_end_matches('s') {
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

fn parse_at(s: &str, tz: Tz) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()?;
    // A time a DST change skips does not exist there; one it repeats takes the first.
    Some(
        tz.from_local_datetime(&local)
            .earliest()?
            .timestamp_millis(),
    )
}

impl FromStr for TimerTrigger {
    type Err = TimerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || TimerError::Malformed(s.to_string());
        let (name, rest) = s.split_once('=').ok_or_else(malformed)?;
        if !stratus_proto::triggers::valid_queue_name(name) {
            return Err(TimerError::Name(name.to_string()));
        }
        let (kind, rest) = rest.split_once('(').ok_or_else(malformed)?;
        let (expr, rest) = rest.split_once(')').ok_or_else(malformed)?;
        let options = match rest {
            "" => "",
            r => r.strip_prefix(':').ok_or_else(malformed)?,
        };
        let mut tz = Tz::UTC;
        let mut catch_up = CatchUp::One;
        let mut route = None;
        let mut retries = 3;
        let mut backoff_ms = 1000;
        let mut seen = std::collections::HashSet::new();
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option.split_once('=').ok_or_else(malformed)?;
            if !seen.insert(key) {
                return Err(TimerError::Invalid(
                    "options",
                    format!("`{key}` is given twice"),
                ));
            }
            match key {
                "tz" => tz = value.parse().map_err(|_| TimerError::Zone(value.into()))?,
                "catch_up" => {
                    catch_up = match value {
                        "skip" => CatchUp::Skip,
                        "one" => CatchUp::One,
                        "all" => CatchUp::All,
                        _ => {
                            return Err(TimerError::Invalid(
                                "catch_up",
                                "`skip`, `one` or `all`".into(),
                            ));
                        }
                    }
                }
                "route" => {
                    route = Some(
                        stratus_proto::names::normalize_route(value)
                            .map_err(|e| TimerError::Invalid("route", e.to_string()))?,
                    )
                }
                "retries" => {
                    retries = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=10).contains(n))
                        .ok_or_else(|| TimerError::Invalid("retries", "1 to 10".into()))?
                }
                "backoff_ms" => {
                    backoff_ms = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= 600_000)
                        .ok_or_else(|| TimerError::Invalid("backoff_ms", "0 to 600000".into()))?
                }
                other => return Err(TimerError::UnknownOption(other.to_string())),
            }
        }
        let schedule = match kind {
            "cron" => {
                let cron = croner::Cron::new(expr.trim())
                    .with_seconds_optional()
                    .parse()
                    .map_err(|e| TimerError::Cron(expr.to_string(), e.to_string()))?;
                Schedule::Cron(expr.trim().to_string(), Box::new(cron))
            }
            "rate" => Schedule::Rate(
                parse_rate(expr).ok_or_else(|| TimerError::Rate(expr.to_string()))?,
                expr.trim().to_string(),
            ),
            "at" => Schedule::At(
                parse_at(expr.trim(), tz).ok_or_else(|| TimerError::At(expr.to_string()))?,
                expr.trim().to_string(),
            ),
            _ => return Err(malformed()),
        };
        Ok(TimerTrigger {
            name: name.to_string(),
            schedule,
            tz,
            catch_up,
            route,
            retries,
            backoff_ms,
        })
    }
}

impl fmt::Display for TimerTrigger {
    /// The canonical form: every option spelled out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, expr) = match &self.schedule {
            Schedule::Cron(e, _) => ("cron", e),
            Schedule::Rate(_, e) => ("rate", e),
            Schedule::At(_, e) => ("at", e),
        };
        write!(
            f,
            "{}={kind}({expr}):tz={},catch_up={},retries={},backoff_ms={}",
            self.name,
            self.tz.name(),
            self.catch_up.as_str(),
            self.retries,
            self.backoff_ms
        )?;
        if let Some(route) = &self.route {
            write!(f, ",route={route}")?;
        }
        Ok(())
    }
}

/// Checks timer specs: each valid, no name twice; returns their canonical forms.
pub fn canonical_timers(specs: &[String]) -> Result<Vec<String>, TimerError> {
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let t: TimerTrigger = spec.parse()?;
        if !names.insert(t.name.clone()) {
            return Err(TimerError::Invalid(
                "name",
                format!("trigger `{}` is defined twice", t.name),
            ));
        }
        out.push(t.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn parses_prints_back_and_refuses() {
        let t: TimerTrigger = "nightly=cron(0 3 * * *):tz=Europe/Paris,catch_up=all,route=/jobs"
            .parse()
            .unwrap();
        assert_eq!(t.catch_up, CatchUp::All);
        assert_eq!(t.route.as_deref(), Some("/jobs"));
        let again: TimerTrigger = t.to_string().parse().unwrap();
        assert_eq!(again.to_string(), t.to_string());
        for (bad, want) in [
            ("x=cron(61 * * * *)", "invalid cron"),
            ("x=rate(5 fortnights)", "invalid rate"),
            ("x=at(tomorrow)", "invalid time"),
            ("x=cron(* * * * *):tz=Mars/Olympus", "unknown time zone"),
            ("x=cron(* * * * *):colour=red", "unknown option"),
            ("x=every(5)", "a timer trigger is"),
            ("bad name=rate(1 minute)", "trigger name"),
        ] {
            let err = bad.parse::<TimerTrigger>().unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn seconds_are_optional_and_rates_align_to_the_epoch() {
        let every_second: TimerTrigger = "s=cron(* * * * * *)".parse().unwrap();
        let t0 = ms("2026-01-01T00:00:00.500Z");
        assert_eq!(every_second.due(t0, t0 + 3000, 10).len(), 3);
        let minutely: TimerTrigger = "m=cron(* * * * *)".parse().unwrap();
        assert_eq!(minutely.next_after(t0), Some(ms("2026-01-01T00:01:00Z")));
        let rate: TimerTrigger = "r=rate(5 minutes)".parse().unwrap();
        assert_eq!(rate.next_after(t0), Some(ms("2026-01-01T00:05:00Z")));
        let once: TimerTrigger = "o=at(2026-01-01T01:00:00Z)".parse().unwrap();
        assert_eq!(
            once.due(t0, t0 + 86_400_000, 10),
            vec![ms("2026-01-01T01:00:00Z")]
        );
    }

    #[test]
    fn time_zones_hold_local_time_across_dst() {
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer (DST starts on
        // 2026-03-29).
        let t: TimerTrigger = "daily=cron(0 9 * * *):tz=Europe/Paris".parse().unwrap();
        let before = ms("2026-03-28T12:00:00Z");
        let due = t.due(before, before + 2 * 86_400_000, 5);
        assert_eq!(
            due,
            vec![ms("2026-03-29T07:00:00Z"), ms("2026-03-30T07:00:00Z")]
        );
        let winter = ms("2026-01-10T00:00:00Z");
        assert_eq!(t.next_after(winter), Some(ms("2026-01-10T08:00:00Z")));
        let local: TimerTrigger = "o=at(2026-07-01T12:00:00):tz=America/New_York"
            .parse()
            .unwrap();
        assert_eq!(local.next_after(0), Some(ms("2026-07-01T16:00:00Z")));
    }
}
