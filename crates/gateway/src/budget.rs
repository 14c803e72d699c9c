//! Spend per key and per team per period (UTC day or month), in-process or in Redis, and
//! holds: what requests in flight may still cost, reserved when a request is admitted and
//! settled (released, with the actual cost booked) when it ends. A reservation checks and
//! holds in one step (one mutex here, one Lua script in Redis), so concurrent requests can
//! never together cross a budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::config::{BudgetPeriod, GatewayConfig};
use crate::endpoint::ApiRequest;
use crate::redis_store::{RedisStore, ReserveSlot};

/// Spend counters live a little longer than a month.
const SPEND_TTL_SECS: u64 = 32 * 86_400;
/// Hold counters in Redis expire this long after the last reservation (what a replica killed
/// with requests in flight leaves held).
const HELD_TTL_SECS: u64 = 3_600;

/// What the gateway does when the shared state (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedStateMode {
    /// Refuse requests that need a budget check (503).
    #[default]
    Deny,
    /// Check this replica's own counters instead.
    Local,
}

/// One budget to check: a scope (`key:<id>` or `team:<name>`), its period and its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLimit {
    pub scope: String,
    pub period: BudgetPeriod,
    pub max: f64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The limit at this index is spent, or the reservation would cross it.
    Over(usize),
    /// The shared state is unreachable and `on_shared_state_error = "deny"`.
    Unavailable,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    spent: f64,
    held: f64,
}

type Slot = (String, BudgetPeriod, i64);

/// Spend counters keyed by scope (`key:<id>` or `team:<name>`) and period start.
pub struct SpendBook {
    local: Mutex<HashMap<Slot, Counter>>,
    redis: Option<RedisStore>,
    on_error: SharedStateMode,
}

/// A reservation, settled by [`SpendBook::settle`]; released (nothing booked) when dropped
/// unsettled, so a request that never reaches the meter frees its hold.
#[derive(Debug)]
pub struct Hold {
    book: Arc<SpendBook>,
    slots: Vec<Slot>,
    amount: f64,
    /// Held in Redis (otherwise in this replica's counters).
    shared: bool,
    settled: bool,
}

impl Hold {
    pub fn amount(&self) -> f64 {
        self.amount
    }
}

/// The journal's place for a request's hold, from the policy stage to the meter.
#[derive(Debug, Default)]
pub struct HoldSlot(Mutex<Option<Hold>>);

impl HoldSlot {
    pub fn put(&self, hold: Hold) {
        *lock(&self.0) = Some(hold);
    }

    pub fn take(&self) -> Option<Hold> {
        lock(&self.0).take()
    }
}

impl std::fmt::Debug for SpendBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendBook").field("redis", &self.redis.is_some()).finish()
    }
}

impl SpendBook {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Self::with_mode(redis, SharedStateMode::default())
    }

    pub fn with_mode(redis: Option<RedisStore>, on_error: SharedStateMode) -> Self {
        Self { local: Mutex::new(HashMap::new()), redis, on_error }
    }

    /// Seeds a local counter (from the ledger at startup).
    pub fn seed(&self, scope: &str, period: BudgetPeriod, now: i64, amount: f64) {
        let start = period_start(period, now);
        lock(&self.local).entry((scope.to_string(), period, start)).or_default().spent += amount;
    }

    /// What `scope` spent in the current `period`.
    pub async fn spent(&self, scope: &str, period: BudgetPeriod, now: i64) -> f64 {
        let start = period_start(period, now);
        if let Some(redis) = &self.redis {
            match redis.spend(&counter("spend", scope, period, start)).await {
                Ok(spent) => return spent,
                Err(error) => tracing::warn!(%error, "redis spend read failed; using the local counter"),
            }
        }
        lock(&self.local).get(&(scope.to_string(), period, start)).map_or(0.0, |counter| counter.spent)
    }

    /// Holds `amount` on every limit, unless one is spent or would be crossed.
    pub async fn reserve(self: &Arc<Self>, limits: &[BudgetLimit], now: i64, amount: f64) -> Result<Hold, Refusal> {
        let amount = amount.max(0.0);
        let slots: Vec<Slot> =
            limits.iter().map(|limit| (limit.scope.clone(), limit.period, period_start(limit.period, now))).collect();
        let hold = |shared| Hold { book: self.clone(), slots: slots.clone(), amount, shared, settled: false };
        if let Some(redis) = &self.redis {
            let shared: Vec<ReserveSlot> = limits
                .iter()
                .zip(&slots)
                .map(|(limit, (scope, period, start))| ReserveSlot {
                    spend: counter("spend", scope, *period, *start),
                    held: counter("held", scope, *period, *start),
                    max: limit.max,
                })
                .collect();
            match redis.reserve(&shared, amount, HELD_TTL_SECS).await {
                Ok(None) => return Ok(hold(true)),
                Ok(Some(crossed)) => return Err(Refusal::Over(crossed)),
                Err(error) if self.on_error == SharedStateMode::Deny => {
                    tracing::warn!(%error, "budget reservation failed: refusing (on_shared_state_error = deny)");
                    return Err(Refusal::Unavailable);
                }
                Err(error) => tracing::warn!(%error, "budget reservation failed: using the local counters"),
            }
        }
        self.reserve_local(limits, &slots, amount)?;
        Ok(hold(false))
    }

    /// Check and hold under one lock.
    fn reserve_local(&self, limits: &[BudgetLimit], slots: &[Slot], amount: f64) -> Result<(), Refusal> {
        let mut counters = lock(&self.local);
        for (i, (limit, slot)) in limits.iter().zip(slots).enumerate() {
            let counter = counters.get(slot).copied().unwrap_or_default();
            let committed = counter.spent + counter.held.max(0.0);
            if committed >= limit.max || committed + amount > limit.max {
                return Err(Refusal::Over(i));
            }
        }
        for slot in slots {
            counters.entry(slot.clone()).or_default().held += amount;
        }
        Ok(())
    }

    /// Releases `hold` (if any) and adds `amount` to both periods of every scope.
    pub async fn settle(&self, hold: Option<Hold>, scopes: &[String], now: i64, amount: f64) {
        let amount = amount.max(0.0);
        let mut hold = hold;
        let spend_slots: Vec<Slot> = scopes
            .iter()
            .flat_map(|scope| {
                [BudgetPeriod::Day, BudgetPeriod::Month]
                    .map(|period| (scope.clone(), period, period_start(period, now)))
            })
            .collect();
        let shared_hold = self.settle_local(hold.as_mut(), &spend_slots, amount);
        let Some(redis) = &self.redis else { return };
        let (held, reserved) = match &shared_hold {
            Some(hold) => (hold.slots.iter().map(|(s, p, t)| counter("held", s, *p, *t)).collect(), hold.amount),
            None => (Vec::new(), 0.0),
        };
        let spend: Vec<String> = spend_slots.iter().map(|(s, p, t)| counter("spend", s, *p, *t)).collect();
        if held.is_empty() && amount <= 0.0 {
            return;
        }
        if let Err(error) = redis.settle(&held, &spend, reserved, amount, SPEND_TTL_SECS).await {
            tracing::warn!(%error, amount, reserved, "redis settle failed: the spend is in the ledger, the hold expires");
        }
    }

    /// Books `amount` in the local counters and releases a local hold; returns a hold that
    /// lives in Redis (marked settled either way).
    fn settle_local<'a>(&self, hold: Option<&'a mut Hold>, spend: &[Slot], amount: f64) -> Option<&'a mut Hold> {
        let mut counters = lock(&self.local);
        for slot in spend {
            counters.entry(slot.clone()).or_default().spent += amount;
        }
        let hold = hold?;
        hold.settled = true;
        if hold.shared {
            return Some(hold);
        }
        for slot in &hold.slots {
            if let Some(counter) = counters.get_mut(slot) {
                counter.held = (counter.held - hold.amount).max(0.0);
            }
        }
        None
    }

    /// Releases a hold nobody settled.
    fn release(self: Arc<Self>, slots: Vec<Slot>, amount: f64, shared: bool) {
        if !shared {
            let mut counters = lock(&self.local);
            for slot in &slots {
                if let Some(counter) = counters.get_mut(slot) {
                    counter.held = (counter.held - amount).max(0.0);
                }
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Some(redis) = &self.redis {
                let held: Vec<String> = slots.iter().map(|(s, p, t)| counter("held", s, *p, *t)).collect();
                if let Err(error) = redis.settle(&held, &[], amount, 0.0, SPEND_TTL_SECS).await {
                    tracing::warn!(%error, "redis hold release failed: the hold expires");
                }
            }
        });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled {
            self.book.clone().release(std::mem::take(&mut self.slots), self.amount, self.shared);
        }
    }
}

/// The most a request can cost: its prompt's token bound and `n` × `max_tokens` for every
/// prompt (`reserve_max_tokens` without one), at its model's price, or at the highest prices
/// in the table for a model without one (an alias, `auto`, a default model).
pub fn max_cost(config: &GatewayConfig, request: &impl ApiRequest) -> f64 {
    let prompt = request.prompt_token_bound();
    let per_choice = request.max_tokens().map_or(config.reserve_max_tokens, |max| max as u64);
    let choices = (request.sampling().choices() as u64).saturating_mul(request.prompt_count() as u64);
    let completion = per_choice.saturating_mul(choices);
    if let Some(model) = request.model().filter(|model| config.prices.contains_key(*model)) {
        return config.cost(model, prompt, 0, completion);
    }
    let (input, output) = config.prices.values().fold((0.0_f64, 0.0_f64), |(input, output), price| {
        (input.max(price.input).max(price.cached_input), output.max(price.output))
    });
    let priciest = (prompt as f64 * input + completion as f64 * output) / 1e6;
    priciest.max(config.cost("", prompt, 0, completion))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `sconce:spend:…` or `sconce:held:…` for a scope's period.
fn counter(kind: &str, scope: &str, period: BudgetPeriod, start: i64) -> String {
    format!("sconce:{kind}:{scope}:{}:{start}", period.as_str())
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
        book.settle(None, &["key:a".into()], 100, 0.5).await;
        book.settle(None, &["key:a".into()], 200, 0.25).await;
        assert!((book.spent("key:a", BudgetPeriod::Day, 300).await - 0.75).abs() < 1e-12);
        assert_eq!(book.spent("key:a", BudgetPeriod::Day, 86_400 + 5).await, 0.0);
    }

    fn limit(max: f64) -> Vec<BudgetLimit> {
        vec![BudgetLimit { scope: "key:a".into(), period: BudgetPeriod::Day, max }]
    }

    #[tokio::test]
    async fn holds_count_until_settled_and_a_dropped_hold_is_released() {
        let book = Arc::new(SpendBook::new(None));
        let first = book.reserve(&limit(1.0), 10, 0.4).await.unwrap();
        let second = book.reserve(&limit(1.0), 10, 0.4).await.unwrap();
        assert_eq!(book.reserve(&limit(1.0), 10, 0.4).await.unwrap_err(), Refusal::Over(0), "0.8 held + 0.4 > 1");
        book.settle(Some(first), &["key:a".into()], 10, 0.1).await;
        let third = book.reserve(&limit(1.0), 10, 0.4).await.unwrap();
        drop(second);
        drop(third);
        assert!((book.spent("key:a", BudgetPeriod::Day, 10).await - 0.1).abs() < 1e-12);
        let whole = book.reserve(&limit(1.0), 10, 0.9).await.unwrap();
        assert_eq!(whole.amount(), 0.9, "every hold but the settled spend was released");
    }

    #[tokio::test]
    async fn concurrent_reservations_never_cross_the_budget() {
        let book = Arc::new(SpendBook::new(None));
        let tries = (0..20).map(|_| {
            let book = book.clone();
            tokio::spawn(async move { book.reserve(&limit(1.0), 10, 0.3).await.ok() })
        });
        let held: Vec<Hold> = futures_util::future::join_all(tries).await.into_iter().flatten().flatten().collect();
        assert_eq!(held.len(), 3, "three holds of 0.3 fit in 1.0, a fourth does not");
    }
}
