//! The SQL side of history: one `events` table on PostgreSQL or SQLite, through sqlx's `Any`
//! driver so both run the same statements. Migrations are embedded and run at start.

use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row as _};

/// An event ready to store.
#[derive(Debug, Clone)]
pub struct Row {
    /// The stream sequence.
    pub counter: u64,
    /// The room id.
    pub room: String,
    /// `message`, `enter`, `exit` or `nickname`.
    pub kind: String,
    /// The event's JSON, counter included.
    pub body: String,
}

/// Which way to page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest events before a counter (or the newest of all).
    Before(Option<u64>),
    /// The oldest events after a counter.
    After(u64),
}

/// The history database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Checks that `url` names a database this store can use, without connecting: a mistyped
    /// URL is a configuration error to report at once, not an outage to wait out.
    ///
    /// # Errors
    /// When the URL does not parse.
    pub fn check_url(url: &str) -> anyhow::Result<()> {
        sqlx::any::install_default_drivers();
        AnyConnectOptions::from_str(url)
            .map(|_| ())
            .context("parsing the database URL")
    }

    /// Connects to `url` (`postgres://…` or `sqlite://…`, created if missing) and migrates.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let options = AnyConnectOptions::from_str(&url).context("parsing the database URL")?;
        let pool = AnyPoolOptions::new()
            // One writer for SQLite: it serialises writes anyway, and one connection never
            // meets a locked database.
            .max_connections(if sqlite { 1 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect_with(options)
            .await
            .context("connecting to the history database")?;
        if sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .context("enabling WAL")?;
        }
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("migrating the history database")?;
        Ok(Self { pool })
    }

    /// Stores rows in one statement (so one round trip per batch); rows already stored are
    /// left as they are.
    ///
    /// # Errors
    /// When the statement fails; then none of the rows is stored by it.
    pub async fn insert(&self, rows: &[Row]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = insert_statement(rows.len());
        let mut query = sqlx::query(&sql);
        for row in rows {
            query = query
                .bind(to_i64(row.counter))
                .bind(&row.room)
                .bind(&row.kind)
                .bind(&row.body);
        }
        query
            .execute(&self.pool)
            .await
            .context("inserting a batch of events")?;
        Ok(())
    }

    /// Up to `limit` event bodies of `room` in the direction of `page`, oldest first, and
    /// whether more lie that way.
    ///
    /// # Errors
    /// When the query fails.
    pub async fn page(
        &self,
        room: &str,
        page: Page,
        limit: usize,
    ) -> anyhow::Result<(Vec<String>, bool)> {
        let fetch = to_i64(limit as u64 + 1);
        let rows = match page {
            Page::Before(before) => {
                sqlx::query("SELECT body FROM events WHERE room = $1 AND counter < $2 ORDER BY counter DESC LIMIT $3")
                    .bind(room)
                    .bind(before.map_or(i64::MAX, to_i64))
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await
            }
            Page::After(after) => {
                sqlx::query("SELECT body FROM events WHERE room = $1 AND counter > $2 ORDER BY counter ASC LIMIT $3")
                    .bind(room)
                    .bind(to_i64(after))
                    .bind(fetch)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .context("reading a page of events")?;
        let has_more = rows.len() > limit;
        let mut bodies = rows
            .into_iter()
            .take(limit)
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading event bodies")?;
        if matches!(page, Page::Before(_)) {
            bodies.reverse();
        }
        Ok((bodies, has_more))
    }

    /// The last `limit` message events of `room` before `before`, oldest first (read through
    /// the messages-only index, so other events in the room cost nothing).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn recent_messages(
        &self,
        room: &str,
        before: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(RECENT_MESSAGES)
            .bind(room)
            .bind(to_i64(before))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .context("reading recent messages")?;
        let mut bodies = rows
            .into_iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .context("reading message bodies")?;
        bodies.reverse();
        Ok(bodies)
    }

    /// Every stored counter of `room`, in order (for checks and tests).
    ///
    /// # Errors
    /// When the query fails.
    pub async fn counters(&self, room: &str) -> anyhow::Result<Vec<u64>> {
        let rows = sqlx::query("SELECT counter FROM events WHERE room = $1 ORDER BY counter")
            .bind(room)
            .fetch_all(&self.pool)
            .await
            .context("reading counters")?;
        rows.into_iter()
            .map(|row| {
                row.try_get::<i64, _>(0)
                    .map(|c| u64::try_from(c).unwrap_or(0))
            })
            .collect::<Result<Vec<_>, _>>()
            .context("reading counters")
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `INSERT ... VALUES ($1, $2, $3, $4), ($5, ...) ON CONFLICT (counter) DO NOTHING` for `rows`
/// rows. Numbered placeholders suit both PostgreSQL and SQLite (sqlx's `Any` query builder would
/// write `?`, which PostgreSQL refuses).
fn insert_statement(rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from("INSERT INTO events (counter, room, kind, body) VALUES ");
    for row in 0..rows {
        let first = row * 4 + 1;
        let separator = if row == 0 { "" } else { ", " };
        let _ = write!(
            sql,
            "{separator}(${first}, ${}, ${}, ${})",
            first + 1,
            first + 2,
            first + 3
        );
    }
    sql.push_str(" ON CONFLICT (counter) DO NOTHING");
    sql
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The newest messages of a room before a counter, newest first.
const RECENT_MESSAGES: &str = "SELECT body FROM events WHERE room = $1 AND kind = 'message' AND counter < $2 ORDER BY counter DESC LIMIT $3";

#[cfg(test)]
mod tests {
    use super::*;

    fn row(counter: u64, body: &str) -> Row {
        Row {
            counter,
            room: "lobby".into(),
            kind: "message".into(),
            body: body.into(),
        }
    }

    #[test]
    fn the_statement_numbers_four_placeholders_per_row() {
        assert_eq!(
            insert_statement(2),
            "INSERT INTO events (counter, room, kind, body) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT (counter) DO NOTHING"
        );
    }

    /// A full batch in one statement on a real SQLite file; rows stored before, or twice in
    /// the batch (a redelivery), keep their first body.
    #[tokio::test]
    async fn a_batch_is_stored_once_in_one_statement() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        let store = Store::connect(&url).await.expect("connect");
        store
            .insert(&[row(2, "first")])
            .await
            .expect("first insert");
        let mut batch: Vec<Row> = (1..=256).map(|c| row(c, "batch")).collect();
        batch.push(row(7, "again"));
        store.insert(&batch).await.expect("batch insert");
        store
            .insert(&[])
            .await
            .expect("an empty batch is no statement");
        assert_eq!(
            store.counters("lobby").await.expect("counters"),
            (1..=256).collect::<Vec<_>>()
        );
        let (bodies, _) = store.page("lobby", Page::After(1), 6).await.expect("page");
        assert_eq!(
            bodies,
            ["first", "batch", "batch", "batch", "batch", "batch"]
        );
        store.close().await;
    }

    /// An enter's recent messages are read through the messages-only index: a room full of
    /// enter events is not walked for them.
    #[tokio::test]
    async fn recent_messages_are_read_through_the_messages_only_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        let store = Store::connect(&url).await.expect("connect");
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {RECENT_MESSAGES}"))
            .bind("lobby")
            .bind(1_i64)
            .bind(5_i64)
            .fetch_all(&store.pool)
            .await
            .expect("plan")
            .iter()
            .filter_map(|row| row.try_get::<String, _>(3).ok())
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("events_room_messages")),
            "the plan does not use the messages-only index: {plan:?}"
        );
        let mut rows: Vec<Row> = (1..=50).map(|c| row(c, "said")).collect();
        rows.extend((51..=80).map(|c| Row {
            kind: "enter".into(),
            ..row(c, "entered")
        }));
        store.insert(&rows).await.expect("insert");
        assert_eq!(
            store.recent_messages("lobby", 80, 2).await.expect("recent"),
            ["said", "said"]
        );
        store.close().await;
    }
}
