//! The broker's durable state behind a trait, with a SQLite implementation (WAL mode).
//!
//! Everything that must survive a restart lives here: registered assets (with their data
//! keys wrapped under the KEK), contracts and their release counters, issued nonces, the
//! decision log and the current policy. Operations that must be atomic (consuming a nonce,
//! counting a release against a limit, appending to the hash chain) are single SQL
//! statements or transactions under one connection lock.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::admin_auth::MAX_SKEW_SECS;
use crate::evaluate::{Contract, ContractOrigin};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The lock was poisoned by a panic in another request.
    #[error("database lock poisoned")]
    Poisoned,
    /// A record already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// A policy declares a contract whose id an admin-added contract has.
    #[error("contract {0} was added through the admin API; a policy cannot declare the same id")]
    AdminContract(String),
    /// A decision record could not be encoded.
    #[error("a decision record cannot be encoded: {0}")]
    Encoding(#[from] trustbridge_protocol::cbor::CborError),
}

/// A registered asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetRecord {
    /// Asset id.
    pub id: String,
    /// The verified `manifest.cose`.
    pub manifest: Vec<u8>,
    /// SHA-256 of `manifest.cose`.
    pub manifest_sha256: [u8; 32],
    /// The provider's public key.
    pub provider_key: [u8; 32],
    /// The data key wrapped under the KEK.
    pub wrapped_key: Vec<u8>,
}

/// What consuming a nonce found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonceState {
    /// Issued for (asset, contract), unused, within its TTL: now consumed.
    Valid {
        /// The asset.
        asset: String,
        /// The contract.
        contract: String,
    },
    /// Issued but past its TTL (now consumed too).
    Expired,
    /// Never issued, or already used.
    UnknownOrUsed,
}

/// One decision-log entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDecision {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The deterministic-CBOR record.
    pub record: Vec<u8>,
    /// Ed25519 signature over the record (see `decision_log`).
    pub signature: Vec<u8>,
}

/// Builds decision record number `seq` from the previous record: returns (record, signature).
pub type RecordBuilder<'a> =
    dyn FnMut(u64, Option<&[u8]>) -> Result<(Vec<u8>, Vec<u8>), StoreError> + 'a;

/// The broker's storage.
pub trait Store: Send + Sync {
    /// Registers (or replaces) an asset.
    fn put_asset(&self, asset: &AssetRecord) -> Result<(), StoreError>;
    /// A registered asset.
    fn asset(&self, id: &str) -> Result<Option<AssetRecord>, StoreError>;
    /// Adds a contract; fails if the id exists.
    fn add_contract(&self, c: &Contract) -> Result<(), StoreError>;
    /// Stores the policy text `toml` and makes its `contracts` the active policy
    /// contracts, in one transaction: each of `contracts` is inserted or has its terms
    /// updated (keeping its release counter; a revocation stays), and marked active with
    /// origin `policy`; every other contract of origin `policy` is deactivated.
    /// Admin-added contracts are left as they are, and a policy contract with an
    /// admin-added contract's id is [`StoreError::AdminContract`] (nothing changes).
    /// Returns the ids deactivated.
    fn replace_policy(
        &self,
        toml: &str,
        contracts: &[Contract],
        now: u64,
    ) -> Result<Vec<String>, StoreError>;
    /// Revokes a contract; false if it does not exist.
    fn revoke_contract(&self, id: &str) -> Result<bool, StoreError>;
    /// A contract.
    fn contract(&self, id: &str) -> Result<Option<Contract>, StoreError>;
    /// Counts one release of `asset` under `contract` at `now`, in one statement with the
    /// checks that make it allowed: the contract is for this asset, active, not revoked,
    /// within its window and below its limit. False (nothing counted) otherwise, so a
    /// contract changed since the decision began releases nothing.
    fn count_release(&self, contract: &str, asset: &str, now: u64) -> Result<bool, StoreError>;
    /// Records an issued nonce.
    fn issue_nonce(
        &self,
        nonce: &[u8],
        asset: &str,
        contract: &str,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    /// Consumes a nonce at `now` (single use).
    fn consume_nonce(&self, nonce: &[u8], now: u64) -> Result<NonceState, StoreError>;
    /// Appends a decision built by `build(seq, last_record)`, atomically with respect to
    /// other appends.
    fn append_decision(&self, build: &mut RecordBuilder<'_>) -> Result<u64, StoreError>;
    /// The whole decision log, in order.
    fn decisions(&self) -> Result<Vec<StoredDecision>, StoreError>;
    /// The stored policy text.
    fn policy(&self) -> Result<Option<String>, StoreError>;
    /// Remembers an accepted admin request's signature (signed for `time`): false when it
    /// was seen before, i.e. a replay, or when it is older than twice the skew window
    /// before the newest request accepted or `now` (such signatures are forgotten, so
    /// their time alone must refuse them, even after the clock stepped back).
    fn remember_admin_request(
        &self,
        signature: &[u8; 64],
        time: u64,
        now: u64,
    ) -> Result<bool, StoreError>;
}

/// SQLite storage.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY, manifest BLOB NOT NULL, manifest_sha256 BLOB NOT NULL,
    provider_key BLOB NOT NULL, wrapped_key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contracts (
    id TEXT PRIMARY KEY, asset TEXT NOT NULL, not_before INTEGER NOT NULL, not_after INTEGER NOT NULL,
    max_releases INTEGER, revoked INTEGER NOT NULL DEFAULT 0, releases INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'admin', active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS nonces (
    nonce BLOB PRIMARY KEY, asset TEXT NOT NULL, contract TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY, record BLOB NOT NULL, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS policy (
    id INTEGER PRIMARY KEY CHECK (id = 1), toml TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS admin_requests (
    signature BLOB PRIMARY KEY, time INTEGER NOT NULL);
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode with full sync.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

/// Brings a database created by an earlier version up to this schema.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('contracts')")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // Contracts of a database without origins count as the admin's: a policy replacement
    // never deactivates them by surprise.
    if !columns.iter().any(|c| c == "origin") {
        conn.execute_batch(
            "ALTER TABLE contracts ADD COLUMN origin TEXT NOT NULL DEFAULT 'admin';
             ALTER TABLE contracts ADD COLUMN active INTEGER NOT NULL DEFAULT 1;",
        )?;
    }
    Ok(())
}

const CONTRACT_COLUMNS: &str =
    "id, asset, not_before, not_after, max_releases, revoked, releases, origin, active";

fn contract_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Contract> {
    Ok(Contract {
        id: row.get(0)?,
        asset: row.get(1)?,
        not_before: row.get::<_, i64>(2)? as u64,
        not_after: row.get::<_, i64>(3)? as u64,
        max_releases: row.get::<_, Option<i64>>(4)?.map(|m| m as u64),
        revoked: row.get::<_, i64>(5)? != 0,
        releases: row.get::<_, i64>(6)? as u64,
        origin: if row.get::<_, String>(7)? == "policy" {
            ContractOrigin::Policy
        } else {
            ContractOrigin::Admin
        },
        active: row.get::<_, i64>(8)? != 0,
    })
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn put_asset(&self, a: &AssetRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO assets (id, manifest, manifest_sha256, provider_key, wrapped_key) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET manifest = ?2, manifest_sha256 = ?3, provider_key = ?4, wrapped_key = ?5",
            params![a.id, a.manifest, a.manifest_sha256.to_vec(), a.provider_key.to_vec(), a.wrapped_key],
        )?;
        Ok(())
    }

    fn asset(&self, id: &str) -> Result<Option<AssetRecord>, StoreError> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT id, manifest, manifest_sha256, provider_key, wrapped_key FROM assets WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, Vec<u8>>(3)?, r.get::<_, Vec<u8>>(4)?)),
            )
            .optional()?;
        Ok(
            row.and_then(|(id, manifest, digest, provider, wrapped_key)| {
                Some(AssetRecord {
                    id,
                    manifest,
                    manifest_sha256: digest.try_into().ok()?,
                    provider_key: provider.try_into().ok()?,
                    wrapped_key,
                })
            }),
        )
    }

    fn add_contract(&self, c: &Contract) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "INSERT OR IGNORE INTO contracts (id, asset, not_before, not_after, max_releases, revoked, releases, origin, active)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, 1)",
            params![c.id, c.asset, i64_of(c.not_before), i64_of(c.not_after), c.max_releases.map(i64_of), c.revoked as i64, c.origin.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("contract {}", c.id)));
        }
        Ok(())
    }

    fn replace_policy(
        &self,
        toml: &str,
        contracts: &[Contract],
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for c in contracts {
            let origin: Option<String> = tx
                .query_row(
                    "SELECT origin FROM contracts WHERE id = ?1",
                    params![c.id],
                    |r| r.get(0),
                )
                .optional()?;
            if origin.as_deref() == Some(ContractOrigin::Admin.as_str()) {
                return Err(StoreError::AdminContract(c.id.clone()));
            }
            tx.execute(
                "INSERT INTO contracts (id, asset, not_before, not_after, max_releases, revoked, releases, origin, active)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 'policy', 1)
                 ON CONFLICT(id) DO UPDATE SET asset = ?2, not_before = ?3, not_after = ?4, max_releases = ?5,
                     revoked = MAX(revoked, ?6), active = 1",
                params![c.id, c.asset, i64_of(c.not_before), i64_of(c.not_after), c.max_releases.map(i64_of), c.revoked as i64],
            )?;
        }
        let declared: std::collections::BTreeSet<&str> =
            contracts.iter().map(|c| c.id.as_str()).collect();
        let stale: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT id FROM contracts WHERE origin = 'policy' AND active = 1")?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.into_iter()
                .filter(|id| !declared.contains(id.as_str()))
                .collect()
        };
        for id in &stale {
            tx.execute("UPDATE contracts SET active = 0 WHERE id = ?1", params![id])?;
        }
        tx.execute(
            "INSERT INTO policy (id, toml, updated_at) VALUES (1, ?1, ?2) ON CONFLICT(id) DO UPDATE SET toml = ?1, updated_at = ?2",
            params![toml, i64_of(now)],
        )?;
        tx.commit()?;
        Ok(stale)
    }

    fn revoke_contract(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn()?.execute(
            "UPDATE contracts SET revoked = 1 WHERE id = ?1",
            params![id],
        )? == 1)
    }

    fn contract(&self, id: &str) -> Result<Option<Contract>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {CONTRACT_COLUMNS} FROM contracts WHERE id = ?1"),
                params![id],
                contract_from_row,
            )
            .optional()?)
    }

    fn count_release(&self, contract: &str, asset: &str, now: u64) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "UPDATE contracts SET releases = releases + 1
             WHERE id = ?1 AND asset = ?2 AND revoked = 0 AND active = 1
               AND not_before <= ?3 AND ?3 <= not_after
               AND (max_releases IS NULL OR releases < max_releases)",
            params![contract, asset, i64_of(now)],
        )?;
        Ok(n == 1)
    }

    fn issue_nonce(
        &self,
        nonce: &[u8],
        asset: &str,
        contract: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        // Forget nonces that expired long ago, so the table stays small.
        conn.execute(
            "DELETE FROM nonces WHERE expires_at < ?1",
            params![i64_of(expires_at.saturating_sub(3600))],
        )?;
        conn.execute(
            "INSERT INTO nonces (nonce, asset, contract, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![nonce, asset, contract, i64_of(expires_at)],
        )?;
        Ok(())
    }

    fn consume_nonce(&self, nonce: &[u8], now: u64) -> Result<NonceState, StoreError> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "UPDATE nonces SET used = 1 WHERE nonce = ?1 AND used = 0 RETURNING asset, contract, expires_at",
                params![nonce],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64)),
            )
            .optional()?;
        Ok(match row {
            None => NonceState::UnknownOrUsed,
            Some((_, _, expires_at)) if now > expires_at => NonceState::Expired,
            Some((asset, contract, _)) => NonceState::Valid { asset, contract },
        })
    }

    fn append_decision(&self, build: &mut RecordBuilder<'_>) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, record FROM decisions ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let seq = last.as_ref().map_or(1, |(s, _)| *s as u64 + 1);
        let (record, signature) = build(seq, last.as_ref().map(|(_, r)| r.as_slice()))?;
        tx.execute(
            "INSERT INTO decisions (seq, record, signature) VALUES (?1, ?2, ?3)",
            params![i64_of(seq), record, signature],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    fn decisions(&self) -> Result<Vec<StoredDecision>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT seq, record, signature FROM decisions ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredDecision {
                seq: r.get::<_, i64>(0)? as u64,
                record: r.get(1)?,
                signature: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn policy(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()?
            .query_row("SELECT toml FROM policy WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    fn remember_admin_request(
        &self,
        signature: &[u8; 64],
        time: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        // The horizon follows the newest request ever accepted as well as the clock, so
        // a clock stepped back cannot bring a forgotten request back within reach.
        let newest: Option<i64> =
            tx.query_row("SELECT MAX(time) FROM admin_requests", [], |r| r.get(0))?;
        let newest = newest.map_or(0, |t| u64::try_from(t).unwrap_or(0));
        let horizon = now.max(newest).saturating_sub(2 * MAX_SKEW_SECS);
        if time < horizon {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM admin_requests WHERE time < ?1",
            params![i64_of(horizon)],
        )?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO admin_requests (signature, time) VALUES (?1, ?2)",
            params![signature.to_vec(), i64_of(time)],
        )?;
        tx.commit()?;
        Ok(inserted == 1)
    }
}
