//! The key space: an in-memory index over append-only logs on disk.
//!
//! Every write is a record appended to the log of the thread that served it
//! (one file per thread: appends never interleave, so a crash can only cut a
//! file's tail). Records carry a process-wide sequence number; recovery reads
//! every log, drops a torn or corrupt tail, and replays the records in
//! sequence order. Values longer than `value_threshold` stay on disk: the
//! index keeps their place, and a GET reads them back with an io_uring read.
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
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Instant;

use ferrite_obs::probe;
use ferrite_obs::probes::{self, Probe};

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
const SHARDS: usize = 64;

/// Where a value is.
#[derive(Clone, Debug)]
enum Value {
    Inline(Arc<[u8]>),
    OnDisk { file: usize, offset: u64, len: u32 },
}

/// One part of the index; keys are spread over the parts by hash.
type Shard = HashMap<Vec<u8>, Entry>;

#[derive(Clone, Debug)]
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
    /// Below this, the `seq` of every FLUSHALL applied so far.
    flushed_at: AtomicU64,
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
            flushed_at: AtomicU64::new(0),
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
                self.put(&record.key, value, record.expires_at, record.seq);
            }
            OP_DEL => {
                self.shard(&record.key).lock().unwrap().remove(&record.key);
            }
            _ => self.clear(record.seq),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[checksum(&[key]) as usize % SHARDS]
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Stores `value` under `key` unless a later record already did.
    fn put(&self, key: &[u8], value: Value, expires_at: u64, seq: u64) {
        let mut shard = self.shard(key).lock().unwrap();
        if seq < self.flushed_at.load(Ordering::Relaxed) {
            return;
        }
        match shard.get_mut(key) {
            Some(entry) if entry.seq > seq => {}
            Some(entry) => {
                *entry = Entry {
                    value,
                    expires_at,
                    seq,
                }
            }
            None => {
                shard.insert(
                    key.to_vec(),
                    Entry {
                        value,
                        expires_at,
                        seq,
                    },
                );
            }
        }
    }

    fn clear(&self, seq: u64) {
        self.flushed_at.fetch_max(seq, Ordering::Relaxed);
        for shard in self.shards.iter() {
            shard.lock().unwrap().retain(|_, e| e.seq > seq);
        }
    }

    /// The live entry of `key`, dropping it if it has expired.
    fn entry(&self, key: &[u8]) -> Option<Entry> {
        let mut shard = self.shard(key).lock().unwrap();
        let entry = shard.get(key)?;
        if entry.expires_at != 0 && entry.expires_at <= now_ms() {
            shard.remove(key);
            return None;
        }
        Some(entry.clone())
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
        self.entry(key).is_some()
    }

    /// Milliseconds `key` has left: `None` for no key, `Some(None)` for no
    /// expiry.
    pub fn ttl_ms(&self, key: &[u8]) -> Option<Option<u64>> {
        let entry = self.entry(key)?;
        Some((entry.expires_at != 0).then(|| entry.expires_at.saturating_sub(now_ms())))
    }
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
        value: (vlen <= threshold).then(|| value.to_vec()),
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
    pub async fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let Some(entry) = self.store.entry(key) else {
            return Ok(None);
        };
        match entry.value {
            Value::Inline(bytes) => Ok(Some(bytes.to_vec())),
            Value::OnDisk { file, offset, len } => {
                storage_read(&self.readers[file], key, len as usize, offset)
                    .await
                    .map(Some)
            }
        }
    }

    /// Stores `value` under `key`, durably as `fsync` says.
    pub async fn set(&self, key: &[u8], value: &[u8], expires_at: u64) -> io::Result<()> {
        let seq = self.store.next_seq();
        let inline = value.len() <= self.store.value_threshold;
        if inline {
            // Visible now, acknowledged once logged.
            self.store
                .put(key, Value::Inline(value.into()), expires_at, seq);
        }
        let offset = self.append(seq, OP_SET, key, value, expires_at).await?;
        if !inline {
            let value = Value::OnDisk {
                file: self.index,
                offset,
                len: value.len() as u32,
            };
            self.store.put(key, value, expires_at, seq);
        }
        Ok(())
    }

    /// Removes `key`; whether it existed.
    pub async fn del(&self, key: &[u8]) -> io::Result<bool> {
        if self.store.entry(key).is_none() {
            return Ok(false);
        }
        let seq = self.store.next_seq();
        self.store.shard(key).lock().unwrap().remove(key);
        self.append(seq, OP_DEL, key, &[], 0).await?;
        Ok(true)
    }

    /// Adds `by` to the integer at `key` (0 if absent), atomically.
    pub async fn incr(&self, key: &[u8], by: i64) -> io::Result<Result<i64, &'static str>> {
        let seq = self.store.next_seq();
        let (value, expires_at) = {
            let mut shard = self.store.shard(key).lock().unwrap();
            let (current, expires_at) = match shard.get(key) {
                Some(e) if e.expires_at == 0 || e.expires_at > now_ms() => match &e.value {
                    Value::Inline(b) => (Some(b.clone()), e.expires_at),
                    Value::OnDisk { .. } => {
                        return Ok(Err("ERR value is not an integer or out of range"));
                    }
                },
                _ => (None, 0),
            };
            let n = match current {
                None => 0,
                Some(bytes) => match std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(n) => n,
                    None => return Ok(Err("ERR value is not an integer or out of range")),
                },
            };
            let Some(n) = n.checked_add(by) else {
                return Ok(Err("ERR increment or decrement would overflow"));
            };
            let entry = Entry {
                value: Value::Inline(n.to_string().into_bytes().into()),
                expires_at,
                seq,
            };
            shard.insert(key.to_vec(), entry);
            (n, expires_at)
        };
        self.append(seq, OP_SET, key, value.to_string().as_bytes(), expires_at)
            .await?;
        Ok(Ok(value))
    }

    /// Sets the expiry of `key`; whether it exists.
    pub async fn expire(&self, key: &[u8], expires_at: u64) -> io::Result<bool> {
        let Some(value) = self.get(key).await? else {
            return Ok(false);
        };
        self.set(key, &value, expires_at).await?;
        Ok(true)
    }

    /// Removes every key.
    pub async fn flush(&self) -> io::Result<()> {
        let seq = self.store.next_seq();
        self.store.clear(seq);
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
