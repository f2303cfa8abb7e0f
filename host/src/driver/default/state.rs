//! The default driver's durable state: accepted dispatches — with the
//! attempt to run next, when it is due and the retry schedule they were
//! accepted under — dead letters and key-value buckets ([`super::buckets`]),
//! in one SQLite database in WAL mode under the node's state directory
//! (`busbar.db`, readable with the `sqlite3` shell). A hub without a state
//! directory keeps its buckets in a database in memory.
//!
//! One thread owns the database and commits what arrives together in one
//! transaction (group commit): a write returns once it is committed. With
//! `synchronous = NORMAL` a commit is safe against a crash of the process;
//! the WAL is synced to disk at each checkpoint, so a power loss can lose
//! the commits since the last one (as JetStream's default sync interval
//! can). A lock file keeps a second node out of a state in use, and a state
//! that cannot be read is refused at open, changing nothing.

use super::buckets::{self, KvAnswer, KvOp};
use crate::delivery::Headers;
use crate::delivery::failure::{Failure, FailureClass};
use crate::driver::DeadLetter;
use crate::keyvalue::KvError;
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The database file in a state directory.
pub const DATABASE: &str = "busbar.db";
/// The lock file in a state directory.
pub const LOCK: &str = "busbar.lock";
/// The schema this build writes; a state of another schema is refused.
const SCHEMA: i64 = 2;
/// How long a write waits for another process's (`busbar kv` on a running
/// node's state) before it fails.
const BUSY: Duration = Duration::from_secs(5);
/// Operations committed in one transaction at most.
const GROUP: usize = 512;

/// Why a state directory cannot be used. Nothing stored is changed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process holds the state.
    #[error(
        "the state in {dir} is in use by another busbar node{holder}: stop it, or give this node a `[node] state` directory of its own"
    )]
    InUse {
        /// The state directory.
        dir: String,
        /// ` (pid N)` when the lock file says.
        holder: String,
    },
    /// The directory or database cannot be written.
    #[error(
        "the state in {dir} cannot be written ({cause}): give `[node] state` a writable directory (is the disk read-only, or full?)"
    )]
    ReadOnly {
        /// The state directory.
        dir: String,
        /// What the system said.
        cause: String,
    },
    /// The database is damaged or not a busbar state.
    #[error(
        "the state database {path} cannot be read ({cause}); nothing was changed: restore it from a backup, or move it aside (`mv {path} {path}.damaged`) to start with an empty state"
    )]
    Damaged {
        /// The database file.
        path: String,
        /// What SQLite said.
        cause: String,
    },
    /// The database was written by a newer busbar.
    #[error("the state database {path} has schema {found}, this busbar knows {SCHEMA}: run the busbar that wrote it")]
    Schema {
        /// The database file.
        path: String,
        /// The schema it has.
        found: i64,
    },
    /// A write or read failed while running.
    #[error("the state database {path}: {cause}")]
    Io {
        /// The database file.
        path: String,
        /// What SQLite said.
        cause: String,
    },
    /// The state's thread is gone (the node is stopping).
    #[error("the state is closed")]
    Closed,
}

/// An accepted dispatch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The dispatch id.
    pub id: String,
    /// The service name.
    pub name: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Headers,
    /// The retry schedule it was accepted under; `None` for a dead letter
    /// replayed on a stopped node's state: the handler's schedule when it runs.
    pub retry: Option<Vec<Duration>>,
    /// The attempt to run next (from 1).
    pub attempt: u32,
    /// When that attempt may run.
    pub due: SystemTime,
}

/// One change or question, answered once committed.
enum Op {
    Accept(Job),
    Retry { id: String, attempt: u32, due: SystemTime },
    Done { id: String },
    Bury { letter: DeadLetter },
    Jobs,
    DeadLetters,
    TakeDead { name: String },
    Requeue { name: String, due: SystemTime },
    Kv(KvOp),
}

/// What an [`Op`] answers.
enum Answer {
    Done,
    /// Dead letters removed to stay within the limits.
    Dropped(Vec<DeadLetter>),
    Jobs(Vec<Job>),
    Letters(Vec<DeadLetter>),
    Kv(Result<KvAnswer, KvError>),
}

type Reply = tokio::sync::oneshot::Sender<Result<Answer, StateError>>;

/// An open state: the database's thread and the lock, held until dropped.
pub struct State {
    ops: std::sync::mpsc::Sender<(Op, Reply)>,
    dir: PathBuf,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl State {
    /// Opens (creating if need be) the state in `dir`, or says why not.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Self::open_keeping(dir, Keep::default())
    }

    /// [`State::open`], keeping at most `keep` of dead letters.
    fn open_keeping(dir: &Path, keep: Keep) -> Result<Self, StateError> {
        let shown = dir.display().to_string();
        let read_only = |e: &dyn std::fmt::Display| StateError::ReadOnly { dir: shown.clone(), cause: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| read_only(&e))?;
        restrict_to_owner(dir);
        let lock = lock(dir)?;
        let path = dir.join(DATABASE);
        let conn = open_database(&path, &shown)?;
        Self::serving(conn, path.display().to_string(), keep, Some(lock), dir.to_path_buf())
    }

    /// Starts the database's thread on `conn` (at `path`, for messages),
    /// which holds `lock`, if any, until the last handle is dropped.
    fn serving(
        conn: Connection,
        path: String,
        keep: Keep,
        lock: Option<std::fs::File>,
        dir: PathBuf,
    ) -> Result<Self, StateError> {
        let (ops, incoming) = std::sync::mpsc::channel();
        let shown = path.clone();
        std::thread::Builder::new()
            .name("busbar-state".into())
            .spawn(move || {
                let _lock = lock;
                serve(conn, &shown, keep, &incoming);
            })
            .map_err(|e| StateError::Io { path, cause: e.to_string() })?;
        Ok(Self { ops, dir })
    }

    /// A state in memory, for a hub without a state directory: it keeps
    /// only key-value buckets, and only while the process runs.
    pub fn in_memory() -> Result<Self, StateError> {
        let io = |e: &dyn std::fmt::Display| StateError::Io { path: ":memory:".into(), cause: e.to_string() };
        let conn = Connection::open_in_memory().map_err(|e| io(&e))?;
        migrate(&conn, 0).map_err(|e| io(&e))?;
        Self::serving(conn, ":memory:".into(), Keep::default(), None, PathBuf::new())
    }

    /// The state directory (empty for a state in memory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one bucket operation, atomically.
    pub(crate) async fn kv(&self, op: KvOp) -> Result<KvAnswer, KvError> {
        match self.ask(Op::Kv(op)).await {
            Ok(Answer::Kv(answer)) => answer,
            Ok(_) => Err(KvError::Unavailable("the state answered another question".into())),
            Err(e) => Err(KvError::Unavailable(e.to_string())),
        }
    }

    async fn ask(&self, op: Op) -> Result<Answer, StateError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.ops.send((op, reply)).map_err(|_| StateError::Closed)?;
        answer.await.map_err(|_| StateError::Closed)?
    }

    /// Stores an accepted dispatch; returns once it is committed.
    pub async fn accept(&self, job: Job) -> Result<(), StateError> {
        self.ask(Op::Accept(job)).await.map(|_| ())
    }

    /// Records that dispatch `id` runs attempt `attempt` next, at `due`.
    pub async fn retry(&self, id: &str, attempt: u32, due: SystemTime) -> Result<(), StateError> {
        self.ask(Op::Retry { id: id.into(), attempt, due }).await.map(|_| ())
    }

    /// Removes dispatch `id`: it succeeded.
    pub async fn done(&self, id: &str) -> Result<(), StateError> {
        self.ask(Op::Done { id: id.into() }).await.map(|_| ())
    }

    /// Removes dispatch `letter.id` and keeps `letter`, in one commit;
    /// returns the oldest letters removed to stay within the driver's
    /// [`super::DEAD_LETTER_LIMIT`] and [`super::DEAD_LETTER_BYTES`] (never
    /// the new one).
    pub async fn bury(&self, letter: DeadLetter) -> Result<Vec<DeadLetter>, StateError> {
        match self.ask(Op::Bury { letter }).await? {
            Answer::Dropped(dropped) => Ok(dropped),
            _ => Ok(Vec::new()),
        }
    }

    /// Every stored dispatch, oldest first.
    pub async fn jobs(&self) -> Result<Vec<Job>, StateError> {
        match self.ask(Op::Jobs).await? {
            Answer::Jobs(jobs) => Ok(jobs),
            _ => Ok(Vec::new()),
        }
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StateError> {
        match self.ask(Op::DeadLetters).await? {
            Answer::Letters(letters) => Ok(letters),
            _ => Ok(Vec::new()),
        }
    }

    /// Turns the dead letters of `name` back into dispatches, due at `due`
    /// with attempt 1 and the handler's schedule at the time they run;
    /// returns how many (for `busbar dead-letters replay` on a stopped node).
    pub async fn requeue_dead_letters(&self, name: &str, due: SystemTime) -> Result<usize, StateError> {
        match self.ask(Op::Requeue { name: name.into(), due }).await? {
            Answer::Letters(letters) => Ok(letters.len()),
            _ => Ok(0),
        }
    }

    /// Removes and returns the dead letters of `name`.
    pub async fn take_dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, StateError> {
        match self.ask(Op::TakeDead { name: name.into() }).await? {
            Answer::Letters(letters) => Ok(letters),
            _ => Ok(Vec::new()),
        }
    }
}

/// The lock file of `dir`, locked for this process (released when the
/// file is closed, also by a crash).
fn lock(dir: &Path) -> Result<std::fs::File, StateError> {
    use rustix::fs::{FlockOperation, flock};
    use std::io::{Read, Seek, Write};
    let shown = dir.display().to_string();
    let path = dir.join(LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StateError::ReadOnly { dir: shown.clone(), cause: e.to_string() })?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let holder = pid.trim().parse::<u32>().map(|p| format!(" (pid {p})")).unwrap_or_default();
        return Err(StateError::InUse { dir: shown, holder });
    }
    let written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{}", std::process::id()));
    written.map_err(|e| StateError::ReadOnly { dir: shown, cause: e.to_string() })?;
    Ok(file)
}

/// Opens and checks the database at `path`, creating its tables if new.
fn open_database(path: &Path, dir: &str) -> Result<Connection, StateError> {
    let shown = path.display().to_string();
    let damaged = |e: rusqlite::Error| StateError::Damaged { path: shown.clone(), cause: e.to_string() };
    let refused = |e: rusqlite::Error| {
        let text = e.to_string();
        if text.contains("readonly") || text.contains("read-only") || text.contains("unable to open") {
            StateError::ReadOnly { dir: dir.to_string(), cause: text }
        } else {
            StateError::Damaged { path: shown.clone(), cause: text }
        }
    };
    let conn = Connection::open(path).map_err(refused)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(refused)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::ReadOnly { dir: dir.to_string(), cause: format!("journal mode {mode}, not WAL") });
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(refused)?;
    conn.busy_timeout(BUSY).map_err(refused)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(damaged)?;
    if check != "ok" {
        return Err(StateError::Damaged { path: shown, cause: check });
    }
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(damaged)?;
    if found > SCHEMA {
        return Err(StateError::Schema { path: shown, found });
    }
    migrate(&conn, found).map_err(refused)?;
    Ok(conn)
}

/// Brings a database of schema `found` (0: new) to [`SCHEMA`], in one
/// transaction: version 1 has the jobs and dead letters, 2 adds buckets.
fn migrate(conn: &Connection, found: i64) -> Result<(), rusqlite::Error> {
    if found == SCHEMA {
        return Ok(());
    }
    let mut script = String::from("BEGIN;");
    if found < 1 {
        script.push_str(
            "CREATE TABLE IF NOT EXISTS jobs (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 name TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 headers TEXT NOT NULL,
                 retry_ms TEXT NOT NULL,
                 attempt INTEGER NOT NULL,
                 due_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS dead_letters (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL,
                 name TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 headers TEXT NOT NULL,
                 attempts INTEGER NOT NULL,
                 class TEXT NOT NULL,
                 message TEXT NOT NULL,
                 at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS dead_letters_by_name ON dead_letters (name);",
        );
    }
    script.push_str(buckets::SCHEMA);
    script.push_str(&format!("PRAGMA user_version = {SCHEMA}; COMMIT;"));
    conn.execute_batch(&script)
}

/// How many dead letters, and how many bytes of them, a state keeps.
#[derive(Debug, Clone, Copy)]
struct Keep {
    letters: i64,
    bytes: i64,
}

impl Default for Keep {
    /// The default driver's own limits.
    fn default() -> Self {
        Self { letters: super::DEAD_LETTER_LIMIT as i64, bytes: super::DEAD_LETTER_BYTES as i64 }
    }
}

/// The database thread: applies what arrives, a group per transaction.
fn serve(mut conn: Connection, path: &str, keep: Keep, incoming: &std::sync::mpsc::Receiver<(Op, Reply)>) {
    while let Ok(first) = incoming.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match incoming.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let io = |e: rusqlite::Error| StateError::Io { path: path.to_string(), cause: e.to_string() };
        // Immediate: the write lock is taken at the start, so a write of
        // another process (`busbar kv`) makes this one wait, never fail.
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = io(e);
                for (_, reply) in group {
                    let _ = reply.send(Err(StateError::Io { path: path.to_string(), cause: e.to_string() }));
                }
                continue;
            }
        };
        let answers: Vec<_> = group.iter().map(|(op, _)| apply(&tx, op, keep).map_err(io)).collect();
        let committed = tx.commit().map_err(io);
        for ((_, reply), answer) in group.into_iter().zip(answers) {
            let answer = match &committed {
                Ok(()) => answer,
                Err(e) => Err(StateError::Io { path: path.to_string(), cause: e.to_string() }),
            };
            let _ = reply.send(answer);
        }
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &Op, keep: Keep) -> Result<Answer, rusqlite::Error> {
    match op {
        Op::Accept(job) => {
            let retry: Option<Vec<u64>> = job
                .retry
                .as_ref()
                .map(|r| r.iter().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).collect());
            tx.prepare_cached(
                "INSERT OR IGNORE INTO jobs (id, name, payload, headers, retry_ms, attempt, due_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                job.id,
                job.name,
                job.payload,
                json(&job.headers),
                json(&retry),
                job.attempt,
                millis(job.due)
            ])?;
            Ok(Answer::Done)
        }
        Op::Retry { id, attempt, due } => {
            tx.prepare_cached("UPDATE jobs SET attempt = ?2, due_ms = ?3 WHERE id = ?1")?.execute(params![
                id,
                attempt,
                millis(*due)
            ])?;
            Ok(Answer::Done)
        }
        Op::Done { id } => {
            tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?.execute([id])?;
            Ok(Answer::Done)
        }
        Op::Bury { letter } => {
            tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?.execute([&letter.id])?;
            tx.prepare_cached(
                "INSERT INTO dead_letters (id, name, payload, headers, attempts, class, message, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                letter.id,
                letter.name,
                letter.payload,
                json(&letter.headers),
                letter.attempts,
                letter.failure.class.as_str(),
                letter.failure.message,
                letter.at
            ])?;
            Ok(Answer::Dropped(trim(tx, keep)?))
        }
        Op::Jobs => {
            let mut select = tx.prepare_cached(
                "SELECT id, name, payload, headers, retry_ms, attempt, due_ms FROM jobs ORDER BY seq",
            )?;
            let jobs = select.query_map([], |r| {
                let retry: Option<Vec<u64>> = parse_json(&r.get::<_, String>(4)?);
                Ok(Job {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    payload: r.get(2)?,
                    headers: parse_json(&r.get::<_, String>(3)?),
                    retry: retry.map(|r| r.into_iter().map(Duration::from_millis).collect()),
                    attempt: r.get(5)?,
                    due: from_millis(r.get(6)?),
                })
            })?;
            Ok(Answer::Jobs(jobs.collect::<Result<_, _>>()?))
        }
        Op::DeadLetters => Ok(Answer::Letters(letters(tx, None)?)),
        Op::Requeue { name, due } => {
            let taken = letters(tx, Some(name))?;
            for letter in &taken {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO jobs (id, name, payload, headers, retry_ms, attempt, due_ms)
                     VALUES (?1, ?2, ?3, ?4, 'null', 1, ?5)",
                )?
                .execute(params![
                    letter.id,
                    letter.name,
                    letter.payload,
                    json(&letter.headers),
                    millis(*due)
                ])?;
            }
            tx.prepare_cached("DELETE FROM dead_letters WHERE name = ?1")?.execute([name])?;
            Ok(Answer::Letters(taken))
        }
        Op::TakeDead { name } => {
            let taken = letters(tx, Some(name))?;
            tx.prepare_cached("DELETE FROM dead_letters WHERE name = ?1")?.execute([name])?;
            Ok(Answer::Letters(taken))
        }
        Op::Kv(op) => Ok(Answer::Kv(buckets::apply(tx, op)?)),
    }
}

/// Removes the oldest dead letters past the limits, but never the newest.
fn trim(tx: &Connection, keep: Keep) -> Result<Vec<DeadLetter>, rusqlite::Error> {
    let (count, bytes): (i64, i64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(payload) + length(headers) + length(message)), 0) FROM dead_letters",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if count <= keep.letters && bytes <= keep.bytes {
        return Ok(Vec::new());
    }
    let mut oldest = tx.prepare_cached(
        "SELECT seq, length(payload) + length(headers) + length(message) FROM dead_letters ORDER BY seq",
    )?;
    let sizes: Vec<(i64, i64)> = oldest.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let (mut left, mut held, mut last) = (count, bytes, None);
    for (seq, size) in &sizes[..sizes.len().saturating_sub(1)] {
        if left <= keep.letters && held <= keep.bytes {
            break;
        }
        (left, held, last) = (left - 1, held - size, Some(*seq));
    }
    let Some(last) = last else { return Ok(Vec::new()) };
    let dropped = letters_upto(tx, last)?;
    tx.prepare_cached("DELETE FROM dead_letters WHERE seq <= ?1")?.execute([last])?;
    Ok(dropped)
}

/// The dead letters up to sequence `last`, oldest first.
fn letters_upto(tx: &Connection, last: i64) -> Result<Vec<DeadLetter>, rusqlite::Error> {
    let mut select = tx.prepare_cached(
        "SELECT id, name, payload, headers, attempts, class, message, at FROM dead_letters
         WHERE seq <= ?1 ORDER BY seq",
    )?;
    let rows = select.query_map([last], letter_of)?;
    rows.collect()
}

/// A dead letter from a row of `id, name, payload, headers, attempts, class, message, at`.
fn letter_of(r: &rusqlite::Row<'_>) -> Result<DeadLetter, rusqlite::Error> {
    let class: String = r.get(5)?;
    let class = serde_json::from_value(serde_json::Value::String(class)).unwrap_or(FailureClass::Failed);
    Ok(DeadLetter {
        id: r.get(0)?,
        name: r.get(1)?,
        payload: r.get(2)?,
        headers: parse_json(&r.get::<_, String>(3)?),
        attempts: r.get(4)?,
        failure: Failure::new(class, r.get::<_, String>(6)?),
        at: r.get(7)?,
    })
}

/// The dead letters (of `name`, if given), oldest first.
fn letters(tx: &Connection, name: Option<&str>) -> Result<Vec<DeadLetter>, rusqlite::Error> {
    let mut select = tx.prepare_cached(
        "SELECT id, name, payload, headers, attempts, class, message, at FROM dead_letters
         WHERE ?1 IS NULL OR name = ?1 ORDER BY seq",
    )?;
    let rows = select.query_map([name], letter_of)?;
    rows.collect()
}

fn restrict_to_owner(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// Runs one bucket operation on the state in `dir` from another process
/// than its node's (`busbar kv`): without the node's lock, in a transaction
/// of its own that SQLite's locking orders with the node's writes. A state
/// not there yet is made.
pub(crate) fn kv_once(dir: &Path, op: &KvOp) -> Result<KvAnswer, KvError> {
    let unavailable = |e: &dyn std::fmt::Display| KvError::Unavailable(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| unavailable(&e))?;
    restrict_to_owner(dir);
    let path = dir.join(DATABASE);
    let mut conn = open_database(&path, &dir.display().to_string()).map_err(|e| unavailable(&e))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| unavailable(&e))?;
    let answer = buckets::apply(&tx, op).map_err(|e| unavailable(&e))?;
    tx.commit().map_err(|e| unavailable(&e))?;
    answer
}

/// Whether `dir` holds a state (for commands that read a node's).
pub fn exists(dir: &Path) -> bool {
    dir.join(DATABASE).is_file()
}

/// The dead letters in the state at `dir`, oldest first, read without
/// taking the state: the node may be running.
pub fn read_dead_letters(dir: &Path) -> Result<Vec<DeadLetter>, StateError> {
    use rusqlite::OpenFlags;
    let path = dir.join(DATABASE);
    let shown = path.display().to_string();
    let damaged = |e: rusqlite::Error| StateError::Damaged { path: shown.clone(), cause: e.to_string() };
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(damaged)?;
    letters(&conn, None).map_err(damaged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used, reason = "a failed expectation is a failed test")]
    use super::*;

    fn job(i: u32) -> Job {
        Job {
            id: format!("d{i}"),
            name: "echo".into(),
            payload: vec![i as u8; 3],
            headers: vec![("busbar-depth".into(), "1".into())],
            retry: Some(vec![Duration::from_millis(100), Duration::from_secs(10)]),
            attempt: 1,
            due: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + u64::from(i)),
        }
    }

    fn letter(i: u32, name: &str) -> DeadLetter {
        DeadLetter {
            id: format!("d{i}"),
            name: name.into(),
            payload: vec![1, 2, 3],
            headers: vec![],
            attempts: 3,
            failure: Failure::new(FailureClass::Retry, "gave up"),
            at: "2026-12-03T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn a_state_of_the_first_schema_gains_buckets_and_keeps_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What the first schema wrote: jobs and dead letters, version 1.
            let conn = Connection::open(dir.path().join(DATABASE)).unwrap();
            let first = "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, payload BLOB NOT NULL, headers TEXT NOT NULL, retry_ms TEXT NOT NULL, attempt INTEGER NOT NULL, due_ms INTEGER NOT NULL);
                 CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, name TEXT NOT NULL, payload BLOB NOT NULL, headers TEXT NOT NULL, attempts INTEGER NOT NULL, class TEXT NOT NULL, message TEXT NOT NULL, at TEXT NOT NULL);
                 INSERT INTO jobs (id, name, payload, headers, retry_ms, attempt, due_ms) VALUES ('d7', 'echo', x'00', '[]', 'null', 1, 0);
                 PRAGMA user_version = 1;";
            conn.execute_batch(first).unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.jobs().await.unwrap().len(), 1, "the stored job is kept");
        let put = KvOp::Set { bucket: "b".into(), key: "k".into(), value: b"v".to_vec(), max: 1 << 20 };
        assert!(matches!(state.kv(put).await, Ok(KvAnswer::Revision(1))));
        let got = state.kv(KvOp::Get { bucket: "b".into(), key: "k".into() }).await;
        assert!(matches!(got, Ok(KvAnswer::Entry(Some(ref e))) if e.value == b"v"), "{got:?}");
    }

    #[tokio::test]
    async fn what_is_stored_survives_closing_and_opening_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = State::open(dir.path()).unwrap();
            for i in 0..3 {
                state.accept(job(i)).await.unwrap();
            }
            let due = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            state.retry("d1", 2, due).await.unwrap();
            state.done("d0").await.unwrap();
            state.bury(letter(2, "echo")).await.unwrap();
        }
        // The thread ends when the state is dropped; the lock goes with it.
        let state = loop {
            match State::open(dir.path()) {
                Ok(state) => break state,
                Err(StateError::InUse { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        let jobs = state.jobs().await.unwrap();
        let expected = Job { attempt: 2, due: UNIX_EPOCH + Duration::from_secs(2_000_000_000), ..job(1) };
        assert_eq!(jobs, vec![expected]);
        let letters = state.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!((letters[0].id.as_str(), letters[0].failure.class), ("d2", FailureClass::Retry));
        assert_eq!(state.take_dead_letters("other").await.unwrap().len(), 0);
        assert_eq!(state.take_dead_letters("echo").await.unwrap().len(), 1);
        assert!(state.dead_letters().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn past_its_limits_the_oldest_dead_letters_go_never_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open_keeping(dir.path(), Keep { letters: 3, bytes: 1 << 20 }).unwrap();
        for i in 0..3 {
            assert!(state.bury(letter(i, "echo")).await.unwrap().is_empty());
        }
        let dropped = state.bury(letter(3, "echo")).await.unwrap();
        assert_eq!(dropped.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["d0"]);
        let big = DeadLetter { payload: vec![0; 2 << 20], ..letter(4, "echo") };
        let dropped = state.bury(big).await.unwrap();
        assert_eq!(dropped.len(), 3, "the bytes limit takes the older ones, the newest stays");
        let kept: Vec<String> = state.dead_letters().await.unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(kept, ["d4"]);
    }

    #[tokio::test]
    async fn a_second_open_of_a_state_in_use_is_refused_and_says_by_whom() {
        let dir = tempfile::tempdir().unwrap();
        let _first = State::open(dir.path()).unwrap();
        let second = State::open(dir.path()).expect_err("in use");
        let text = second.to_string();
        assert!(
            text.contains("in use by another busbar node") && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }

    #[test]
    fn a_damaged_database_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = b"this is not an SQLite database, but it is somebody's file".repeat(100);
        std::fs::write(dir.path().join(DATABASE), &garbage).unwrap();
        let refused = State::open(dir.path()).expect_err("damaged");
        assert!(matches!(refused, StateError::Damaged { .. }), "{refused}");
        assert!(refused.to_string().contains("move it aside"), "{refused}");
        assert_eq!(std::fs::read(dir.path().join(DATABASE)).unwrap(), garbage, "nothing was changed");
    }

    #[test]
    fn a_state_directory_that_cannot_be_written_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("file-not-dir");
        std::fs::write(&blocked, b"x").unwrap();
        let refused = State::open(&blocked.join("state")).expect_err("not writable");
        assert!(matches!(refused, StateError::ReadOnly { .. }), "{refused}");
        assert!(refused.to_string().contains("give `[node] state` a writable directory"), "{refused}");
    }
}
