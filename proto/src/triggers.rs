//! Queue triggers: the syntax `NAME=SOURCE[:OPT=VAL,…]` written on `fnctl`'s command
//! line, in a manifest and in the API, checked the same way by the control plane (when
//! it stores one) and the worker (when it runs one).
//!
//! Options split in two: the trigger's own (how many messages, how often, where the
//! failures go) and the source's (which queue). Unknown options are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::binding::ProviderSpec;

/// The queue sources, by type tag.
pub const QUEUE_SOURCES: &str = "embedded, nats, sqs";

/// A queue source and the options that name its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSource {
    /// The worker's embedded durable queue (`fnctl up`, `fnctl dev`). `queue` defaults
    /// to the trigger's name.
    Embedded { queue: String },
    /// A NATS JetStream stream, read through a durable pull consumer.
    Nats {
        url: String,
        stream: String,
        /// Only messages on this subject (wildcards allowed); all of the stream's if
        /// unset.
        subject: Option<String>,
    },
    /// An SQS queue (standard or FIFO, by its URL's `.fifo` suffix).
    Sqs { queue_url: String },
}

impl QueueSource {
    pub fn tag(&self) -> &'static str {
        match self {
            QueueSource::Embedded { .. } => "embedded",
            QueueSource::Nats { .. } => "nats",
            QueueSource::Sqs { .. } => "sqs",
        }
    }

    fn parse(
        provider: &str,
        mut options: BTreeMap<String, String>,
        name: &str,
    ) -> Result<Self, TriggerError> {
        let mut take = |key: &str| options.remove(key).filter(|v| !v.is_empty());
        let source = match provider {
            "embedded" => QueueSource::Embedded {
                queue: take("queue").unwrap_or_else(|| name.to_string()),
            },
            "nats" => QueueSource::Nats {
                url: take("url").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
                stream: take("stream").ok_or(TriggerError::Missing("nats", "stream"))?,
                subject: take("subject"),
            },
            "sqs" => QueueSource::Sqs {
                queue_url: take("queue_url").ok_or(TriggerError::Missing("sqs", "queue_url"))?,
            },
            other => return Err(TriggerError::UnknownSource(other.to_string())),
        };
        if let Some(key) = options.into_keys().next() {
            return Err(TriggerError::UnknownOption {
                kind: provider.to_string(),
                key,
            });
        }
        match &source {
            QueueSource::Embedded { queue } if !valid_queue_name(queue) => Err(
                TriggerError::Invalid("queue", "letters, digits, `-`, `_` and `.`, 1 to 80".into()),
            ),
            QueueSource::Nats { url, .. }
                if !(url.starts_with("nats://") || url.starts_with("tls://")) =>
            {
                Err(TriggerError::Invalid(
                    "url",
                    "a `nats://` or `tls://` URL".into(),
                ))
            }
            QueueSource::Sqs { queue_url }
                if !(queue_url.starts_with("https://") || queue_url.starts_with("http://")) =>
            {
                Err(TriggerError::Invalid(
                    "queue_url",
                    "an SQS queue URL".into(),
                ))
            }
            _ => Ok(source),
        }
    }

    fn options(&self) -> Vec<(&'static str, String)> {
        match self {
            QueueSource::Embedded { queue } => vec![("queue", queue.clone())],
            QueueSource::Nats {
                url,
                stream,
                subject,
            } => {
                let mut out = vec![("url", url.clone()), ("stream", stream.clone())];
                out.extend(subject.clone().map(|s| ("subject", s)));
                out
            }
            QueueSource::Sqs { queue_url } => vec![("queue_url", queue_url.clone())],
        }
    }
}

/// An embedded queue's name: what `fnctl queue send NAME` names.
pub fn valid_queue_name(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The delay before the next attempt at a message that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Fixed(Duration),
    /// `initial` after the first failure, doubling up to `max`.
    Exponential {
        initial: Duration,
        max: Duration,
    },
}

impl Backoff {
    /// The delay after the `failures`-th failed attempt (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { initial, max } => {
                let doublings = failures.saturating_sub(1).min(32);
                initial.saturating_mul(1u32 << doublings.min(31)).min(max)
            }
        }
    }
}

/// A queue trigger: where its messages come from and how they are handed to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTrigger {
    pub name: String,
    pub source: QueueSource,
    /// Messages received together (1–100).
    pub batch_size: u32,
    /// How long to wait to fill a batch once its first message is in (0–300 s).
    pub batch_window: Duration,
    /// Handlers running at once across the whole pool (1–1000).
    pub max_concurrency: u32,
    /// Receives of one message before it goes to the dead-letter queue (1–100).
    pub max_receives: u32,
    /// Where a message past its receives goes: a queue of the same source (a subject
    /// for NATS, a queue URL for SQS, a queue name for the embedded source). Without
    /// one, such a message is dropped and logged (SQS: the queue's own redrive policy
    /// applies, if it has one).
    pub dead_letter: Option<String>,
    pub backoff: Backoff,
    /// One message of a group at a time, in order; groups in parallel.
    pub fifo: bool,
    /// How long a received message stays hidden before it is delivered again, unless
    /// its handler still runs (then it is extended every third of it); derived from the
    /// function's deadline when unset.
    pub visibility: Option<Duration>,
}

impl QueueTrigger {
    pub const DEFAULT_BATCH: u32 = 10;
    pub const DEFAULT_CONCURRENCY: u32 = 16;
    pub const DEFAULT_MAX_RECEIVES: u32 = 5;
    pub const DEFAULT_BACKOFF: Backoff = Backoff::Exponential {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    /// How long a received message stays hidden from other consumers before it is
    /// delivered again, for a function whose deadline is `deadline`: as set, or the
    /// deadline with room for the receive and the acknowledgement. It is extended every
    /// third of it while a handler still runs (so a merely slow message is never
    /// delivered twice), and it is how long a message held by a worker that died waits
    /// before another takes it.
    pub fn visibility_for(&self, deadline: Duration) -> Duration {
        self.visibility
            .unwrap_or_else(|| (deadline + Duration::from_secs(5)).max(Duration::from_secs(10)))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    #[error(
        "a queue trigger is `NAME=SOURCE[:OPTION=VALUE,…]`, e.g. `orders=nats:stream=ORDERS`; got `{0}`"
    )]
    Malformed(String),
    #[error("trigger name `{0}`: letters, digits, `-`, `_` and `.`, 1 to 80")]
    Name(String),
    #[error("unknown queue source `{0}`; sources: {QUEUE_SOURCES}")]
    UnknownSource(String),
    #[error("unknown option `{key}` for a `{kind}` queue trigger")]
    UnknownOption { kind: String, key: String },
    #[error("a `{0}` queue trigger needs `{1}=…`")]
    Missing(&'static str, &'static str),
    #[error("invalid `{0}`: expected {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Syntax(#[from] crate::binding::BindingError),
    #[error("trigger `{0}` is defined twice")]
    Duplicate(String),
}

fn number<T: FromStr + PartialOrd + fmt::Display + Copy>(
    key: &'static str,
    value: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, TriggerError> {
    let Some(value) = value else {
        return Ok(default);
    };
    value
        .parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            TriggerError::Invalid(
                key,
                format!("a number from {} to {}", range.start(), range.end()),
            )
        })
}

impl FromStr for QueueTrigger {
    type Err = TriggerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rhs) = s
            .split_once('=')
            .ok_or_else(|| TriggerError::Malformed(s.to_string()))?;
        if !valid_queue_name(name) {
            return Err(TriggerError::Name(name.to_string()));
        }
        if rhs.is_empty() {
            return Err(TriggerError::Malformed(s.to_string()));
        }
        let spec: ProviderSpec = rhs.parse()?;
        let mut options = spec.options;
        let mut take = |key: &str| options.remove(key);
        let batch_size = number(
            "batch_size",
            take("batch_size"),
            Self::DEFAULT_BATCH,
            1..=100,
        )?;
        let window_ms = number("window_ms", take("window_ms"), 0u64, 0..=300_000)?;
        let max_concurrency = number(
            "concurrency",
            take("concurrency"),
            Self::DEFAULT_CONCURRENCY,
            1..=1000,
        )?;
        let max_receives = number(
            "max_receives",
            take("max_receives"),
            Self::DEFAULT_MAX_RECEIVES,
            1..=100,
        )?;
        let dead_letter = take("dead_letter").filter(|d| !d.is_empty());
        let visibility = match take("visibility_ms") {
            None => None,
            some => Some(Duration::from_millis(number(
                "visibility_ms",
                some,
                0u64,
                1000..=43_200_000,
            )?)),
        };
        let backoff_ms = number("backoff_ms", take("backoff_ms"), 1000u64, 0..=43_200_000)?;
        let backoff_max_ms = number(
            "backoff_max_ms",
            take("backoff_max_ms"),
            60_000u64,
            0..=43_200_000,
        )?;
        let backoff = match take("backoff").as_deref() {
            None | Some("exponential") => Backoff::Exponential {
                initial: Duration::from_millis(backoff_ms),
                max: Duration::from_millis(backoff_max_ms.max(backoff_ms)),
            },
            Some("fixed") => Backoff::Fixed(Duration::from_millis(backoff_ms)),
            Some(_) => {
                return Err(TriggerError::Invalid(
                    "backoff",
                    "`fixed` or `exponential`".into(),
                ));
            }
        };
        let fifo = match take("fifo").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(TriggerError::Invalid("fifo", "`true` or `false`".into())),
        };
        let source = QueueSource::parse(&spec.provider, options, name)?;
        if let (QueueSource::Sqs { queue_url }, false) = (&source, fifo)
            && queue_url.ends_with(".fifo")
        {
            return Err(TriggerError::Invalid(
                "fifo",
                "`fifo=true` for a FIFO queue (its URL ends in `.fifo`)".into(),
            ));
        }
        Ok(QueueTrigger {
            name: name.to_string(),
            source,
            batch_size,
            batch_window: Duration::from_millis(window_ms),
            max_concurrency,
            max_receives,
            dead_letter,
            backoff,
            fifo,
            visibility,
        })
    }
}

impl fmt::Display for QueueTrigger {
    /// The canonical form, every option spelled out, which parses back to the same
    /// trigger.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:", self.name, self.source.tag())?;
        let mut options: Vec<(&str, String)> = self.source.options();
        options.push(("batch_size", self.batch_size.to_string()));
        options.push(("window_ms", self.batch_window.as_millis().to_string()));
        options.push(("concurrency", self.max_concurrency.to_string()));
        options.push(("max_receives", self.max_receives.to_string()));
        if let Some(d) = &self.dead_letter {
            options.push(("dead_letter", d.clone()));
        }
        match self.backoff {
            Backoff::Fixed(d) => {
                options.push(("backoff", "fixed".into()));
                options.push(("backoff_ms", d.as_millis().to_string()));
            }
            Backoff::Exponential { initial, max } => {
                options.push(("backoff", "exponential".into()));
                options.push(("backoff_ms", initial.as_millis().to_string()));
                options.push(("backoff_max_ms", max.as_millis().to_string()));
            }
        }
        if self.fifo {
            options.push(("fifo", "true".into()));
        }
        if let Some(v) = self.visibility {
            options.push(("visibility_ms", v.as_millis().to_string()));
        }
        let joined: Vec<String> = options
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.write_str(&joined.join(","))
    }
}

/// Checks a set of queue triggers: each valid, no name twice.
pub fn parse_queue_triggers(specs: &[String]) -> Result<Vec<QueueTrigger>, TriggerError> {
    let mut out: Vec<QueueTrigger> = Vec::with_capacity(specs.len());
    for spec in specs {
        let trigger: QueueTrigger = spec.parse()?;
        if out.iter().any(|t| t.name == trigger.name) {
            return Err(TriggerError::Duplicate(trigger.name));
        }
        out.push(trigger);
    }
    Ok(out)
}

/// The part of a trigger's `max_concurrency` the `index`-th of `workers` workers runs,
/// so the pool as a whole never runs more: an even split, the remainder to the first.
/// A worker past the cap gets 0 and runs no consumer for it.
pub fn concurrency_share(max: u32, index: usize, workers: usize) -> u32 {
    let Ok(workers) = u32::try_from(workers.max(1)) else {
        return 0;
    };
    let Ok(index) = u32::try_from(index) else {
        return 0;
    };
    max / workers + u32::from(index < max % workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let t: QueueTrigger = "orders=nats:stream=ORDERS,subject=orders.*,batch_size=5,concurrency=3,max_receives=4,dead_letter=orders.dlq,backoff=fixed,backoff_ms=200"
            .parse()
            .unwrap();
        assert_eq!(t.batch_size, 5);
        assert_eq!(t.max_concurrency, 3);
        assert_eq!(t.backoff, Backoff::Fixed(Duration::from_millis(200)));
        assert_eq!(
            t.source,
            QueueSource::Nats {
                url: "nats://127.0.0.1:4222".into(),
                stream: "ORDERS".into(),
                subject: Some("orders.*".into())
            }
        );
        let again: QueueTrigger = t.to_string().parse().unwrap();
        assert_eq!(again, t);
        let e: QueueTrigger = "jobs=embedded".parse().unwrap();
        assert_eq!(
            e.source,
            QueueSource::Embedded {
                queue: "jobs".into()
            }
        );
        assert_eq!(e.to_string().parse::<QueueTrigger>().unwrap(), e);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (spec, want) in [
            ("orders", "NAME=SOURCE"),
            ("orders=kafka", "unknown queue source"),
            ("orders=nats", "needs `stream"),
            (
                "orders=nats:stream=S,colour=blue",
                "unknown option `colour`",
            ),
            ("orders=embedded:batch_size=0", "batch_size"),
            ("orders=embedded:backoff=linear", "backoff"),
            ("orders=sqs:queue_url=http://h/q.fifo", "fifo=true"),
            ("bad name=embedded", "trigger name"),
        ] {
            let err = spec.parse::<QueueTrigger>().unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
        assert!(matches!(
            parse_queue_triggers(&["a=embedded".into(), "a=embedded:queue=b".into()]),
            Err(TriggerError::Duplicate(_))
        ));
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(b.delay(1000).as_millis(), 500);
    }

    #[test]
    fn shares_never_exceed_the_cap() {
        for max in 1..20 {
            for workers in 1..8 {
                let total: u32 = (0..workers)
                    .map(|i| concurrency_share(max, i, workers))
                    .sum();
                assert_eq!(total, max, "{max} over {workers}");
            }
        }
    }
}
