//! Spend per key and per team per period (UTC day or month), in-process or in Redis.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::BudgetPeriod;
use crate::redis_store::RedisStore;

/// Spend counters keyed by scope (`key:<id>` or `team:<name>`) and period start.
pub struct SpendBook {
    local: Mutex<HashMap<(String, BudgetPeriod, i64), f64>>,
    redis: Option<RedisStore>,
}

impl SpendBook {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Self { local: Mutex::new(HashMap::new()), redis }
    }

    /// Seeds a local counter (from the ledger at startup).
    pub fn seed(&self, scope: &str, period: BudgetPeriod, now: i64, amount: f64) {
        let start = period_start(period, now);
        *self.lock().entry((scope.to_string(), period, start)).or_insert(0.0) += amount;
    }

    /// What `scope` spent in the current `period`.
    pub async fn spent(&self, scope: &str, period: BudgetPeriod, now: i64) -> f64 {
        let start = period_start(period, now);
        if let Some(redis) = &self.redis {
            match redis.spend(&counter(scope, period, start)).await {
                Ok(spent) => return spent,
                Err(error) => tracing::warn!(%error, "redis spend read failed; using the local counter"),
            }
        }
        self.lock().get(&(scope.to_string(), period, start)).copied().unwrap_or(0.0)
    }

    /// Adds `amount` to both of the scope's periods.
    pub async fn add(&self, scope: &str, now: i64, amount: f64) {
        if amount <= 0.0 {
            return;
        }
        for period in [BudgetPeriod::Day, BudgetPeriod::Month] {
            let start = period_start(period, now);
            *self.lock().entry((scope.to_string(), period, start)).or_insert(0.0) += amount;
            if let Some(redis) = &self.redis {
                if let Err(error) = redis.add_spend(&counter(scope, period, start), amount, 32 * 86_400).await {
                    tracing::warn!(%error, "redis spend update failed");
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, BudgetPeriod, i64), f64>> {
        match self.local.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn counter(scope: &str, period: BudgetPeriod, start: i64) -> String {
    format!("sconce:spend:{scope}:{}:{start}", period.as_str())
}

/// Unix seconds at which the UTC day or month containing `now` began.
pub fn period_start(period: BudgetPeriod, now: i64) -> i64 {
    let day = now.div_euclid(86_400);
    match period {
        BudgetPeriod::Day => day * 86_400,
        BudgetPeriod::Month => {
            let (year, month, _) = civil_from_days(day);
            days_from_civil(year, month, 1) * 86_400
        }
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        // 2026-11-27T00:20:00Z
        let now = 1_795_738_800;
        assert_eq!(period_start(BudgetPeriod::Day, now), 1_795_737_600);
        // 2026-11-01T00:00:00Z
        assert_eq!(period_start(BudgetPeriod::Month, now), 1_793_491_200);
    }

    #[tokio::test]
    async fn spend_adds_up_per_period() {
        let book = SpendBook::new(None);
        book.add("key:a", 100, 0.5).await;
        book.add("key:a", 200, 0.25).await;
        assert!((book.spent("key:a", BudgetPeriod::Day, 300).await - 0.75).abs() < 1e-12);
        assert_eq!(book.spent("key:a", BudgetPeriod::Day, 86_400 + 5).await, 0.0);
    }
}
