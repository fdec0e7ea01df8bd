//! The key space: an in-memory index over append-only logs on disk.
//!
//! Every write is a record appended to the log of the thread that served it
//! (one file per thread: appends never interleave, so a crash can only cut a
//! file's tail). Records carry a process-wide sequence number; recovery reads
//! every log, drops a torn or corrupt tail, and replays the records in
//! sequence order. Values longer than `value_threshold` stay on disk: the
//! index keeps their place, and a GET reads them back with an io_uring read.
//!
//! Collections (lists, sets, hashes, sorted sets, streams) live in memory;
//! their writes are logged as deterministic [`Write`]s and replayed in
//! order. Every change takes its sequence number under the lock of its key's
//! part of the index (FLUSHALL under all of them), so the log's order is the
//! order in which the changes were made.
//!
//! Durability follows `fsync`: with `always`, a write is acknowledged only
//! after its record is on disk (`fdatasync` through io_uring), so an
//! acknowledged write survives a crash.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Instant;

use ferrite_obs::probe;
use ferrite_obs::probes::{self, Probe};

use super::types::{Collection, Reply, WRONGTYPE, Write};

/// When records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before every acknowledgement.
    Always,
    /// Once a second, in the background.
    EverySec,
    /// When the kernel decides.
    No,
}

const MAGIC: u32 = 0xFE77_1E01;
const HEADER: usize = 4 + 8 + 1 + 4 + 4 + 8 + 4;
const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
const OP_FLUSH: u8 = 3;
/// A collection [`Write`]; the value is its encoding.
const OP_WRITE: u8 = 4;
/// A new expiry (the header's `expires_at`) for an existing key.
const OP_EXPIRE: u8 = 5;
const SHARDS: usize = 64;

/// Where a value is.
#[derive(Debug)]
enum Value {
    Inline(Arc<[u8]>),
    OnDisk { file: usize, offset: u64, len: u32 },
    Collection(Box<Collection>),
}

/// A string value as GET finds it: shared with the index, or read from disk.
#[derive(Debug)]
pub enum Fetched {
    Memory(Arc<[u8]>),
    Disk(Vec<u8>),
}

impl std::ops::Deref for Fetched {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Fetched::Memory(bytes) => bytes,
            Fetched::Disk(bytes) => bytes,
        }
    }
}

/// A string command on a key that holds a collection.
#[derive(Debug, PartialEq, Eq)]
pub struct WrongType;

/// One part of the index; keys are spread over the parts by hash.
type Shard = HashMap<Vec<u8>, Entry>;

#[derive(Debug)]
struct Entry {
    value: Value,
    /// Unix milliseconds; 0 for no expiry.
    expires_at: u64,
    /// The record that wrote it: a later record always wins.
    seq: u64,
}

/// The index and the logs, shared by every thread.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    seq: AtomicU64,
    value_threshold: usize,
    fsync: Fsync,
    files: Vec<PathBuf>,
}

/// A record read back from a log.
struct Record {
    seq: u64,
    op: u8,
    key: Vec<u8>,
    value_offset: u64,
    value: Option<Vec<u8>>,
    value_len: u32,
    expires_at: u64,
    file: usize,
}

fn checksum(parts: &[&[u8]]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for &byte in *part {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

fn encode(seq: u64, op: u8, key: &[u8], value: &[u8], expires_at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + key.len() + value.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(op);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&expires_at.to_le_bytes());
    let sum = checksum(&[&out[4..], key, value]);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (creating) the logs of `threads` threads under `dir` and
    /// replays every log found there. Returns the store and, per thread, the
    /// size of its log (where its appends continue).
    pub fn open(
        dir: &Path,
        threads: usize,
        value_threshold: usize,
        fsync: Fsync,
    ) -> io::Result<(Arc<Store>, Vec<u64>)> {
        std::fs::create_dir_all(dir)?;
        let mut files: Vec<PathBuf> = (0..threads)
            .map(|i| dir.join(format!("log-{i}.aof")))
            .collect();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let is_log = path.extension().is_some_and(|e| e == "aof");
            if is_log && !files.contains(&path) {
                files.push(path);
            }
        }
        // Every thread reads every log: all exist before any thread starts.
        for path in &files[..threads] {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)?;
        }
        let mut records = Vec::new();
        let mut ends = Vec::new();
        for (file, path) in files.iter().enumerate() {
            let end = read_log(path, file, value_threshold, &mut records)?;
            ends.push(end);
        }
        records.sort_by_key(|r| r.seq);
        let store = Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            seq: AtomicU64::new(records.last().map_or(0, |r| r.seq) + 1),
            value_threshold,
            fsync,
            files,
        };
        for record in records {
            store.apply(record);
        }
        ends.truncate(threads);
        Ok((Arc::new(store), ends))
    }

    fn apply(&self, record: Record) {
        match record.op {
            OP_SET => {
                let value = match record.value {
                    Some(bytes) => Value::Inline(bytes.into()),
                    None => Value::OnDisk {
                        file: record.file,
                        offset: record.value_offset,
                        len: record.value_len,
                    },
                };
                let entry = Entry {
                    value,
                    expires_at: record.expires_at,
                    seq: record.seq,
                };
                self.shard(&record.key)
                    .lock()
                    .unwrap()
                    .insert(record.key, entry);
            }
            OP_DEL => {
                self.shard(&record.key).lock().unwrap().remove(&record.key);
            }
            OP_EXPIRE => {
                let mut shard = self.shard(&record.key).lock().unwrap();
                if let Some(entry) = shard.get_mut(&record.key) {
                    entry.expires_at = record.expires_at;
                    entry.seq = record.seq;
                }
            }
            OP_WRITE => {
                // The checksum held, so only a record of another version
                // could fail to decode: its key is left as it was.
                let write = record.value.as_deref().and_then(Write::decode);
                if let Some(write) = write {
                    let mut shard = self.shard(&record.key).lock().unwrap();
                    let _ = apply_write(&mut shard, &record.key, |_| Ok(write), || record.seq);
                }
            }
            _ => Store::clear(&mut self.lock_all()),
        }
    }

    /// Every part of the index, locked in order.
    fn lock_all(&self) -> Vec<MutexGuard<'_, Shard>> {
        self.shards.iter().map(|s| s.lock().unwrap()).collect()
    }

    /// `key`'s part of the index, locked, with `key` dropped if it expired.
    fn locked(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let mut shard = self.shard(key).lock().unwrap();
        // The clock is read only for a key that has an expiry.
        if shard
            .get(key)
            .is_some_and(|e| e.expires_at != 0 && e.expires_at <= now_ms())
        {
            shard.remove(key);
        }
        shard
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[checksum(&[key]) as usize % SHARDS]
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Drops every entry; `shards` is every part, locked.
    fn clear(shards: &mut [MutexGuard<'_, Shard>]) {
        shards.iter_mut().for_each(|shard| shard.clear());
    }

    /// Keys in the index (expired ones not yet dropped included, as Redis).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.locked(key).contains_key(key)
    }

    /// Milliseconds `key` has left: `None` for no key, `Some(None)` for no
    /// expiry.
    pub fn ttl_ms(&self, key: &[u8]) -> Option<Option<u64>> {
        let shard = self.locked(key);
        let entry = shard.get(key)?;
        Some((entry.expires_at != 0).then(|| entry.expires_at.saturating_sub(now_ms())))
    }

    /// TYPE's reply for `key`.
    pub fn type_of(&self, key: &[u8]) -> &'static str {
        match self.locked(key).get(key).map(|e| &e.value) {
            None => "none",
            Some(Value::Collection(c)) => c.type_name(),
            Some(_) => "string",
        }
    }

    /// Runs `f` on the collection at `key` (`None` if absent), under its
    /// lock; a string there is [`WrongType`].
    pub fn read<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&Collection>) -> R,
    ) -> Result<R, WrongType> {
        match self.locked(key).get(key).map(|e| &e.value) {
            None => Ok(f(None)),
            Some(Value::Collection(c)) => Ok(f(Some(c))),
            Some(_) => Err(WrongType),
        }
    }
}

/// Stores `entry` under `key`, allocating the key only when it is new.
fn put(shard: &mut Shard, key: &[u8], entry: Entry) {
    match shard.get_mut(key) {
        Some(slot) => *slot = entry,
        None => {
            shard.insert(key.to_vec(), entry);
        }
    }
}

/// Plans and applies a collection write to `key` in `shard`. `plan` sees
/// the key's collection (`None` if absent) and returns the write, or the
/// reply when there is nothing to write. A write that changes anything takes
/// its sequence number from `seq`, and the entry carries it. Returns that
/// write (`None` if nothing changed) and the reply; a string at `key` is
/// left alone and is a [`WRONGTYPE`] reply.
fn apply_write(
    shard: &mut Shard,
    key: &[u8],
    plan: impl FnOnce(Option<&Collection>) -> Result<Write, Reply>,
    seq: impl FnOnce() -> u64,
) -> (Option<Write>, Reply) {
    // An existing entry is taken out and put back with its key: one lookup
    // for the change, no allocation.
    let (key, mut slot, expires_at, old_seq) = match shard.remove_entry(key) {
        None => (key.to_vec(), None, 0, 0),
        Some((k, entry)) => match entry.value {
            Value::Collection(c) => (k, Some(c), entry.expires_at, entry.seq),
            _ => {
                shard.insert(k, entry);
                return (None, Reply::Error(WRONGTYPE.to_string()));
            }
        },
    };
    let (changed, reply) = match plan(slot.as_deref()) {
        Err(reply) => (None, reply),
        Ok(write) => match write.apply(&mut slot) {
            Ok((reply, true)) => (Some(write), reply),
            Ok((reply, false)) => (None, reply),
            Err(message) => (None, Reply::Error(message.to_string())),
        },
    };
    let seq = if changed.is_some() { seq() } else { old_seq };
    if let Some(collection) = slot {
        let entry = Entry {
            value: Value::Collection(collection),
            expires_at,
            seq,
        };
        shard.insert(key, entry);
    }
    (changed, reply)
}

/// Reads one log, appending its records. A region that is not a valid
/// record (a write that failed or was cut by a crash while later appends of
/// the same thread succeeded) is skipped up to the next valid record; a
/// torn tail is truncated. Returns the size of what remains.
fn read_log(path: &Path, file: usize, threshold: usize, out: &mut Vec<Record>) -> io::Result<u64> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    }
    let mut at = 0usize;
    let mut valid_end = 0usize;
    while bytes.len() >= at + HEADER {
        if let Some((record, end)) = record_at(&bytes, at, file, threshold) {
            out.push(record);
            at = end;
            valid_end = end;
            continue;
        }
        let magic = MAGIC.to_le_bytes();
        match bytes[at + 1..].windows(4).position(|w| w == magic) {
            Some(skip) => at += 1 + skip,
            None => break,
        }
    }
    if valid_end < bytes.len() {
        // A torn tail: never acknowledged under `fsync = always`.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(valid_end as u64)?;
    }
    Ok(valid_end as u64)
}

/// The record at `at`, if a whole, valid one starts there, and its end.
fn record_at(bytes: &[u8], at: usize, file: usize, threshold: usize) -> Option<(Record, usize)> {
    let h = bytes.get(at..at + HEADER)?;
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap());
    let (klen, vlen) = (u32_at(13) as usize, u32_at(17) as usize);
    let end = at
        .checked_add(HEADER)?
        .checked_add(klen)?
        .checked_add(vlen)?;
    if u32_at(0) != MAGIC || end > bytes.len() {
        return None;
    }
    let key = &bytes[at + HEADER..at + HEADER + klen];
    let value = &bytes[at + HEADER + klen..end];
    if checksum(&[&h[4..29], key, value]) != u32_at(29) {
        return None;
    }
    let record = Record {
        seq: u64_at(4),
        op: h[12],
        key: key.to_vec(),
        value_offset: (at + HEADER + klen) as u64,
        // Collection writes are replayed from their bytes; a long string
        // value stays on disk.
        value: (vlen <= threshold || h[12] != OP_SET).then(|| value.to_vec()),
        value_len: vlen as u32,
        expires_at: u64_at(21),
        file,
    };
    Some((record, end))
}

/// One thread's side of the store: its log, and readers of every log.
#[derive(Debug)]
pub struct Local {
    store: Arc<Store>,
    index: usize,
    log: tokio_uring::fs::File,
    end: Cell<u64>,
    dirty: Cell<bool>,
    readers: Vec<tokio_uring::fs::File>,
}

impl Local {
    /// Opens thread `index`'s log (appending at `end`) and every log for
    /// reading. Inside the thread's tokio-uring runtime.
    pub async fn open(store: Arc<Store>, index: usize, end: u64) -> io::Result<Rc<Local>> {
        let log = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(&store.files[index])
            .await?;
        let mut readers = Vec::with_capacity(store.files.len());
        for path in &store.files {
            readers.push(tokio_uring::fs::File::open(path).await?);
        }
        Ok(Rc::new(Local {
            store,
            index,
            log,
            end: Cell::new(end),
            dirty: Cell::new(false),
            readers,
        }))
    }

    /// The shared index.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Appends a record (and syncs it, with `fsync = always`); returns where
    /// its value starts.
    async fn append(
        &self,
        seq: u64,
        op: u8,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
    ) -> io::Result<u64> {
        let record = encode(seq, op, key, value, expires_at);
        let at = self.end.get();
        self.end.set(at + record.len() as u64);
        // A failed append leaves a hole that recovery skips (see
        // `read_log`); the error is the reply, nothing is acknowledged.
        storage_write(&self.log, key, record, at).await?;
        match self.store.fsync {
            Fsync::Always => storage_fsync(&self.log).await?,
            Fsync::EverySec => self.dirty.set(true),
            Fsync::No => {}
        }
        Ok(at + (HEADER + key.len()) as u64)
    }

    /// Syncs the log if anything was appended since the last sync.
    pub async fn sync_if_dirty(&self) -> io::Result<()> {
        if self.dirty.replace(false) {
            storage_fsync(&self.log).await?;
        }
        Ok(())
    }

    /// The value of `key`, read from disk if it lives there.
    pub async fn get(&self, key: &[u8]) -> io::Result<Result<Option<Fetched>, WrongType>> {
        let (file, offset, len) = match self.store.locked(key).get(key).map(|e| &e.value) {
            None => return Ok(Ok(None)),
            Some(Value::Inline(bytes)) => return Ok(Ok(Some(Fetched::Memory(Arc::clone(bytes))))),
            Some(Value::Collection(_)) => return Ok(Err(WrongType)),
            Some(&Value::OnDisk { file, offset, len }) => (file, offset, len),
        };
        storage_read(&self.readers[file], key, len as usize, offset)
            .await
            .map(|bytes| Ok(Some(Fetched::Disk(bytes))))
    }

    /// Stores `value` under `key` (replacing whatever was there), durably
    /// as `fsync` says.
    pub async fn set(&self, key: &[u8], value: &[u8], expires_at: u64) -> io::Result<()> {
        // Visible now (from memory until a long value is on disk),
        // acknowledged once logged.
        let seq = {
            let mut shard = self.store.locked(key);
            let seq = self.store.next_seq();
            let entry = Entry {
                value: Value::Inline(value.into()),
                expires_at,
                seq,
            };
            put(&mut shard, key, entry);
            seq
        };
        let offset = self.append(seq, OP_SET, key, value, expires_at).await?;
        if value.len() > self.store.value_threshold {
            let mut shard = self.store.locked(key);
            // Unless a later write replaced it meanwhile.
            if let Some(entry) = shard.get_mut(key).filter(|e| e.seq == seq) {
                entry.value = Value::OnDisk {
                    file: self.index,
                    offset,
                    len: value.len() as u32,
                };
            }
        }
        Ok(())
    }

    /// Removes `key`; whether it existed.
    pub async fn del(&self, key: &[u8]) -> io::Result<bool> {
        let seq = {
            let mut shard = self.store.locked(key);
            if shard.remove(key).is_none() {
                return Ok(false);
            }
            self.store.next_seq()
        };
        self.append(seq, OP_DEL, key, &[], 0).await?;
        Ok(true)
    }

    /// Adds `by` to the integer at `key` (0 if absent), atomically.
    pub async fn incr(&self, key: &[u8], by: i64) -> io::Result<Result<i64, &'static str>> {
        const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
        let (value, expires_at, seq) = {
            let mut shard = self.store.locked(key);
            let (n, expires_at) = match shard.get(key) {
                None => (0, 0),
                Some(e) => match &e.value {
                    Value::Inline(bytes) => match std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        Some(n) => (n, e.expires_at),
                        None => return Ok(Err(NOT_AN_INTEGER)),
                    },
                    Value::OnDisk { .. } => return Ok(Err(NOT_AN_INTEGER)),
                    Value::Collection(_) => return Ok(Err(WRONGTYPE)),
                },
            };
            let Some(n) = n.checked_add(by) else {
                return Ok(Err("ERR increment or decrement would overflow"));
            };
            let seq = self.store.next_seq();
            let entry = Entry {
                value: Value::Inline(n.to_string().into_bytes().into()),
                expires_at,
                seq,
            };
            put(&mut shard, key, entry);
            (n, expires_at, seq)
        };
        self.append(seq, OP_SET, key, value.to_string().as_bytes(), expires_at)
            .await?;
        Ok(Ok(value))
    }

    /// Sets the expiry of `key`, whatever it holds; whether it exists.
    pub async fn expire(&self, key: &[u8], expires_at: u64) -> io::Result<bool> {
        let seq = {
            let mut shard = self.store.locked(key);
            let Some(entry) = shard.get_mut(key) else {
                return Ok(false);
            };
            entry.seq = self.store.next_seq();
            entry.expires_at = expires_at;
            entry.seq
        };
        self.append(seq, OP_EXPIRE, key, &[], expires_at).await?;
        Ok(true)
    }

    /// Applies a collection write to `key` and logs it if it changed
    /// anything. `plan` sees the key's collection (under its lock) and
    /// returns the write, or the reply when there is nothing to write. The
    /// reply comes once the write is logged.
    pub async fn update(
        &self,
        key: &[u8],
        plan: impl FnOnce(Option<&Collection>) -> Result<Write, Reply>,
    ) -> io::Result<Reply> {
        let mut seq = 0;
        let (write, reply) = apply_write(&mut self.store.locked(key), key, plan, || {
            seq = self.store.next_seq();
            seq
        });
        if let Some(write) = write {
            self.append(seq, OP_WRITE, key, &write.encode(), 0).await?;
        }
        Ok(reply)
    }

    /// Removes every key.
    pub async fn flush(&self) -> io::Result<()> {
        let seq = {
            let mut all = self.store.lock_all();
            let seq = self.store.next_seq();
            Store::clear(&mut all);
            seq
        };
        self.append(seq, OP_FLUSH, &[], &[], 0).await?;
        Ok(())
    }
}

/// Writes a whole record at `at`; `key` only feeds the USDT probe.
#[probe(skip_all, err)]
async fn storage_write(
    log: &tokio_uring::fs::File,
    key: &[u8],
    record: Vec<u8>,
    at: u64,
) -> io::Result<()> {
    let traced = Probe::StorageWrite.is_attached();
    let start = traced.then(Instant::now);
    let len = record.len() as u64;
    let (result, _) = log.write_all_at(record, at).await;
    if let Some(start) = start {
        probes::storage_write(key, len, start.elapsed().as_nanos() as u64);
    }
    result
}

/// Syncs a log's data.
#[probe(skip_all, err)]
async fn storage_fsync(log: &tokio_uring::fs::File) -> io::Result<()> {
    log.sync_data().await
}

/// Reads `len` bytes at `at`; `key` only feeds the USDT probe.
#[probe(skip_all, err)]
async fn storage_read(
    file: &tokio_uring::fs::File,
    key: &[u8],
    len: usize,
    at: u64,
) -> io::Result<Vec<u8>> {
    let traced = Probe::StorageRead.is_attached();
    let start = traced.then(Instant::now);
    let (result, buf) = file.read_exact_at(Vec::with_capacity(len), at).await;
    result?;
    if let Some(start) = start {
        probes::storage_read(key, len as u64, start.elapsed().as_nanos() as u64);
    }
    Ok(buf)
}
