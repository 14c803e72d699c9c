//! The store on a real SQLite file and, where `SCONCE_TEST_POSTGRES_URL` is set, Postgres;
//! the ledger writer's batching, flush and full-queue accounting; admitted rows, the spool
//! and the migrations' checksums.
#![allow(clippy::unwrap_used)]

mod ledger_durability;

use sconce_gateway::config::LedgerConfig;
use sconce_gateway::keys::NewKey;
use sconce_gateway::ledger::{Ledger, RowState, UsageRecord};
use sconce_gateway::store::Store;

fn row(id: &str, key: &str, tokens: u64) -> UsageRecord {
    UsageRecord {
        request_id: id.into(),
        ts: 100,
        operation: "text_completion".into(),
        model: "m".into(),
        key_id: key.into(),
        key_alias: key.into(),
        team: "t".into(),
        status: 200,
        prompt_tokens: tokens,
        completion_tokens: tokens,
        cost: 0.5,
        ..UsageRecord::default()
    }
}

async fn exercise(store: Store, tag: &str) {
    let (_, key) =
        NewKey { alias: format!("a-{tag}"), team: "t".into(), rpm_limit: Some(5), ..NewKey::default() }.issue(1);
    store.insert_key(&key).await.unwrap();
    let stored = store.keys().await.unwrap().into_iter().find(|k| k.id == key.id).unwrap();
    assert_eq!(stored, key);
    assert_eq!(store.revoke_key(&key.alias, 2).await.unwrap(), 1);
    let key_id = format!("k-{tag}");
    let rows: Vec<_> = (0..10).map(|i| row(&format!("{tag}-{i}"), &key_id, i)).collect();
    store.insert_usage(&rows).await.unwrap();
    store.insert_usage(&rows[..1]).await.unwrap(); // a replayed row is ignored
    let read = store.usage(0, 1000, Some(&key_id)).await.unwrap();
    assert_eq!(read.len(), 10);
    assert!(read.iter().all(|r| r.operation == "text_completion"));
    assert_eq!(read.iter().map(|r| r.prompt_tokens).sum::<u64>(), 45);
    let spend = store.spend_since(0).await.unwrap();
    let mine = spend.iter().find(|(k, _, _)| *k == key_id).unwrap();
    assert!((mine.2 - 5.0).abs() < 1e-9);
    let mut again = row(&format!("{tag}-3"), &key_id, 4);
    again.latency_s = 9.0; // another request that reused the id: it is billed too
    let mut twice = again.clone();
    twice.ts = 101;
    store.insert_usage(&[again, twice]).await.unwrap();
    let reused =
        store.usage(0, 1000, Some(&key_id)).await.unwrap().into_iter().find(|r| r.request_id == format!("{tag}-3"));
    let reused = reused.unwrap();
    assert_eq!((reused.prompt_tokens, reused.completion_tokens), (3 + 8, 3 + 8));
    assert!((reused.cost - 1.5).abs() < 1e-9, "{}", reused.cost);
    admitted_rows(&store, tag, &key_id).await;
}

fn admitted(id: &str, key: &str, tokens: u64) -> UsageRecord {
    UsageRecord { state: RowState::Admitted, cost: 0.1, ..row(id, key, tokens) }
}

async fn stored(store: &Store, key: &str, id: &str) -> UsageRecord {
    store.usage(0, 1000, Some(key)).await.unwrap().into_iter().find(|r| r.request_id == id).unwrap()
}

/// An admission row is raised by refreshes and replaced (not added to) by its completion;
/// one left by a dead process becomes interrupted with the tokens it had.
async fn admitted_rows(store: &Store, tag: &str, key: &str) {
    let id = format!("{tag}-live");
    for tokens in [0, 7, 3] {
        store.insert_usage(&[admitted(&id, key, tokens)]).await.unwrap();
    }
    let live = stored(store, key, &id).await;
    assert_eq!((live.state, live.completion_tokens), (RowState::Admitted, 7), "a stale refresh never lowers");
    let done = UsageRecord { latency_s: 2.0, ..row(&id, key, 9) };
    store.insert_usage(std::slice::from_ref(&done)).await.unwrap();
    store.insert_usage(&[admitted(&id, key, 20), done.clone()]).await.unwrap(); // replayed
    let done = stored(store, key, &id).await;
    assert_eq!((done.state, done.prompt_tokens, done.completion_tokens), (RowState::Done, 9, 9));
    assert!((done.cost - 0.5).abs() < 1e-9, "{}", done.cost);

    let cut = format!("{tag}-cut");
    store.insert_usage(&[admitted(&cut, key, 5)]).await.unwrap();
    assert_eq!(store.mark_interrupted(&[cut.clone(), id.clone()]).await.unwrap(), 1);
    let cut_row = stored(store, key, &cut).await;
    assert_eq!((cut_row.state, cut_row.completion_tokens), (RowState::Interrupted, 5));
    assert_eq!(cut_row.finish_reason, "interrupted");
    store.insert_usage(&[admitted(&cut, key, 50)]).await.unwrap(); // a late replay
    assert_eq!(stored(store, key, &cut).await.completion_tokens, 5);
}

#[tokio::test]
async fn sqlite_store_round_trips_keys_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/ledger.db").display());
    exercise(Store::open(&url).await.unwrap(), "sqlite").await;
    // Reopening runs the migrations again, harmlessly.
    Store::open(&url).await.unwrap();
}

#[tokio::test]
async fn postgres_store_round_trips_keys_and_usage() {
    let url = match std::env::var("SCONCE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!("CI is set but SCONCE_TEST_POSTGRES_URL is not"),
        _ => {
            eprintln!("skipping: SCONCE_TEST_POSTGRES_URL is not set");
            return;
        }
    };
    let tag = format!("pg{}", std::process::id());
    exercise(Store::open(&url).await.unwrap(), &tag).await;
}

#[tokio::test]
async fn the_ledger_batches_flushes_and_counts_a_full_queue() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Store::open(&url).await.unwrap();
    let config =
        LedgerConfig { batch_interval_ms: 10_000, batch_size: 1000, channel_capacity: 4, ..LedgerConfig::default() };
    let ledger = Ledger::start(store.clone(), &config);
    let accepted = (0..10).filter(|i| ledger.record(row(&format!("r{i}"), "k", 1))).count();
    assert!((4..10).contains(&accepted));
    assert_eq!(ledger.dropped(), (10 - accepted) as u64);
    ledger.close().await;
    assert_eq!(store.usage(0, 1000, None).await.unwrap().len(), accepted);
}
