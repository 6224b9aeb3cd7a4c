//! The CDC reader: logical replication with `pgoutput`, an optional
//! consistent snapshot first, acknowledgements only for what the pipeline
//! committed, reconnection with backoff.
//!
//! Delivery: every change goes through `queue` with the position *after*
//! it; `delivered` moves only when a record leaves in a batch, `committed`
//! only in [`DataReader::commit`], and only `committed` is ever sent to the
//! server. After a reconnect or restart the server resends whole
//! transactions from the slot; [`CdcPosition`] skips the ones (and the part
//! of one) already delivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use pgwire_replication::{
    PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig,
};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use velo_datasource_core::{
    DataReader, Error, EventTimeExtractor, FieldValue, Lag, Result, SourceMetrics, SourceOffset,
    SourcePosition, StreamRecord,
};

use crate::catalog::{self, TableInfo, sql_error};
use crate::change::{Meta, Op, TableShape, pg_time};
use crate::db::{self, Bind};
use crate::options::PgOptions;
use crate::pgoutput::{self, Message, OldKind};
use crate::position::{CdcPosition, Lsn};
use crate::types::SESSION_OPTIONS;

/// Prefix of the heartbeat messages this reader emits.
pub const HEARTBEAT_PREFIX: &str = "velostream.heartbeat";

/// Rows fetched per round trip while reading the snapshot.
const SNAPSHOT_FETCH: usize = 2000;

/// Longest a connection may stay broken before the reader gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(300);

struct Txn {
    final_lsn: Lsn,
    xid: u32,
    commit_time: Option<chrono::DateTime<Utc>>,
    seen: u64,
    skip: u64,
    skip_all: bool,
}

struct Snapshot {
    conn: PgConnection,
    tables: VecDeque<TableInfo>,
    cursor_open: bool,
    consistent_point: Lsn,
}

/// Reads changes of the configured tables from a replication slot.
pub struct CdcReader {
    opts: Arc<PgOptions>,
    client: Option<ReplicationClient>,
    started: bool,
    relations: HashMap<u32, Arc<TableShape>>,
    txn: Option<Txn>,
    /// Position after the last event turned into queue entries.
    stream_pos: CdcPosition,
    /// Position after the last record handed out.
    delivered: CdcPosition,
    /// Position the pipeline committed; the only one acknowledged.
    committed: CdcPosition,
    queue: VecDeque<(Option<StreamRecord>, CdcPosition)>,
    snapshot: Option<Snapshot>,
    retry_at: Option<Instant>,
    broken_since: Option<Instant>,
    failures: u32,
    wal_end: Lsn,
    stop_at: Option<Lsn>,
    ended: bool,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    event_time: Option<EventTimeExtractor>,
    metrics: SourceMetrics,
}

impl std::fmt::Debug for CdcReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcReader")
            .field("slot", &self.opts.slot)
            .field("delivered", &self.delivered.to_string())
            .field("committed", &self.committed.to_string())
            .finish_non_exhaustive()
    }
}

impl CdcReader {
    pub(crate) fn new(opts: Arc<PgOptions>, stop_at: Option<Lsn>) -> Self {
        let event_time = opts
            .event_time
            .clone()
            .map(|c| EventTimeExtractor::new(c, 1000));
        CdcReader {
            metrics: SourceMetrics::new(&format!("postgresql-cdc:{}", opts.slot)),
            opts,
            client: None,
            started: false,
            relations: HashMap::new(),
            txn: None,
            stream_pos: CdcPosition::default(),
            delivered: CdcPosition::default(),
            committed: CdcPosition::default(),
            queue: VecDeque::new(),
            snapshot: None,
            retry_at: None,
            broken_since: None,
            failures: 0,
            wal_end: Lsn(0),
            stop_at,
            ended: false,
            heartbeat: None,
            event_time,
        }
    }

    fn replication_config(&self, start: Lsn) -> ReplicationConfig {
        let c = &self.opts.connect;
        let mut cfg = ReplicationConfig::new(
            c.get_host(),
            c.get_username(),
            self.opts.password.clone(),
            c.get_database().unwrap_or(c.get_username()),
            self.opts.slot.clone(),
            self.opts.publication.clone(),
        )
        .with_port(c.get_port())
        .with_tls(TlsConfig::disabled())
        .with_status_interval(self.opts.status_interval)
        .with_wakeup_interval(self.opts.status_interval)
        .with_options(SESSION_OPTIONS);
        if start.0 > 0 {
            cfg = cfg.with_start_lsn(pgwire_replication::Lsn(start.0));
        }
        if let Some(stop) = self.stop_at {
            cfg = cfg.with_stop_lsn(pgwire_replication::Lsn(stop.0));
        }
        cfg
    }

    fn replication_error(&self, doing: &str, e: PgWireError) -> Error {
        let text = e.to_string();
        // Terminated (57P01), shutting down (57P03), slot in use (55006):
        // the server or a previous session of ours comes back.
        let retryable = e.is_io()
            || e.is_transient()
            || ["57P01", "57P02", "57P03", "55006", "08006", "08001"]
                .iter()
                .any(|c| text.contains(c));
        Error::Connection {
            endpoint: self.opts.endpoint.clone(),
            message: format!("{doing} (slot {}): {text}", self.opts.slot),
            retryable,
            source: Some(Box::new(e)),
        }
    }

    /// Prepares publication and slot, takes the snapshot if asked, and
    /// starts streaming from the committed position.
    async fn start(&mut self) -> Result<()> {
        let opts = self.opts.clone();
        let mut conn = catalog::connect(&opts, opts.query_timeout).await?;
        catalog::check_wal_level(&mut conn, &opts.endpoint).await?;
        for table in &opts.tables {
            let info = catalog::table_info(&mut conn, &opts.endpoint, table).await?;
            catalog::check_replica_identity(&info)?;
        }
        catalog::ensure_publication(&mut conn, &opts.endpoint, &opts.publication, &opts.tables)
            .await?;
        let exists = catalog::slot_exists(&mut conn, &opts.endpoint, &opts.slot).await?;
        let redo_snapshot = self.committed.in_snapshot;
        if opts.snapshot && (!exists || redo_snapshot) {
            if exists {
                tracing::warn!(slot = %opts.slot, "the previous run stopped inside the initial snapshot: taking it again");
                db::execute(
                    &mut conn,
                    "SELECT pg_catalog.pg_drop_replication_slot($1)",
                    vec![Bind::Text(opts.slot.clone())],
                )
                .await
                .map_err(|e| sql_error(&opts.endpoint, "dropping the half-used slot", e))?;
            }
            self.start_with_snapshot(&mut conn).await?;
        } else {
            if opts.snapshot {
                tracing::info!(slot = %opts.slot, "slot exists: streaming from it without a new snapshot (drop the slot to take one)");
            }
            if !exists {
                catalog::create_slot(&mut conn, &opts.endpoint, &opts.slot).await?;
            }
            if self.committed.in_snapshot {
                return Err(Error::Offset(
                    "the position is inside an initial snapshot, but this source has snapshot=false".into(),
                ));
            }
            self.connect_stream().await?;
        }
        if self.stop_at.is_some() {
            // A bounded read of an idle table ends on this message, past the stop LSN.
            db::execute(
                &mut conn,
                "SELECT pg_catalog.pg_logical_emit_message(false, $1, '')",
                vec![Bind::Text(HEARTBEAT_PREFIX.to_owned())],
            )
            .await
            .map_err(|e| sql_error(&opts.endpoint, "emitting a heartbeat", e))?;
        }
        let _ = conn.close().await;
        self.spawn_heartbeat();
        self.started = true;
        Ok(())
    }

    async fn start_with_snapshot(&mut self, conn: &mut PgConnection) -> Result<()> {
        let opts = self.opts.clone();
        let mut client = ReplicationClient::connect_gated(self.replication_config(Lsn(0)))
            .await
            .map_err(|e| self.replication_error("connecting for the snapshot", e))?;
        // The slot name is validated (a-z, 0-9, _): the command takes no quotes.
        let rows = client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                opts.slot
            ))
            .await
            .map_err(|e| self.replication_error("creating the slot with a snapshot", e))?;
        let text = |row: &[Option<bytes::Bytes>], i: usize| -> String {
            row.get(i)
                .cloned()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let row = rows.first().ok_or_else(|| {
            Error::decode(
                format!("slot {}", opts.slot),
                "CREATE_REPLICATION_SLOT returned no row",
            )
        })?;
        let consistent_point: Lsn = text(row, 1)
            .parse()
            .map_err(|e: String| Error::decode("CREATE_REPLICATION_SLOT", e))?;
        let snapshot_name = text(row, 2);
        if snapshot_name.is_empty()
            || !snapshot_name
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(Error::decode(
                "CREATE_REPLICATION_SLOT",
                format!("unexpected snapshot name `{snapshot_name}`"),
            ));
        }
        tracing::info!(slot = %opts.slot, %consistent_point, "created replication slot with an exported snapshot");
        let mut snap = catalog::connect(&opts, opts.query_timeout).await?;
        let import = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot_name}'"
        );
        db::batch(&mut snap, &import)
            .await
            .map_err(|e| sql_error(&opts.endpoint, "importing the slot's snapshot", e))?;
        let mut tables = VecDeque::new();
        for table in &opts.tables {
            tables.push_back(catalog::table_info(conn, &opts.endpoint, table).await?);
        }
        // Importing is done: the exporting session may now start streaming.
        client
            .start()
            .await
            .map_err(|e| self.replication_error("starting replication", e))?;
        client
            .wait_started()
            .await
            .map_err(|e| self.replication_error("starting replication", e))?;
        self.client = Some(client);
        let in_snapshot = CdcPosition {
            in_snapshot: true,
            ..CdcPosition::default()
        };
        self.delivered = in_snapshot;
        self.stream_pos = in_snapshot;
        self.snapshot = Some(Snapshot {
            conn: snap,
            tables,
            cursor_open: false,
            consistent_point,
        });
        Ok(())
    }

    async fn connect_stream(&mut self) -> Result<()> {
        let start = self.committed.lsn;
        let mut client = ReplicationClient::connect(self.replication_config(start))
            .await
            .map_err(|e| self.replication_error("connecting", e))?;
        client
            .wait_started()
            .await
            .map_err(|e| self.replication_error("starting replication", e))?;
        tracing::info!(slot = %self.opts.slot, start = %start, "replication started");
        // The server resends from the start of a transaction: forget the one in flight.
        self.txn = None;
        self.stream_pos = self.delivered;
        self.queue.clear();
        self.client = Some(client);
        Ok(())
    }

    fn spawn_heartbeat(&mut self) {
        if self.opts.heartbeat_interval.is_zero() {
            return;
        }
        let opts = self.opts.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            let mut conn: Option<PgConnection> = None;
            loop {
                tokio::time::sleep(opts.heartbeat_interval).await;
                if conn.is_none() {
                    conn = catalog::connect(&opts, opts.query_timeout).await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                let sent = db::execute(
                    c,
                    "SELECT pg_catalog.pg_logical_emit_message(false, $1, '')",
                    vec![Bind::Text(HEARTBEAT_PREFIX.to_owned())],
                )
                .await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "heartbeat failed; reconnecting on the next one");
                    conn = None;
                }
            }
        }));
    }

    /// Reads the next chunk of snapshot rows into the queue.
    async fn fetch_snapshot(&mut self) -> Result<()> {
        let endpoint = self.opts.endpoint.clone();
        let Some(snap) = self.snapshot.as_mut() else {
            return Ok(());
        };
        let Some(table) = snap.tables.front().cloned() else {
            db::batch(&mut snap.conn, "COMMIT")
                .await
                .map_err(|e| sql_error(&endpoint, "ending the snapshot", e))?;
            let done = CdcPosition {
                lsn: snap.consistent_point,
                ..CdcPosition::default()
            };
            tracing::info!(consistent_point = %done.lsn, "initial snapshot read; streaming changes");
            self.queue.push_back((None, done));
            self.stream_pos = done;
            self.snapshot = None;
            return Ok(());
        };
        if !snap.cursor_open {
            let sql = format!(
                "DECLARE velo_snapshot NO SCROLL CURSOR FOR {}",
                catalog::select_as_text(&table, &[])
            );
            db::batch(&mut snap.conn, &sql).await.map_err(|e| {
                sql_error(
                    &endpoint,
                    &format!("reading {} for the snapshot", table.name),
                    e,
                )
            })?;
            snap.cursor_open = true;
        }
        let fetch = format!("FETCH FORWARD {SNAPSHOT_FETCH} FROM velo_snapshot");
        let rows = db::fetch_all(&mut snap.conn, &fetch, vec![])
            .await
            .map_err(|e| {
                sql_error(
                    &endpoint,
                    &format!("reading {} for the snapshot", table.name),
                    e,
                )
            })?;
        if rows.len() < SNAPSHOT_FETCH {
            db::batch(&mut snap.conn, "CLOSE velo_snapshot")
                .await
                .map_err(|e| sql_error(&endpoint, "closing the snapshot cursor", e))?;
            snap.cursor_open = false;
            snap.tables.pop_front();
        }
        let shape = Arc::new(TableShape::new(
            table.name.to_string(),
            table
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.type_oid, c.nullable))
                .collect(),
        )?);
        let now = Utc::now();
        let position = CdcPosition {
            in_snapshot: true,
            ..CdcPosition::default()
        };
        for row in rows {
            let texts = (0..shape.names.len())
                .map(|i| row.try_get::<Option<String>, _>(i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| sql_error(&endpoint, "reading a snapshot row", e))?;
            let values = shape.decode_text_row(texts, &|| format!("snapshot of {}", table.name))?;
            let record = shape.record(
                values,
                Meta {
                    op: Op::Read,
                    lsn: None,
                    commit_lsn: None,
                    xid: None,
                    commit_time: None,
                    before: None,
                    unchanged_toast: Vec::new(),
                    read_at: now,
                },
            );
            self.queue.push_back((Some(record), position));
        }
        Ok(())
    }

    /// Turns one replication event into queue entries.
    fn handle(&mut self, event: ReplicationEvent) -> Result<()> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => self.begin(Lsn(final_lsn.0), xid, commit_time_micros),
            ReplicationEvent::Commit { end_lsn, .. } => self.commit_txn(Lsn(end_lsn.0)),
            ReplicationEvent::Message {
                transactional,
                lsn,
                prefix,
                ..
            } => self.logical_message(transactional, Lsn(lsn.0), &prefix),
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.wal_end = self.wal_end.max(Lsn(wal_end.0));
                self.advance_if_idle(Lsn(wal_end.0));
                // Everything up to wal_end was sent: a bounded read may end.
                if self.stop_at.is_some_and(|stop| self.wal_end >= stop) && self.txn.is_none() {
                    self.ended = true;
                }
            }
            ReplicationEvent::StoppedAt { reached } => {
                tracing::info!(reached = %Lsn(reached.0), "reached the stop LSN");
                self.ended = true;
            }
            ReplicationEvent::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                self.wal_end = self.wal_end.max(Lsn(wal_end.0));
                let at = Lsn(wal_start.0);
                let message = pgoutput::decode(&data).map_err(|e| {
                    Error::decode(format!("slot {} LSN {at}", self.opts.slot), e.to_string())
                })?;
                self.xlog(at, message)?;
            }
        }
        Ok(())
    }

    fn begin(&mut self, final_lsn: Lsn, xid: u32, commit_time: i64) {
        self.txn = Some(Txn {
            final_lsn,
            xid,
            commit_time: pg_time(commit_time),
            seen: 0,
            skip: self.stream_pos.changes_to_skip(final_lsn),
            skip_all: self.stream_pos.covers_transaction(final_lsn),
        });
    }

    fn commit_txn(&mut self, end_lsn: Lsn) {
        let skipped = self.txn.take().is_some_and(|t| t.skip_all);
        if skipped {
            return;
        }
        self.stream_pos = CdcPosition {
            lsn: end_lsn,
            partial: None,
            in_snapshot: false,
        };
        self.queue.push_back((None, self.stream_pos));
    }

    fn logical_message(&mut self, transactional: bool, lsn: Lsn, prefix: &str) {
        if !transactional && self.txn.is_none() && self.stop_at.is_some_and(|stop| lsn >= stop) {
            // Messages come in WAL order: every commit before the stop LSN was sent.
            self.ended = true;
        }
        if prefix != HEARTBEAT_PREFIX || transactional {
            tracing::debug!(prefix, %lsn, transactional, "logical message (not a change, skipped)");
            return;
        }
        self.advance_if_idle(lsn);
    }

    /// Moves the position to `lsn` when everything delivered is committed
    /// and no transaction is open. The server sends every transaction that
    /// commits before a heartbeat message (or before a keepalive's WAL end)
    /// ahead of it, so nothing of ours lies in between; confirming it lets
    /// the server recycle WAL while our tables are idle, and lets it shut
    /// down (a server waits for its logical walsenders to be confirmed up to
    /// the end before it stops). The runner saves the new position and calls
    /// `commit()`, which acknowledges it, as for a record.
    fn advance_if_idle(&mut self, lsn: Lsn) {
        let idle = self.txn.is_none()
            && self.queue.is_empty()
            && self.delivered == self.committed
            && self.snapshot.is_none()
            && lsn > self.committed.lsn;
        if idle {
            let pos = CdcPosition {
                lsn,
                partial: None,
                in_snapshot: false,
            };
            self.stream_pos = pos;
            self.delivered = pos;
        }
    }

    fn shape(&self, relation: u32, at: Lsn) -> Result<Arc<TableShape>> {
        self.relations.get(&relation).cloned().ok_or_else(|| {
            Error::decode(
                format!("slot {} LSN {at}", self.opts.slot),
                format!("change of relation {relation} before its relation message"),
            )
        })
    }

    fn xlog(&mut self, at: Lsn, message: Message<'_>) -> Result<()> {
        let location = |slot: &str| format!("slot {slot} LSN {at}");
        match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => self.begin(Lsn(final_lsn), xid, commit_time),
            Message::Commit { end_lsn, .. } => self.commit_txn(Lsn(end_lsn)),
            Message::LogicalMessage {
                transactional,
                lsn,
                prefix,
                ..
            } => self.logical_message(transactional, Lsn(lsn), prefix),
            Message::Origin { name, .. } => {
                tracing::debug!(origin = name, "transaction from a replication origin")
            }
            Message::Type {
                oid,
                namespace,
                name,
            } => {
                tracing::debug!(oid, namespace, name, "type announced (read as text)")
            }
            Message::Relation(rel) => {
                let table = format!("{}.{}", rel.namespace, rel.name);
                if rel.replica_identity == b'n' {
                    tracing::warn!(%table, "table has REPLICA IDENTITY NOTHING: its updates and deletes cannot be captured");
                }
                let shape = TableShape::new(
                    table,
                    rel.columns
                        .iter()
                        .map(|c| (c.name.clone(), c.type_oid, !c.key))
                        .collect(),
                )?;
                self.relations.insert(rel.oid, Arc::new(shape));
            }
            Message::Insert { relation, new } => {
                let Some(meta) = self.next_change(Op::Insert, at) else {
                    return Ok(());
                };
                let shape = self.shape(relation, at)?;
                let (values, unchanged) = shape.decode_row(&new, &|| location(&self.opts.slot))?;
                self.emit(
                    &shape,
                    values,
                    Meta {
                        unchanged_toast: unchanged,
                        ..meta
                    },
                );
            }
            Message::Update { relation, old, new } => {
                let Some(meta) = self.next_change(Op::Update, at) else {
                    return Ok(());
                };
                let shape = self.shape(relation, at)?;
                let (values, unchanged) = shape.decode_row(&new, &|| location(&self.opts.slot))?;
                let before = match old {
                    Some((_, old)) => {
                        let (old_values, _) =
                            shape.decode_row(&old, &|| location(&self.opts.slot))?;
                        Some(shape.before_map(old_values))
                    }
                    None => None,
                };
                self.emit(
                    &shape,
                    values,
                    Meta {
                        before,
                        unchanged_toast: unchanged,
                        ..meta
                    },
                );
            }
            Message::Delete {
                relation,
                kind,
                old,
            } => {
                let Some(meta) = self.next_change(Op::Delete, at) else {
                    return Ok(());
                };
                let shape = self.shape(relation, at)?;
                let (values, _) = shape.decode_row(&old, &|| location(&self.opts.slot))?;
                if kind == OldKind::Key {
                    tracing::trace!(table = %shape.table, "delete carries the key columns only");
                }
                self.emit(&shape, values, meta);
            }
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    let Some(meta) = self.next_change(Op::Truncate, at) else {
                        continue;
                    };
                    let shape = self.shape(relation, at)?;
                    let values = shape.nulls();
                    self.emit(&shape, values, meta);
                }
            }
        }
        Ok(())
    }

    /// Counts a change of the open transaction; `None` when it was delivered before.
    fn next_change(&mut self, op: Op, at: Lsn) -> Option<Meta> {
        let txn = self.txn.as_mut()?;
        txn.seen += 1;
        if txn.skip_all || txn.seen <= txn.skip {
            return None;
        }
        Some(Meta {
            op,
            lsn: Some(at),
            commit_lsn: Some(txn.final_lsn),
            xid: Some(txn.xid),
            commit_time: txn.commit_time,
            before: None,
            unchanged_toast: Vec::new(),
            read_at: Utc::now(),
        })
    }

    fn emit(&mut self, shape: &TableShape, values: Vec<FieldValue>, meta: Meta) {
        let Some(txn) = &self.txn else { return };
        let mut record = shape.record(values, meta);
        if let Some(extractor) = self.event_time.as_mut() {
            extractor.apply(&mut record);
        }
        self.stream_pos = CdcPosition {
            lsn: self.stream_pos.lsn,
            partial: Some((txn.final_lsn, txn.seen)),
            in_snapshot: false,
        };
        self.queue.push_back((Some(record), self.stream_pos));
    }

    /// Handles a broken stream: retryable errors schedule a reconnect.
    fn broken(&mut self, error: Error) -> Result<()> {
        if !error.is_retryable() {
            return Err(error);
        }
        let since = *self.broken_since.get_or_insert_with(Instant::now);
        if since.elapsed() > RECONNECT_FOR {
            return Err(error);
        }
        self.failures += 1;
        let backoff = Duration::from_millis(200 * 2u64.pow(self.failures.min(5)));
        tracing::warn!(error = %error, retry_in = ?backoff, "replication stream broken; reconnecting");
        self.client = None;
        self.retry_at = Some(Instant::now() + backoff);
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<()> {
        match self.connect_stream().await {
            Ok(()) => {
                self.failures = 0;
                self.broken_since = None;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => self.broken(e),
        }
    }
}

#[async_trait]
impl DataReader for CdcReader {
    async fn read(&mut self) -> Result<Option<StreamRecord>> {
        Ok(self.read_batch(1).await?.pop())
    }

    async fn read_batch(&mut self, max_size: usize) -> Result<Vec<StreamRecord>> {
        if !self.started {
            self.start().await?;
        }
        let began = Instant::now();
        let deadline = began + self.opts.batch.batch_timeout;
        let mut out = Vec::with_capacity(max_size.min(4096));
        loop {
            while out.len() < max_size {
                let Some((record, position)) = self.queue.pop_front() else {
                    break;
                };
                self.delivered = position;
                if let Some(record) = record {
                    out.push(record);
                }
            }
            if out.len() >= max_size || self.ended {
                break;
            }
            if self.snapshot.is_some() {
                self.fetch_snapshot().await?;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.client.is_none() {
                let at = self.retry_at.unwrap_or(now);
                if at > now {
                    tokio::time::sleep((at - now).min(deadline - now)).await;
                    if Instant::now() < at {
                        break;
                    }
                }
                self.reconnect().await?;
                continue;
            }
            // Once something is in hand, linger only briefly for more.
            let wait = if out.is_empty() {
                deadline - now
            } else {
                Duration::from_millis(5).min(deadline - now)
            };
            let Some(client) = self.client.as_mut() else {
                continue;
            };
            match tokio::time::timeout(wait, client.recv()).await {
                Err(_) => break,
                Ok(Ok(Some(event))) => self.handle(event)?,
                Ok(Ok(None)) => {
                    self.ended = true;
                }
                Ok(Err(e)) => {
                    let error = self.replication_error("reading the stream", e);
                    self.broken(error)?;
                }
            }
        }
        if !out.is_empty() {
            self.metrics.record_batch(out.len(), 0, began.elapsed());
        }
        if let Some(lag) = self.lag() {
            self.metrics.set_lag(&self.opts.slot, lag);
        }
        Ok(out)
    }

    async fn commit(&mut self) -> Result<()> {
        if self.delivered.in_snapshot {
            self.committed = self.delivered;
            return Ok(());
        }
        if self.delivered.lsn > self.committed.lsn
            && let Some(client) = &self.client
        {
            client.update_applied_lsn(pgwire_replication::Lsn(self.delivered.lsn.0));
        }
        self.committed = self.delivered;
        Ok(())
    }

    async fn seek(&mut self, offset: SourceOffset) -> Result<()> {
        if self.started {
            return Err(Error::State(
                "seek on a CDC reader must come before its first read (the slot decides where streaming starts)".into(),
            ));
        }
        let position = CdcPosition::from_offset(&offset, &self.opts.slot)?;
        self.delivered = position;
        self.committed = position;
        self.stream_pos = position;
        Ok(())
    }

    async fn has_more(&self) -> Result<bool> {
        Ok(!(self.ended && self.queue.is_empty()))
    }

    fn position(&self) -> Result<SourcePosition> {
        Ok(SourcePosition::new(vec![
            self.delivered.to_offset(&self.opts.slot),
        ]))
    }

    fn lag(&self) -> Option<Lag> {
        (self.wal_end.0 > 0)
            .then(|| Lag::Bytes(self.wal_end.0.saturating_sub(self.delivered.lsn.0)))
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        if let Some(mut client) = self.client.take() {
            // Let the last acknowledgement reach the server before stopping.
            let target = self.committed.lsn.0;
            let metrics = client.metrics();
            let waited = Instant::now();
            // (A stream that reached `until` has already stopped: nothing to wait for;
            // the next run confirms the saved position when it starts.)
            while target > 0
                && client.is_running()
                && metrics.last_applied_lsn().0 < target
                && waited.elapsed() < self.opts.status_interval * 3
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Err(e) = client.shutdown().await {
                tracing::debug!(error = %e, "replication shutdown");
            }
        }
        if self.opts.drop_slot {
            let mut conn = catalog::connect(&self.opts, self.opts.query_timeout).await?;
            catalog::drop_slot_and_publication(
                &mut conn,
                &self.opts.endpoint,
                &self.opts.slot,
                &self.opts.publication,
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for CdcReader {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
    }
}
