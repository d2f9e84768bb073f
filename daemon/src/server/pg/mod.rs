//! The PostgreSQL store: connection pool, schema, and the library as the neutral
//! record stream of [`super::dump`] (docs/scale-out.md).
//!
//! ```text
//! pg/mod.rs          Pg: parse a postgres:// URL, a deadpool pool of tokio-postgres
//!                    connections, the schema applied at connect; one-line errors
//! pg/schema.rs       the embedded migrations (migrations/NNNN_name.sql) and their runner
//! pg/records.rs      read a whole store into a Dump, load a Dump into an empty one
//! pg/tls.rs          TLS to the database: libpq's sslmode / sslrootcert / sslcert /
//!                    sslkey over rustls
//! pg/serve.rs        PgStore: the Store operations on a shared database (serve
//!                    --store), claims under leases, the lease sweep, heartbeats
//! migrations/*.sql   the schema, one file per version
//! ```
//!
//! What exists now is what `ddimd migrate` needs (docs/daemon.md, Moving a library);
//! the schema is already the one N daemons will share (claims, leases, the fleet),
//! so the backend that serves from it adds queries, not tables.
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{Result, ServerError};

mod reach;
mod records;
mod schema;
mod serve;
pub mod tls;

pub use reach::{Backoff, Reach, Wake};
pub use records::{load, read, Counts};
pub use schema::{migrate, Migration, MIGRATIONS};
pub(crate) use serve::png_expected;
pub use serve::{progress_note, PreviewNote, ProgressNote, NOTIFY_MAX, PROGRESS};
pub use serve::{Claimed, Note, PgStore, JOBS_CHANNEL, LIBRARY_CHANNEL, QUEUE_CHANNEL};

/// Whether `s` names a PostgreSQL database rather than a folder.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // userinfo ends at the last '@' before the first '/' of the path.
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A PostgreSQL error as one line: the server's message with its detail and hint,
/// or the client's error with its causes (`error connecting to server: Connection
/// refused (os error 111)`).
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        return one_line(&s);
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    one_line(&s)
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A failed statement: [`ServerError::Database`] naming what was being done.
pub(crate) fn db_err(what: &str) -> impl Fn(tokio_postgres::Error) -> ServerError + '_ {
    move |e| {
        // A connection that closed or broke under the statement: the database is
        // away (UNAVAILABLE, retry), not a fault of the request or the data.
        let io = std::iter::successors(std::error::Error::source(&e), |c| c.source())
            .any(|c| c.is::<std::io::Error>());
        if e.is_closed() || io || server_going_away(&e) {
            ServerError::Unavailable(format!("{what}: the database: {}", error_text(&e)))
        } else {
            ServerError::Database(format!("{what}: {}", error_text(&e)))
        }
    }
}

/// The server ending the session because it stops, restarts or is not accepting
/// connections yet (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot
/// connect now), or a connection exception (class `08`): the database is away, as
/// for a closed socket.
fn server_going_away(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        ["57P01", "57P02", "57P03"].contains(&c) || c.starts_with("08")
    })
}

/// What [`Pg::connect`] does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Create it or bring it up to date (a daemon, a migration's target).
    Migrate,
    /// There must be a store already (a migration's source): a database without one
    /// is an error, so a mistyped database name is not silently given tables.
    Existing,
}

/// A PostgreSQL store: a pool of connections to one database whose schema is
/// this build's.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    /// The connection settings (for a dedicated LISTEN connection).
    cfg: std::sync::Arc<tokio_postgres::Config>,
    /// The TLS side of every connection (see [`tls`]).
    tls: MakeRustlsConnect,
    /// The URL without its password.
    shown: String,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("url", &self.shown).finish()
    }
}

/// How long a connection attempt waits for the server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sent data may go unacknowledged before the connection is given up
/// (unless the URL sets `tcp_user_timeout`), and the longest an idle connection
/// stays silent before TCP keepalive probes it (`keepalives_idle` is capped at it).
pub const TCP_TIMEOUT: Duration = Duration::from_secs(30);

impl Pg {
    /// Connects to `url` (`postgres://USER:PASSWORD@HOST:PORT/DB`, or any form
    /// libpq accepts as a URL) with a pool of at most `pool_size` connections, and
    /// applies the schema's migrations (see [`schema`]). `flag` names the setting in
    /// errors (`--to`). A malformed URL and an unreachable server are
    /// [`ServerError::Config`], one line naming the URL (password hidden).
    pub async fn connect(url: &str, flag: &str, pool_size: usize, schema: Schema) -> Result<Pg> {
        let shown = redact(url);
        // libpq's TLS settings out of the URL first: tokio-postgres knows only some.
        let (url, tls) =
            tls::take(url).map_err(|e| ServerError::Config(format!("{flag} {shown}: {e}")))?;
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            ServerError::Config(format!(
                "{flag} {shown}: not a PostgreSQL URL ({}); expected postgres://USER:PASSWORD@HOST:PORT/DB",
                error_text(&e)
            ))
        })?;
        // As libpq: no user in the URL is PGUSER, else the login name; no password is
        // PGPASSWORD (so it need not sit in a command line that `ps` shows).
        if cfg.get_user().is_none() {
            let user = ["PGUSER", "USER", "LOGNAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| "postgres".into());
            cfg.user(user);
        }
        if cfg.get_password().is_none() {
            if let Ok(p) = std::env::var("PGPASSWORD") {
                cfg.password(p);
            }
        }
        cfg.ssl_mode(tls.mode.ssl_mode());
        let connector = tls
            .connector()
            .map_err(|e| ServerError::Config(format!("{flag} {shown}: {e}")))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        // A cut network: a statement waiting on a peer that went silent fails after
        // TCP_TIMEOUT (not the kernel's ~15 min of retransmissions), and an idle
        // connection (the LISTEN one) is probed after TCP_TIMEOUT of silence; then
        // the daemon sees the database as away and reconnects (docs/scale-out.md).
        if cfg.get_tcp_user_timeout().is_none() {
            cfg.tcp_user_timeout(TCP_TIMEOUT);
        }
        if cfg.get_keepalives_idle() > TCP_TIMEOUT {
            cfg.keepalives_idle(TCP_TIMEOUT);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("ddimd");
        }
        let mgr = Manager::from_config(
            cfg.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| ServerError::Internal(format!("connection pool: {e}")))?;
        let pg = Pg {
            pool,
            cfg: std::sync::Arc::new(cfg),
            tls: connector,
            shown: shown.clone(),
        };
        let mut c = pg.client().await.map_err(|e| match e {
            ServerError::Unavailable(m) => ServerError::Config(format!("{flag} {m}")),
            e => e,
        })?;
        match schema {
            Schema::Migrate => {
                schema::migrate(&mut c).await?;
            }
            Schema::Existing => {
                if schema::version(&c).await?.is_none() {
                    return Err(ServerError::Config(format!(
                        "{flag} {shown}: no ddimd store in that database (no schema_version table)"
                    )));
                }
                schema::migrate(&mut c).await?;
            }
        }
        Ok(pg)
    }

    /// A connection from the pool; a server that cannot be reached is
    /// [`ServerError::Unavailable`] naming the URL.
    pub async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| {
            let mut why = match &e {
                PoolError::Backend(b) => error_text(b),
                e => e.to_string(),
            };
            if why.ends_with("invalid peer certificate: UnknownIssuer") {
                why.push_str(" (the server's certificate is not signed by the root certificates of sslrootcert)");
            }
            ServerError::Unavailable(format!("{}: cannot connect: {why}", self.shown))
        })
    }

    /// The connection settings of the pool.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.cfg
    }

    /// The TLS connector of the pool's connections, for one made outside it.
    pub fn tls(&self) -> &MakeRustlsConnect {
        &self.tls
    }

    /// The URL, password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The whole store as records (see [`records::read`]).
    pub async fn read(&self) -> Result<super::dump::Dump> {
        let mut c = self.client().await?;
        records::read(&mut c).await
    }

    /// Writes `dump` into the store, which must be empty (see [`records::load`]).
    pub async fn load(&self, dump: &super::dump::Dump) -> Result<()> {
        let mut c = self.client().await?;
        records::load(&mut c, dump).await
    }

    /// Latents, jobs and the next id.
    pub async fn counts(&self) -> Result<Counts> {
        let c = self.client().await?;
        records::counts(&**c).await
    }

    /// A fresh id, unique across every daemon on this database.
    pub async fn next_id(&self) -> Result<u64> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT nextval('ids')", &[])
            .await
            .map_err(db_err("next id"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_and_redacted() {
        assert!(is_url("postgres://u@h/db"));
        assert!(is_url("postgresql://u@h/db"));
        assert!(!is_url("/var/lib/ddimd"));
        assert_eq!(
            redact("postgres://ddim:s3cr@t@db.lan:5432/lib"),
            "postgres://ddim:***@db.lan:5432/lib"
        );
        assert_eq!(redact("postgres://ddim@h:1/x"), "postgres://ddim@h:1/x");
        assert_eq!(redact("postgres://h/x?user=a"), "postgres://h/x?user=a");
    }

    #[test]
    fn bad_tls_settings_are_refused_before_connecting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Port 1: nothing listens; the refusal must come before any connection.
        for (q, want) in [
            ("sslmode=verify-full", "needs root certificates"),
            (
                "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem: cannot read",
            ),
        ] {
            let url = format!("postgres://ddim:secret@127.0.0.1:1/ddim?{q}");
            let e = rt
                .block_on(Pg::connect(&url, "--store", 1, Schema::Migrate))
                .expect_err(q);
            let m = e.to_string();
            assert!(matches!(e, ServerError::Config(_)), "{e:?}");
            assert!(
                m.contains("--store postgres://ddim:***@127.0.0.1:1/ddim") && m.contains(want),
                "{m}"
            );
            assert!(!m.contains("secret") && !m.contains('\n'), "{m}");
        }
    }
}
