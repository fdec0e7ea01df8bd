//! Redis's collection types (lists, sets, hashes, sorted sets and streams)
//! and the writes that change them.
//!
//! A write is first turned into a deterministic [`Write`] (SPOP's random
//! choice becomes the members it removes, XADD's `*` the id it assigned),
//! applied to the index under the key's lock, and appended to the log in
//! that form: recovery replays the same `Write`s in the same order and
//! rebuilds the same collections.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::resp::Out;

/// The error Redis replies to a command on a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A collection stored under one key. Never empty: a write that empties it
/// removes the key, as Redis does.
#[derive(Debug)]
pub enum Collection {
    List(VecDeque<Vec<u8>>),
    Set(HashSet<Vec<u8>>),
    Hash(HashMap<Vec<u8>, Vec<u8>>),
    ZSet(ZSet),
    Stream(Stream),
}

impl Collection {
    /// The name TYPE replies.
    pub fn type_name(&self) -> &'static str {
        match self {
            Collection::List(_) => "list",
            Collection::Set(_) => "set",
            Collection::Hash(_) => "hash",
            Collection::ZSet(_) => "zset",
            Collection::Stream(_) => "stream",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Collection::List(l) => l.is_empty(),
            Collection::Set(s) => s.is_empty(),
            Collection::Hash(h) => h.is_empty(),
            Collection::ZSet(z) => z.is_empty(),
            // An empty stream is still a stream (XADD never empties one).
            Collection::Stream(_) => false,
        }
    }
}

/// A score with a total order (NaN is rejected before it gets here).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members by score, ties by member bytes.
#[derive(Debug, Default)]
pub struct ZSet {
    scores: HashMap<Vec<u8>, Score>,
    order: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    /// Sets `member`'s score; whether it is new.
    fn insert(&mut self, score: Score, member: &[u8]) -> bool {
        match self.scores.insert(member.to_vec(), score) {
            Some(old) => {
                self.order.remove(&(old, member.to_vec()));
                self.order.insert((score, member.to_vec()));
                false
            }
            None => {
                self.order.insert((score, member.to_vec()));
                true
            }
        }
    }

    fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => self.order.remove(&(score, member.to_vec())),
            None => false,
        }
    }

    /// Members in order, with their scores.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.order.iter().map(|(s, m)| (m.as_slice(), s.0))
    }

    /// `member`'s score.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).map(|s| s.0)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

/// A stream entry id: milliseconds and a sequence within them.
pub type StreamId = (u64, u64);

/// An append-only stream of field-value entries.
#[derive(Debug, Default)]
pub struct Stream {
    pub entries: BTreeMap<StreamId, Vec<Vec<u8>>>,
    pub last: StreamId,
}

/// Parses `ms-seq` (or `ms`, sequence `default_seq`).
pub fn parse_id(text: &[u8], default_seq: u64) -> Option<StreamId> {
    let text = std::str::from_utf8(text).ok()?;
    match text.split_once('-') {
        Some((ms, seq)) => Some((ms.parse().ok()?, seq.parse().ok()?)),
        None => Some((text.parse().ok()?, default_seq)),
    }
}

/// Formats an id as `ms-seq`.
pub fn format_id((ms, seq): StreamId) -> Vec<u8> {
    format!("{ms}-{seq}").into_bytes()
}

/// What a command replies (after its write is logged).
#[derive(Debug, PartialEq)]
pub enum Reply {
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    NilArray,
    Error(String),
}

impl Reply {
    /// Writes the reply in RESP2.
    pub fn send(&self, out: &mut Out) {
        match self {
            Reply::Int(n) => out.integer(*n),
            Reply::Bulk(bytes) => out.bulk(bytes),
            Reply::Nil => out.null(),
            Reply::NilArray => out.bytes.extend_from_slice(b"*-1\r\n"),
            Reply::Error(message) => out.error(message),
            Reply::Array(items) => {
                out.array(items.len());
                for item in items {
                    item.send(out);
                }
            }
        }
    }

    fn bulks(items: impl IntoIterator<Item = Vec<u8>>) -> Reply {
        Reply::Array(items.into_iter().map(Reply::Bulk).collect())
    }
}

/// A deterministic change to one key's collection: what is applied live and
/// what the log holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Push {
        left: bool,
        values: Vec<Vec<u8>>,
    },
    /// `count`: `None` pops one and replies a bulk string, `Some` replies
    /// an array.
    Pop {
        left: bool,
        count: Option<usize>,
    },
    SAdd(Vec<Vec<u8>>),
    SRem {
        members: Vec<Vec<u8>>,
        reply: Removed,
    },
    HSet(Vec<(Vec<u8>, Vec<u8>)>),
    HDel(Vec<Vec<u8>>),
    ZAdd(Vec<(f64, Vec<u8>)>),
    ZRem(Vec<Vec<u8>>),
    ZPopMin(Option<usize>),
    XAdd {
        id: StreamId,
        fields: Vec<Vec<u8>>,
    },
}

/// What a removal from a set replies (the log keeps only the members).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// How many were removed (SREM).
    Count,
    /// The members removed (SPOP with a count).
    Members,
    /// The one member removed, or nil (SPOP).
    Member,
}

impl Write {
    /// The collection the write creates when the key is absent, or `None`
    /// when it only changes an existing one.
    fn create(&self) -> Option<Collection> {
        match self {
            Write::Push { .. } => Some(Collection::List(VecDeque::new())),
            Write::SAdd(_) => Some(Collection::Set(HashSet::new())),
            Write::HSet(_) => Some(Collection::Hash(HashMap::new())),
            Write::ZAdd(_) => Some(Collection::ZSet(ZSet::default())),
            Write::XAdd { .. } => Some(Collection::Stream(Stream::default())),
            _ => None,
        }
    }

    /// The reply of the write on an absent key that it does not create.
    fn on_absent(&self) -> Reply {
        match self {
            Write::Pop { count: None, .. } => Reply::Nil,
            Write::Pop { count: Some(_), .. } => Reply::NilArray,
            Write::SRem {
                reply: Removed::Member,
                ..
            } => Reply::Nil,
            Write::SRem {
                reply: Removed::Members,
                ..
            }
            | Write::ZPopMin(_) => Reply::Array(Vec::new()),
            _ => Reply::Int(0),
        }
    }

    /// Applies the write to `slot` (the key's collection, `None` if absent);
    /// returns the reply and whether anything changed. A slot the write
    /// empties is set to `None`. Errors with [`WRONGTYPE`] on another type.
    pub fn apply(&self, slot: &mut Option<Box<Collection>>) -> Result<(Reply, bool), &'static str> {
        let created = slot.is_none();
        if created {
            match self.create() {
                Some(empty) => *slot = Some(Box::new(empty)),
                None => return Ok((self.on_absent(), false)),
            }
        }
        let result = self.apply_to(slot.as_mut().expect("created above"));
        if result.is_err() && created {
            *slot = None;
        }
        if slot.as_ref().is_some_and(|c| c.is_empty()) {
            *slot = None;
        }
        result
    }

    fn apply_to(&self, collection: &mut Collection) -> Result<(Reply, bool), &'static str> {
        Ok(match (self, collection) {
            (Write::Push { left, values }, Collection::List(list)) => {
                for value in values {
                    if *left {
                        list.push_front(value.clone());
                    } else {
                        list.push_back(value.clone());
                    }
                }
                (Reply::Int(list.len() as i64), true)
            }
            (Write::Pop { left, count }, Collection::List(list)) => {
                let n = count.unwrap_or(1).min(list.len());
                let popped: Vec<Vec<u8>> = (0..n)
                    .filter_map(|_| {
                        if *left {
                            list.pop_front()
                        } else {
                            list.pop_back()
                        }
                    })
                    .collect();
                let reply = match count {
                    None => popped.into_iter().next().map_or(Reply::Nil, Reply::Bulk),
                    Some(_) => Reply::bulks(popped),
                };
                (reply, n > 0)
            }
            (Write::SAdd(members), Collection::Set(set)) => {
                let added = members.iter().filter(|m| set.insert((*m).clone())).count();
                (Reply::Int(added as i64), added > 0)
            }
            (Write::SRem { members, reply }, Collection::Set(set)) => {
                let removed: Vec<Vec<u8>> =
                    members.iter().filter(|m| set.remove(*m)).cloned().collect();
                let changed = !removed.is_empty();
                let reply = match reply {
                    Removed::Member => removed.into_iter().next().map_or(Reply::Nil, Reply::Bulk),
                    Removed::Members => Reply::bulks(removed),
                    Removed::Count => Reply::Int(removed.len() as i64),
                };
                (reply, changed)
            }
            (Write::HSet(pairs), Collection::Hash(hash)) => {
                let added = pairs
                    .iter()
                    .filter(|(f, v)| hash.insert(f.clone(), v.clone()).is_none())
                    .count();
                (Reply::Int(added as i64), true)
            }
            (Write::HDel(fields), Collection::Hash(hash)) => {
                let removed = fields.iter().filter(|f| hash.remove(*f).is_some()).count();
                (Reply::Int(removed as i64), removed > 0)
            }
            (Write::ZAdd(pairs), Collection::ZSet(zset)) => {
                let added = pairs
                    .iter()
                    .filter(|(score, member)| zset.insert(Score(*score), member))
                    .count();
                (Reply::Int(added as i64), true)
            }
            (Write::ZRem(members), Collection::ZSet(zset)) => {
                let removed = members.iter().filter(|m| zset.remove(m)).count();
                (Reply::Int(removed as i64), removed > 0)
            }
            (Write::ZPopMin(count), Collection::ZSet(zset)) => {
                let n = count.unwrap_or(1).min(zset.len());
                let popped: Vec<(Vec<u8>, f64)> =
                    zset.iter().take(n).map(|(m, s)| (m.to_vec(), s)).collect();
                let mut items = Vec::with_capacity(2 * n);
                for (member, score) in popped {
                    zset.remove(&member);
                    items.push(Reply::Bulk(member));
                    items.push(Reply::Bulk(format_score(score).into_bytes()));
                }
                (Reply::Array(items), n > 0)
            }
            (Write::XAdd { id, fields }, Collection::Stream(stream)) => {
                if *id <= stream.last {
                    return Err(
                        "ERR The ID specified in XADD is equal or smaller than the target stream top item",
                    );
                }
                stream.entries.insert(*id, fields.clone());
                stream.last = *id;
                (Reply::Bulk(format_id(*id)), true)
            }
            _ => return Err(WRONGTYPE),
        })
    }

    /// The write as a log record's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut tag = |t: &str| parts.push(t.as_bytes().to_vec());
        match self {
            Write::Push { left, values } => {
                tag(if *left { "LPUSH" } else { "RPUSH" });
                parts.extend(values.iter().cloned());
            }
            Write::Pop { left, count } => {
                tag(if *left { "LPOP" } else { "RPOP" });
                parts.extend(count.map(|n| n.to_string().into_bytes()));
            }
            Write::SAdd(members) => {
                tag("SADD");
                parts.extend(members.iter().cloned());
            }
            Write::SRem { members, .. } => {
                tag("SREM");
                parts.extend(members.iter().cloned());
            }
            Write::HSet(pairs) => {
                tag("HSET");
                for (field, value) in pairs {
                    parts.push(field.clone());
                    parts.push(value.clone());
                }
            }
            Write::HDel(fields) => {
                tag("HDEL");
                parts.extend(fields.iter().cloned());
            }
            Write::ZAdd(pairs) => {
                tag("ZADD");
                for (score, member) in pairs {
                    parts.push(format_score(*score).into_bytes());
                    parts.push(member.clone());
                }
            }
            Write::ZRem(members) => {
                tag("ZREM");
                parts.extend(members.iter().cloned());
            }
            Write::ZPopMin(count) => {
                tag("ZPOPMIN");
                parts.extend(count.map(|n| n.to_string().into_bytes()));
            }
            Write::XAdd { id, fields } => {
                tag("XADD");
                parts.push(format_id(*id));
                parts.extend(fields.iter().cloned());
            }
        }
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(&part);
        }
        out
    }

    /// Reads back what [`Write::encode`] wrote; `None` if it is not one.
    pub fn decode(mut bytes: &[u8]) -> Option<Write> {
        let mut parts = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            parts.push(bytes.get(4..4 + len)?.to_vec());
            bytes = &bytes[4 + len..];
        }
        let (tag, rest) = parts.split_first()?;
        let count = |rest: &[Vec<u8>]| match rest {
            [] => Some(None),
            [n] => Some(Some(std::str::from_utf8(n).ok()?.parse().ok()?)),
            _ => None,
        };
        let pairs = |rest: &[Vec<u8>]| -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
            rest.len().is_multiple_of(2).then(|| {
                rest.chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect()
            })
        };
        Some(match tag.as_slice() {
            b"LPUSH" | b"RPUSH" => Write::Push {
                left: tag == b"LPUSH",
                values: rest.to_vec(),
            },
            b"LPOP" | b"RPOP" => Write::Pop {
                left: tag == b"LPOP",
                count: count(rest)?,
            },
            b"SADD" => Write::SAdd(rest.to_vec()),
            b"SREM" => Write::SRem {
                members: rest.to_vec(),
                reply: Removed::Count,
            },
            b"HSET" => Write::HSet(pairs(rest)?),
            b"HDEL" => Write::HDel(rest.to_vec()),
            b"ZADD" => Write::ZAdd(
                pairs(rest)?
                    .into_iter()
                    .map(|(s, m)| Some((parse_score(&s)?, m)))
                    .collect::<Option<_>>()?,
            ),
            b"ZREM" => Write::ZRem(rest.to_vec()),
            b"ZPOPMIN" => Write::ZPopMin(count(rest)?),
            b"XADD" => Write::XAdd {
                id: parse_id(rest.first()?, 0)?,
                fields: rest[1..].to_vec(),
            },
            _ => return None,
        })
    }
}

/// A score as Redis writes it: integers without a fraction, `inf`, `-inf`,
/// otherwise the shortest text that reads back exactly.
pub fn format_score(score: f64) -> String {
    if score.is_infinite() {
        return if score > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    format!("{score}")
}

/// Parses a score as Redis accepts it (`inf`, `+inf`, `-inf` included);
/// NaN is not a score.
pub fn parse_score(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    let score = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    (!score.is_nan()).then_some(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn every_write_reads_back_from_its_log_form() {
        let writes = [
            Write::Push {
                left: true,
                values: bytes(&["a", "", "c\r\n"]),
            },
            Write::Pop {
                left: false,
                count: Some(3),
            },
            Write::Pop {
                left: true,
                count: None,
            },
            Write::SAdd(bytes(&["x", "y"])),
            Write::SRem {
                members: bytes(&["x"]),
                reply: Removed::Count,
            },
            Write::HSet(vec![(b"f".to_vec(), b"v".to_vec())]),
            Write::HDel(bytes(&["f"])),
            Write::ZAdd(vec![
                (1.5, b"m".to_vec()),
                (f64::NEG_INFINITY, b"n".to_vec()),
            ]),
            Write::ZRem(bytes(&["m"])),
            Write::ZPopMin(Some(2)),
            Write::XAdd {
                id: (1_700_000_000_000, 7),
                fields: bytes(&["field", "value"]),
            },
        ];
        for write in writes {
            assert_eq!(
                Write::decode(&write.encode()),
                Some(write.clone()),
                "{write:?}"
            );
        }
        assert_eq!(Write::decode(b"\x05\0\0\0LPU"), None, "truncated");
        assert_eq!(Write::decode(&[]), None, "empty");
    }

    #[test]
    fn writes_reply_as_redis_and_empty_collections_disappear() {
        let mut slot = None;
        let push = Write::Push {
            left: true,
            values: bytes(&["a", "b"]),
        };
        assert_eq!(push.apply(&mut slot), Ok((Reply::Int(2), true)));
        let pop = Write::Pop {
            left: true,
            count: Some(5),
        };
        assert_eq!(
            pop.apply(&mut slot),
            Ok((
                Reply::Array(vec![Reply::Bulk(b"b".to_vec()), Reply::Bulk(b"a".to_vec())]),
                true
            ))
        );
        assert!(slot.is_none(), "an emptied list is removed");
        assert_eq!(pop.apply(&mut slot), Ok((Reply::NilArray, false)));

        let mut zset = None;
        Write::ZAdd(vec![
            (2.0, b"b".to_vec()),
            (1.0, b"a".to_vec()),
            (1.0, b"c".to_vec()),
        ])
        .apply(&mut zset)
        .unwrap();
        let (reply, _) = Write::ZPopMin(Some(2)).apply(&mut zset).unwrap();
        assert_eq!(
            reply,
            Reply::Array(
                bytes(&["a", "1", "c", "1"])
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect()
            )
        );
        assert_eq!(
            Write::SAdd(bytes(&["x"])).apply(&mut zset),
            Err(WRONGTYPE),
            "a set write on a sorted set"
        );

        let mut stream = None;
        let add = |id| Write::XAdd {
            id,
            fields: bytes(&["f", "v"]),
        };
        assert_eq!(
            add((5, 0)).apply(&mut stream),
            Ok((Reply::Bulk(b"5-0".to_vec()), true))
        );
        assert!(add((5, 0)).apply(&mut stream).is_err(), "ids only grow");
    }
}
