//! KV-aware balancing: a background poller per remote deployment of a KV-aware group reads
//! `sconce:num_requests_waiting` and `sconce:kv_cache_usage_perc` from the upstream's
//! `/metrics` and hands them to the balancer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::balance::{parse_upstream_metrics, Load};

/// Shortest poll interval accepted, so a typo cannot hammer an upstream.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One upstream to poll.
pub struct PollTarget {
    pub deployment: String,
    pub metrics_url: String,
    pub load: Weak<Load>,
}

impl PollTarget {
    pub fn new(deployment: &str, base_url: &str, load: &Arc<Load>) -> Self {
        Self { deployment: deployment.into(), metrics_url: metrics_url(base_url), load: Arc::downgrade(load) }
    }
}

/// `http://host:port/v1` → `http://host:port/metrics`.
pub fn metrics_url(base_url: &str) -> String {
    let root = base_url.trim_end_matches('/');
    let root = root.strip_suffix("/v1").unwrap_or(root);
    format!("{root}/metrics")
}

/// Starts one poller per target on the current runtime; each stops once its load is gone.
pub fn spawn_pollers(targets: Vec<PollTarget>, interval: Duration) {
    if targets.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime: KV-aware upstream polling is off");
        return;
    };
    let interval = interval.max(MIN_INTERVAL);
    let client =
        reqwest::Client::builder().timeout(interval.max(Duration::from_millis(500))).build().unwrap_or_default();
    for target in targets {
        runtime.spawn(poll(client.clone(), target, interval));
    }
}

async fn poll(client: reqwest::Client, target: PollTarget, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(load) = target.load.upgrade() else { return };
        match fetch(&client, &target.metrics_url).await {
            Ok(body) => {
                let (waiting, kv_usage) = parse_upstream_metrics(&body);
                load.set_upstream(waiting, kv_usage);
            }
            // The last reading stays; the breaker deals with a dead upstream.
            Err(error) => tracing::debug!(deployment = %target.deployment, %error, "upstream /metrics poll failed"),
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, reqwest::Error> {
    client.get(url).send().await?.error_for_status()?.text().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_live_at_the_root() {
        assert_eq!(metrics_url("http://h:8000/v1"), "http://h:8000/metrics");
        assert_eq!(metrics_url("http://h:8000/v1/"), "http://h:8000/metrics");
        assert_eq!(metrics_url("http://h:8000"), "http://h:8000/metrics");
    }
}
