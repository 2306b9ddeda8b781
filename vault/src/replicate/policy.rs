//! A replication policy: how often a point is taken, how often it is app-consistent, and when
//! the recovery point objective counts as breached. Health is judged as the seeds' replication
//! health is: the RPO (now minus the newest point) against the alert threshold.

use std::time::Duration;

use serde::Serialize;

/// How a replication runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The time between the starts of two cycles (one crash-consistent point each).
    pub every: Duration,
    /// Every this long, a cycle's point is app-consistent (the source is frozen around the cut).
    pub app_consistent_every: Option<Duration>,
    /// An RPO above this is a warning, above twice this critical.
    pub rpo_alert: Option<Duration>,
    /// Every this long, the newest point is shipped to the vault's remote.
    pub sync_every: Option<Duration>,
    /// Stop after this many successful cycles (`None`: until stopped).
    pub cycles: Option<u64>,
    /// A disk that grew at the source grows in the vault (a resize record); without, its cycle
    /// fails until the vault's disk is grown.
    pub grow: bool,
}

impl Policy {
    /// Crash-consistent points every `every`, nothing else.
    pub fn every(every: Duration) -> Policy {
        Policy {
            every,
            app_consistent_every: None,
            rpo_alert: None,
            sync_every: None,
            cycles: None,
            grow: false,
        }
    }
}

/// How replication is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The RPO is within the alert threshold (or there is no threshold and a point exists).
    Healthy,
    /// The RPO is above the threshold, but not twice above it.
    Warning,
    /// The RPO is above twice the threshold, or there is no point at all.
    Critical,
}

impl Health {
    /// The health of an RPO against `alert`; `rpo` is `None` when the vault has no point.
    pub fn of(rpo: Option<Duration>, alert: Option<Duration>) -> Health {
        match (rpo, alert) {
            (None, _) => Health::Critical,
            (Some(_), None) => Health::Healthy,
            (Some(rpo), Some(alert)) if rpo <= alert => Health::Healthy,
            (Some(rpo), Some(alert)) if rpo <= alert.saturating_mul(2) => Health::Warning,
            (Some(_), Some(_)) => Health::Critical,
        }
    }

    /// Its name, as shown and as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// The delay before retry `attempt` (1, 2, ...) of a failed cycle: doubling from one second,
/// never past the policy's period (a retry never waits longer than the next cycle would).
pub fn backoff(attempt: u32, every: Duration) -> Duration {
    let doubled = Duration::from_secs(1).saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    doubled.min(every.max(Duration::from_secs(1)))
}

/// Parses a duration as an operator writes one: `10s`, `5m`, `1h`, `1h30m`, `2 minutes`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 10s, 5m or 1h ({e})"))?;
    let d = Duration::try_from(parsed)
        .map_err(|_| format!("{text:?} is negative: give a duration like 10s, 5m or 1h"))?;
    if d.is_zero() {
        return Err(format!(
            "{text:?} is zero: give a duration like 10s, 5m or 1h"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn health_is_the_rpo_against_the_threshold_and_twice_it() {
        assert_eq!(Health::of(None, Some(MIN)), Health::Critical);
        assert_eq!(Health::of(Some(MIN * 100), None), Health::Healthy);
        assert_eq!(Health::of(Some(MIN), Some(MIN)), Health::Healthy);
        assert_eq!(Health::of(Some(MIN + MIN / 2), Some(MIN)), Health::Warning);
        assert_eq!(Health::of(Some(MIN * 2), Some(MIN)), Health::Warning);
        assert_eq!(
            Health::of(Some(MIN * 2 + MIN / 60), Some(MIN)),
            Health::Critical
        );
    }

    #[test]
    fn backoff_doubles_from_a_second_up_to_the_period() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a, 5 * MIN).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(backoff(12, 5 * MIN), 5 * MIN);
        assert_eq!(backoff(40, 5 * MIN), 5 * MIN, "no overflow at any attempt");
        assert_eq!(
            backoff(3, Duration::from_millis(10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn durations_parse_as_operators_write_them() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(5 * MIN));
        assert_eq!(parse_duration("1h30m"), Ok(90 * MIN));
        for bad in ["", "5", "-5m", "0s", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
