//! External services for tests (Redis, Postgres), found through `SCONCE_TEST_*` variables.
//! `.ci/run` starts them; in CI a missing one fails the test instead of skipping it.

use sqlx::{Connection, Executor, PgConnection};

/// The service URL in `var`; in CI its absence is a failure, not a skip.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("CI is set but {var} is not"),
        _ => {
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

/// A new, empty database on the server at `SCONCE_TEST_POSTGRES_URL`, so tests running at
/// once never see each other's keys or rows. Its URL, or none where the variable is unset.
pub async fn fresh_postgres_database() -> Option<String> {
    let base = service_url("SCONCE_TEST_POSTGRES_URL")?;
    let name = format!("sconce_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base).await.unwrap();
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    admin.close().await.unwrap();
    Some(with_database(&base, &name))
}

/// Drops a database made by [`fresh_postgres_database`] (its pools must be closed).
pub async fn drop_postgres_database(url: &str) {
    let base = std::env::var("SCONCE_TEST_POSTGRES_URL").unwrap();
    let name = database_name(url);
    let mut admin = PgConnection::connect(&base).await.unwrap();
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
    admin.close().await.unwrap();
}

/// `postgres://user:pass@host:port/old?opts` with `old` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(head, query)| (head, Some(query)));
    let authority_end = head.find("://").map_or(0, |scheme| scheme + 3);
    let path_start = head[authority_end..].find('/').map_or(head.len(), |slash| authority_end + slash);
    let mut out = format!("{}/{name}", &head[..path_start]);
    if let Some(query) = query {
        out = format!("{out}?{query}");
    }
    out
}

fn database_name(url: &str) -> &str {
    let head = url.split('?').next().unwrap_or(url);
    head.rsplit('/').next().unwrap_or(head)
}
