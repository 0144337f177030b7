//! Re-authorization bounds: how often a Ready sentinel asks the broker again, and how long
//! it may go without an answer before it stops serving.

use std::time::Duration;

/// How often the broker is asked again once Ready, and how long its answer may fail to
/// come before the sentinel stops serving. These are the operator's upper bounds; the
/// broker's lease (signed in every release) bounds both too, so a configuration the host
/// controls cannot keep a sentinel serving longer than the broker allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reauthorization {
    /// Time between re-authorizations (`None`: as the lease requires, half of it).
    pub every: Option<Duration>,
    /// A Ready sentinel whose last successful authorization is older than this goes
    /// Suspended (`reauthorization_overdue`), whatever the relay does (`None`: twice the
    /// interval).
    pub grace: Option<Duration>,
}

impl Reauthorization {
    /// The interval and grace period in force under a release with `lease`: the grace at
    /// most what the operator configured (default twice the interval) and at most the
    /// lease; the interval at most what the operator configured, half the lease and half
    /// the grace, so that a failed attempt always leaves room for another before the
    /// grace runs out.
    pub fn under(&self, lease: Duration) -> (Duration, Duration) {
        let floor = Duration::from_millis(1);
        let every = self.every.map_or(lease / 2, |e| e.min(lease / 2));
        let grace = self
            .grace
            .unwrap_or_else(|| every.saturating_mul(2))
            .min(lease)
            .max(floor);
        (every.min(grace / 2).max(floor), grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// The interval and grace in force: the operator's values bounded by the lease, and
    /// the interval never more than half the grace.
    #[test]
    fn the_lease_and_the_grace_bound_the_interval_whatever_is_configured() {
        let r = |every: Option<u64>, grace: Option<u64>| Reauthorization {
            every: every.map(S),
            grace: grace.map(S),
        };
        for (config, lease, expected) in [
            // Nothing configured: half the lease, then the whole lease.
            (r(None, None), S(600), (S(300), S(600))),
            // The operator's bounds, within the lease.
            (r(Some(60), Some(300)), S(600), (S(60), S(300))),
            // A host that configures long periods under a short lease: the lease wins.
            (r(Some(300), Some(600)), S(2), (S(1), S(2))),
            (r(Some(3600), None), S(600), (S(300), S(600))),
            // A grace no longer than the interval: the interval is halved, so a failed
            // attempt can be retried before the grace runs out.
            (r(Some(60), Some(60)), S(600), (S(30), S(60))),
            (r(None, Some(10)), S(600), (S(5), S(10))),
            // The longest lease a broker grants.
            (r(None, None), S(86_400), (S(43_200), S(86_400))),
        ] {
            assert_eq!(config.under(lease), expected, "{config:?} under {lease:?}");
        }
        let (every, grace) = r(Some(0), Some(0)).under(S(600));
        assert!(every > Duration::ZERO && grace > Duration::ZERO);
    }
}
