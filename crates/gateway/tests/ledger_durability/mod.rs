//! The spool on a real SQLite file: in-flight rows carry the tokens known at each flush, a
//! spool left by a killed process is replayed once, unwritable rows are counted and kept,
//! and the migrations stay as applied.

use std::sync::Arc;
use std::time::Instant;

use sconce_gateway::config::{GatewayConfig, LedgerConfig, Price};
use sconce_gateway::ledger::{Admission, Ledger, RowState, UsageRecord};
use sconce_gateway::store::{migration_checksums, Store};
use sconce_gateway::Journal;

use super::{admitted, row};

struct Db {
    dir: tempfile::TempDir,
    url: String,
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        Self { dir, url }
    }

    fn spool(&self) -> std::path::PathBuf {
        self.dir.path().join("ledger.spool")
    }

    /// A long batch interval: only flushes write.
    fn config(&self) -> LedgerConfig {
        LedgerConfig { batch_interval_ms: 60_000, spool_path: Some(self.spool()), ..LedgerConfig::default() }
    }

    async fn rows(&self) -> Vec<UsageRecord> {
        let store = Store::open(&self.url).await.unwrap();
        let mut rows = store.usage(0, i64::MAX, None).await.unwrap();
        store.close().await;
        rows.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        rows
    }

    /// What a killed process left in its spool slot.
    fn leave_spool(&self, rows: &[UsageRecord]) {
        let lines: Vec<String> = rows.iter().map(|row| serde_json::to_string(row).unwrap()).collect();
        std::fs::write(format!("{}.0", self.spool().display()), lines.join("\n") + "\n").unwrap();
    }
}

fn priced() -> Arc<GatewayConfig> {
    let mut config = GatewayConfig::default();
    config.prices.insert("m".into(), Price { input: 1.0, cached_input: 0.5, output: 2.0 });
    Arc::new(config)
}

#[tokio::test]
async fn in_flight_rows_carry_the_tokens_known_at_each_flush_and_complete_once() {
    let db = Db::new();
    let store = Store::open(&db.url).await.unwrap();
    let ledger = Ledger::open(store.clone(), &db.config()).await.unwrap();
    let journal = Arc::new(Journal::default());
    let row = admitted("live", "k", 0);
    ledger.admit(Admission { row, journal: journal.clone(), received: Instant::now(), pricing: priced() });
    journal.live.set_prompt(10, 2);
    journal.live.add_completion(5);
    ledger.flush().await;
    let live = &db.rows().await[0];
    assert_eq!(
        (live.state, live.prompt_tokens, live.cached_tokens, live.completion_tokens),
        (RowState::Admitted, 10, 2, 5)
    );
    assert!(live.cost > 0.0);
    let spooled = std::fs::read_to_string(format!("{}.0", db.spool().display())).unwrap();
    let spooled: Vec<UsageRecord> = spooled.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(spooled.as_slice(), std::slice::from_ref(live), "the emptied spool still holds the running request");
    journal.live.add_completion(3);
    ledger.flush().await;
    assert_eq!(db.rows().await[0].completion_tokens, 8);
    assert_eq!(ledger.in_flight(), 1);

    let done = UsageRecord { latency_s: 1.5, ..super::row("live", "k", 8) };
    assert!(ledger.complete(done, &journal));
    assert_eq!(ledger.in_flight(), 0, "completion leaves nothing in flight");
    ledger.flush().await;
    let done = &db.rows().await[0];
    assert_eq!((done.state, done.prompt_tokens, done.completion_tokens), (RowState::Done, 8, 8));
    ledger.close().await;
    let spooled = std::fs::read(format!("{}.0", db.spool().display())).unwrap();
    assert!(spooled.is_empty(), "a commit with nothing pending empties the spool");
}

#[tokio::test]
async fn a_spool_left_by_a_killed_process_is_replayed_once_and_marks_interrupted() {
    let db = Db::new();
    let store = Store::open(&db.url).await.unwrap();
    // The killed process had flushed `a` with 7 tokens; `b` never reached the database; `c`
    // completed, but its completion was not committed.
    store.insert_usage(&[admitted("a", "k", 7)]).await.unwrap();
    let spooled = [admitted("a", "k", 0), admitted("b", "k", 0), admitted("c", "k", 0), row("c", "k", 9)];
    db.leave_spool(&spooled);
    Ledger::open(store.clone(), &db.config()).await.unwrap().close().await;
    let rows = db.rows().await;
    let seen: Vec<(&str, RowState, u64)> =
        rows.iter().map(|r| (r.request_id.as_str(), r.state, r.completion_tokens)).collect();
    assert_eq!(seen, [("a", RowState::Interrupted, 7), ("b", RowState::Interrupted, 0), ("c", RowState::Done, 9)]);
    // The same spool again (as if emptying it had failed): nothing changes.
    db.leave_spool(&spooled);
    Ledger::open(store.clone(), &db.config()).await.unwrap().close().await;
    assert_eq!(db.rows().await, rows);
    store.close().await;
}

#[tokio::test]
async fn rows_that_cannot_be_written_are_counted_and_kept_for_the_next_start() {
    let db = Db::new();
    let store = Store::open(&db.url).await.unwrap();
    let ledger = Ledger::open(store.clone(), &db.config()).await.unwrap();
    let admin = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE usage_ledger RENAME TO usage_ledger_away").execute(&admin).await.unwrap();
    assert!(ledger.record(row("lost", "k", 4)));
    ledger.flush().await;
    assert_eq!(ledger.dropped(), 1);
    sqlx::query("ALTER TABLE usage_ledger_away RENAME TO usage_ledger").execute(&admin).await.unwrap();
    admin.close().await;
    ledger.close().await;
    assert!(db.rows().await.is_empty());

    let ledger = Ledger::open(store.clone(), &db.config()).await.unwrap();
    assert_eq!(ledger.dropped(), 0);
    ledger.close().await;
    let rows = db.rows().await;
    assert_eq!((rows.len(), rows[0].request_id.as_str(), rows[0].completion_tokens), (1, "lost", 4));
    store.close().await;
}

#[tokio::test]
async fn a_live_process_keeps_its_spool_and_another_takes_the_next_slot() {
    let db = Db::new();
    let store = Store::open(&db.url).await.unwrap();
    let first = Ledger::open(store.clone(), &db.config()).await.unwrap();
    let journal = Arc::new(Journal::default());
    first.admit(Admission { row: admitted("running", "k", 0), journal, received: Instant::now(), pricing: priced() });
    let second = Ledger::open(store.clone(), &db.config()).await.unwrap();
    second.close().await;
    first.flush().await;
    let rows = db.rows().await;
    let states: Vec<RowState> = rows.iter().map(|row| row.state).collect();
    assert_eq!(states, [RowState::Admitted], "another process does not replay a live one's spool");
    assert!(std::path::Path::new(&format!("{}.1", db.spool().display())).exists());
    first.close().await;
    store.close().await;
}

/// Editing a migration that databases have applied makes them refuse to open: these are
/// the checksums sqlx recorded. Add a migration instead.
#[test]
fn applied_migrations_keep_their_checksums() {
    let pinned: [(i64, &str); 7] = [
        (1, "5ce7e81f3d10ca6e1c7e8ddf6fc42db7f6693038bc46ee7148765abadcf6c3f42626e7d79d64d745e90d5a379801bcd9"),
        (2, "b5dfdf4ee6314cbfc519831cf9239fe13288959fcd57f7529307e5ce676653f695e17eccedd002d2dc636009031cb524"),
        (3, "b6e4ab09d3ec2d4cda6b4095cc775a4456e5628cf8defa1fd44723a7e5523bb4244881b1c3a4d963fb92586138f26480"),
        (4, "f41d8b62c9ac5ad28fe8c29f42232f76b636285ddf0e2df6cbec178c90cbf74727835a479fb7f0fa7bce04123307905f"),
        (5, "89b1e5414ea4bc7c6c8cae175682d83018f3a65cd4d28dbf3b6a77358a9f31f10cbde4f687cede62dd35e2c5e8609a78"),
        (6, "bda99fb09bb6ff7763c54d3410daeefc68166e8b2386572357c0401781a7a07dca8e57e928d8eed2f7417a0c4dcba352"),
        (7, "10d35fe5e8ecf620efb5231f6dccf51936a0aab5273974969cfbbe80a88fb3f1d8fcfdc2588fec6d2f5d1c3d24ad2757"),
    ];
    let checksums = migration_checksums();
    let actual: Vec<(i64, &str)> = checksums.iter().map(|(version, sum)| (*version, sum.as_str())).collect();
    assert_eq!(actual, pinned);
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_binary_still_opens_and_old_rows_read_as_done() {
    let db = Db::new();
    Store::open(&db.url).await.unwrap().close().await;
    let admin = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let newer = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (9999, 'from a newer binary', TRUE, X'00', 0)";
    sqlx::query(newer).execute(&admin).await.unwrap();
    // A row as a binary from before the `state` column writes it.
    let old = "INSERT INTO usage_ledger (request_id, ts, model, key_id, key_alias, team, user_id, status, \
               finish_reason, prompt_tokens, completion_tokens, cached_tokens, cost, ttft_s, tpot_s, latency_s, \
               overhead_s) VALUES ('old', 1, 'm', 'k', 'k', 't', '', 200, 'stop', 1, 2, 0, 0.0, 0.0, 0.0, 0.0, 0.0)";
    sqlx::query(old).execute(&admin).await.unwrap();
    admin.close().await;
    let rows = db.rows().await;
    assert_eq!((rows.len(), rows[0].state), (1, RowState::Done));
}
