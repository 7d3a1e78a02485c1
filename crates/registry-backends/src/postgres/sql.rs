//! The SQL text of one registry table: the statements, the schema, and the two server-side
//! write functions.
//!
//! A write is one round trip: `SELECT * FROM "<t>_write"(...)` runs, inside the statement's
//! own transaction, "lock the counter row, read the id's row, check the condition, skip an
//! identical re-register, write, bump the counter". The function is `VOLATILE` PL/pgSQL, so
//! under READ COMMITTED each of its statements takes a fresh snapshot: the read that follows
//! the counter-row lock sees every write committed before the lock was granted, which is what
//! keeps a compare-and-swap from passing on a stale revision. (A single SQL statement could not
//! do this: its CTEs all read the snapshot taken before the lock wait.)

use std::sync::Arc;

pub(super) const COLUMNS: &str = "bot_id, config, status, metadata, created_at, updated_at, last_accessed_at, revision, config_hash";

/// Outcome codes of `<t>_write`.
pub(super) mod outcome {
    /// The row was written at a new revision (`o_config_hash` is the hash it had before, NULL
    /// if the write created it).
    pub const WRITTEN: i32 = 0;
    /// Identical to what is stored (or already in the requested status): nothing written.
    pub const UNCHANGED: i32 = 1;
    /// The write condition failed; the row's current revision is returned (NULL if absent).
    pub const CONFLICT: i32 = 2;
    /// A status change of an id that does not exist.
    pub const ABSENT: i32 = 3;
}

/// Condition codes of `<t>_write` (`WriteCondition`).
pub(super) mod condition {
    pub const ANY: i32 = 0;
    pub const MUST_NOT_EXIST: i32 = 1;
    pub const REVISION: i32 = 2;
}

/// The statements of one table, built once from the validated table name.
#[derive(Debug)]
pub(super) struct Sql {
    pub select_one: Arc<str>,
    pub write: Arc<str>,
    pub write_batch: Arc<str>,
    pub unregister: Arc<str>,
    /// `<t>_unregister_if(id, expected, retention)` (`unregister` passes no expected revision).
    pub unregister_if: Arc<str>,
    pub clear: Arc<str>,
    pub touch: Arc<str>,
    pub state: Arc<str>,
    pub rows_after: Arc<str>,
    pub state_and_tombstones: Arc<str>,
    pub feed: Arc<str>,
    pub list: Arc<str>,
    pub list_status: Arc<str>,
    /// Rows whose metadata contains `$2` (a JSON object), of status `$1` when not NULL: the
    /// database narrows a metadata-filtered list, the caller applies the exact filter.
    pub list_filtered: Arc<str>,
    pub count: Arc<str>,
    pub count_status: Arc<str>,
}

impl Sql {
    pub fn new(t: &str) -> Sql {
        let s = |q: String| -> Arc<str> { q.into() };
        Sql {
            select_one: s(format!("SELECT {COLUMNS} FROM \"{t}\" WHERE bot_id = $1")),
            write: s(format!(
                "SELECT o_outcome, o_bot_id, o_config, o_status, o_metadata, o_created_at, o_updated_at,
                        o_last_accessed_at, o_revision, o_config_hash
                 FROM \"{t}_write\"($1, $2, $3, $4, $5, $6, $7, $8)"
            )),
            // Several writes in one statement, run in array order (see `batch`).
            write_batch: s(format!(
                "SELECT w.o_outcome, w.o_bot_id, w.o_config, w.o_status, w.o_metadata, w.o_created_at,
                        w.o_updated_at, w.o_last_accessed_at, w.o_revision, w.o_config_hash
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::bigint[], $7::int[], $8::bigint[])
                      WITH ORDINALITY AS b(id, config, hash, status, metadata, at, cond, expected, n)
                 CROSS JOIN LATERAL \"{t}_write\"(b.id, b.config, b.hash, b.status, b.metadata,
                                                   b.at, b.cond, b.expected) AS w
                 ORDER BY b.n"
            )),
            // One delete function: `expected` NULL deletes whatever revision is there.
            unregister: s(format!("SELECT \"{t}_unregister_if\"($1, NULL, $2)")),
            unregister_if: s(format!("SELECT \"{t}_unregister_if\"($1, $2, $3)")),
            clear: s(format!("SELECT \"{t}_clear\"($1)")),
            // Touches are advisory (`last_accessed_at` only), so they commit asynchronously:
            // no WAL flush to wait for, and the row locks they take are released sooner.
            // `set_config(..., true)` lasts until the end of this statement's transaction.
            touch: s(format!(
                "UPDATE \"{t}\" AS r SET last_accessed_at = GREATEST(r.last_accessed_at, b.at)
                 FROM UNNEST($1::text[], $2::bigint[]) AS b(id, at),
                      (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
                 WHERE r.bot_id = b.id"
            )),
            state: s(format!("SELECT revision, horizon FROM \"{t}_state\" WHERE id = 1")),
            // ORDER BY + LIMIT keeps the planner on the revision index even without statistics.
            rows_after: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" WHERE revision > $1 ORDER BY revision LIMIT $2"
            )),
            state_and_tombstones: s(format!(
                "SELECT s.revision, s.horizon, d.revision, d.bot_id FROM \"{t}_state\" s
                 LEFT JOIN \"{t}_tombstones\" d ON d.revision > $1 WHERE s.id = 1"
            )),
            // The whole feed after $1 in one statement (one snapshot): the state row first
            // (kind 0), then tombstones (kind 1), then up to $2 rows (kind 2).
            feed: s(format!(
                "SELECT 0 AS kind, s.revision AS rev, s.horizon AS horizon, NULL::text AS bot_id,
                        NULL::text AS config, NULL::text AS status, NULL::text AS metadata,
                        NULL::bigint AS created_at, NULL::bigint AS updated_at,
                        NULL::bigint AS last_accessed_at, NULL::text AS config_hash
                   FROM \"{t}_state\" s WHERE s.id = 1
                 UNION ALL
                 SELECT 1, d.revision, NULL, d.bot_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
                   FROM \"{t}_tombstones\" d WHERE d.revision > $1
                 UNION ALL
                 (SELECT 2, r.revision, NULL, r.bot_id, r.config, r.status, r.metadata, r.created_at,
                         r.updated_at, r.last_accessed_at, r.config_hash
                    FROM \"{t}\" r WHERE r.revision > $1 ORDER BY r.revision LIMIT $2)"
            )),
            list: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" ORDER BY bot_id COLLATE \"C\" LIMIT $1 OFFSET $2"
            )),
            list_status: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" WHERE status = $3 ORDER BY bot_id COLLATE \"C\" LIMIT $1 OFFSET $2"
            )),
            // Containment is a superset of the filter's equality (1 = 1.0; arrays contain); metadata
            // text holding the escape \u0000 (which jsonb refuses) is passed through unfiltered.
            list_filtered: s(format!(
                "SELECT {COLUMNS} FROM \"{t}\" WHERE ($1::text IS NULL OR status = $1)
                 AND CASE WHEN strpos(metadata, '\\u0000') > 0 THEN true
                          ELSE metadata::jsonb @> $2::jsonb END
                 ORDER BY bot_id COLLATE \"C\""
            )),
            count: s(format!("SELECT COUNT(*) FROM \"{t}\"")),
            count_status: s(format!("SELECT COUNT(*) FROM \"{t}\" WHERE status = $1")),
        }
    }
}

/// Drops all but the newest `retention` tombstones and raises the horizon past the dropped ones.
fn compact_sql(t: &str, retention: &str) -> String {
    format!(
        "WITH cut AS (SELECT revision FROM \"{t}_tombstones\" ORDER BY revision DESC OFFSET {retention} LIMIT 1),
              gone AS (DELETE FROM \"{t}_tombstones\" WHERE revision <= (SELECT revision FROM cut))
         UPDATE \"{t}_state\" SET horizon = GREATEST(horizon, (SELECT revision FROM cut))
         WHERE id = 1 AND EXISTS (SELECT 1 FROM cut)"
    )
}

/// The schema of one table, in creation order (idempotent).
pub(super) fn schema(t: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS \"{t}\" (bot_id TEXT PRIMARY KEY, config TEXT NOT NULL,
             status TEXT NOT NULL, metadata TEXT NOT NULL, created_at BIGINT NOT NULL,
             updated_at BIGINT NOT NULL, last_accessed_at BIGINT NOT NULL,
             revision BIGINT NOT NULL, config_hash TEXT NOT NULL)"
        ),
        format!("CREATE UNIQUE INDEX IF NOT EXISTS \"{t}_by_revision\" ON \"{t}\" (revision)"),
        format!(
            "CREATE INDEX IF NOT EXISTS \"{t}_by_status\" ON \"{t}\" (status, bot_id COLLATE \"C\")"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS \"{t}_tombstones\" (revision BIGINT PRIMARY KEY, bot_id TEXT NOT NULL UNIQUE)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS \"{t}_state\" (id INT PRIMARY KEY CHECK (id = 1),
             revision BIGINT NOT NULL, horizon BIGINT NOT NULL)"
        ),
        format!(
            "INSERT INTO \"{t}_state\" (id, revision, horizon) VALUES (1, 0, 0) ON CONFLICT DO NOTHING"
        ),
        write_function(t),
        unregister_if_function(t),
        clear_function(t),
    ]
}

/// `<t>_write(id, config, hash, status, metadata, now, condition, expected)`.
///
/// With a config: a register (condition checked first, then an identical config, status and
/// metadata is `UNCHANGED`; metadata is equal when its text is, or else when both parse as the
/// same `jsonb` — the same keys in another order, as the other backends compare maps — except
/// text holding the escape `\u0000`, which `jsonb` refuses and which is then compared as text).
/// With a NULL config: a status change of an existing row that keeps its config, metadata and
/// last access (`ABSENT` if there is no row).
fn write_function(t: &str) -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION "{t}_write"(p_id text, p_config text, p_hash text, p_status text,
    p_metadata text, p_now bigint, p_cond int, p_expected bigint)
RETURNS TABLE (o_outcome int, o_bot_id text, o_config text, o_status text, o_metadata text,
    o_created_at bigint, o_updated_at bigint, o_last_accessed_at bigint, o_revision bigint,
    o_config_hash text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    rev bigint;
    cur "{t}"%ROWTYPE;
    present boolean;
    v_config text := p_config;
    v_hash text := p_hash;
    v_metadata text := p_metadata;
    v_accessed bigint := p_now;
BEGIN
    SELECT s.revision INTO rev FROM "{t}_state" s WHERE s.id = 1 FOR UPDATE;
    SELECT * INTO cur FROM "{t}" r WHERE r.bot_id = p_id;
    present := FOUND;
    IF (p_cond = {must_not_exist} AND present)
       OR (p_cond = {revision} AND (NOT present OR cur.revision <> p_expected)) THEN
        o_outcome := {conflict}; o_revision := cur.revision;
        RETURN NEXT; RETURN;
    END IF;
    IF p_config IS NULL THEN
        IF NOT present THEN
            o_outcome := {absent}; RETURN NEXT; RETURN;
        END IF;
        v_config := cur.config; v_hash := cur.config_hash; v_metadata := cur.metadata;
        v_accessed := cur.last_accessed_at;
    END IF;
    IF present AND cur.config_hash = v_hash AND cur.status = p_status
       AND (CASE WHEN cur.metadata = v_metadata THEN true
                 WHEN strpos(cur.metadata, '\u0000') > 0 OR strpos(v_metadata, '\u0000') > 0
                     THEN false
                 ELSE cur.metadata::jsonb = v_metadata::jsonb END) THEN
        o_outcome := {unchanged}; o_bot_id := cur.bot_id; o_config := cur.config;
        o_status := cur.status; o_metadata := cur.metadata; o_created_at := cur.created_at;
        o_updated_at := cur.updated_at; o_last_accessed_at := cur.last_accessed_at;
        o_revision := cur.revision; o_config_hash := cur.config_hash;
        RETURN NEXT; RETURN;
    END IF;
    rev := rev + 1;
    INSERT INTO "{t}" AS r (bot_id, config, status, metadata, created_at, updated_at,
                            last_accessed_at, revision, config_hash)
    VALUES (p_id, v_config, p_status, v_metadata, COALESCE(cur.created_at, p_now), p_now,
            v_accessed, rev, v_hash)
    ON CONFLICT (bot_id) DO UPDATE SET config = EXCLUDED.config, status = EXCLUDED.status,
        metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at,
        last_accessed_at = EXCLUDED.last_accessed_at, revision = EXCLUDED.revision,
        config_hash = EXCLUDED.config_hash;
    UPDATE "{t}_state" s SET revision = rev WHERE s.id = 1;
    DELETE FROM "{t}_tombstones" d WHERE d.bot_id = p_id;
    -- o_config_hash: the hash before this write, NULL if the id did not exist (created).
    o_outcome := {written}; o_revision := rev; o_created_at := COALESCE(cur.created_at, p_now);
    o_config_hash := cur.config_hash;
    RETURN NEXT;
END
$fn$"#,
        must_not_exist = condition::MUST_NOT_EXIST,
        revision = condition::REVISION,
        conflict = outcome::CONFLICT,
        absent = outcome::ABSENT,
        unchanged = outcome::UNCHANGED,
        written = outcome::WRITTEN,
    )
}

/// `<t>_unregister_if(id, expected, tombstone_retention)`: deletes the row (when `expected` is not
/// NULL, only at that revision) and leaves a tombstone at a new revision. Returns 0 when it
/// deleted, the row's revision when it is at another, and NULL when there is no row (nothing
/// deleted in either case).
fn unregister_if_function(t: &str) -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION "{t}_unregister_if"(p_id text, p_expected bigint, p_retention bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    rev bigint;
    cur bigint;
BEGIN
    SELECT s.revision INTO rev FROM "{t}_state" s WHERE s.id = 1 FOR UPDATE;
    SELECT r.revision INTO cur FROM "{t}" r WHERE r.bot_id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_expected IS NOT NULL AND cur <> p_expected THEN
        RETURN cur;
    END IF;
    DELETE FROM "{t}" r WHERE r.bot_id = p_id;
    rev := rev + 1;
    UPDATE "{t}_state" s SET revision = rev WHERE s.id = 1;
    INSERT INTO "{t}_tombstones" (revision, bot_id) VALUES (rev, p_id)
    ON CONFLICT (bot_id) DO UPDATE SET revision = EXCLUDED.revision;
    IF rev % 64 = 0 THEN
        {compact};
    END IF;
    RETURN 0;
END
$fn$"#,
        compact = compact_sql(t, "p_retention"),
    )
}

/// `<t>_clear(tombstone_retention)`: deletes every row, leaving one tombstone per id at
/// consecutive new revisions (in id order); returns how many rows were deleted.
fn clear_function(t: &str) -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION "{t}_clear"(p_retention bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    rev bigint;
    n bigint;
BEGIN
    SELECT s.revision INTO rev FROM "{t}_state" s WHERE s.id = 1 FOR UPDATE;
    WITH gone AS (DELETE FROM "{t}" r RETURNING r.bot_id)
    INSERT INTO "{t}_tombstones" (revision, bot_id)
    SELECT rev + row_number() OVER (ORDER BY g.bot_id COLLATE "C"), g.bot_id FROM gone g
    ON CONFLICT (bot_id) DO UPDATE SET revision = EXCLUDED.revision;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE "{t}_state" s SET revision = rev + n WHERE s.id = 1;
        {compact};
    END IF;
    RETURN n;
END
$fn$"#,
        compact = compact_sql(t, "p_retention"),
    )
}
