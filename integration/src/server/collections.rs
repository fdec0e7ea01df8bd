//! Commands on lists, sets, hashes, sorted sets and streams: those
//! `redis-benchmark`'s default tests send (LPUSH, RPUSH, LPOP, RPOP, SADD,
//! HSET, SPOP, ZADD, ZPOPMIN, LRANGE, XADD) and the reads and removals that
//! go with them. Each is a `#[probe(command)]` of its own, like the string
//! commands, and each write reaches the log before it is acknowledged.

use std::collections::VecDeque;
use std::io;

use ferrite_obs::probe;

use super::resp::Out;
use super::store::{Local, WrongType, now_ms};
use super::types::{
    Collection, Removed, Reply, StreamId, WRONGTYPE, Write, format_id, format_score, parse_id,
    parse_score,
};

type Args = [Vec<u8>];

/// (minimum arity, maximum arity or 0 for any) of a collection command, as
/// Redis counts them (with the command name); `None` for another command.
pub fn arity(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "LPUSH" | "RPUSH" | "SADD" | "SREM" | "HDEL" | "ZREM" => (3, 0),
        "LPOP" | "RPOP" | "SPOP" | "ZPOPMIN" => (2, 3),
        "LLEN" | "SCARD" | "SMEMBERS" | "HGETALL" | "HLEN" | "ZCARD" | "XLEN" | "TYPE" => (2, 2),
        "SISMEMBER" | "HGET" | "ZSCORE" => (3, 3),
        "LRANGE" => (4, 4),
        "HSET" | "ZADD" => (4, 0),
        "ZRANGE" => (4, 5),
        "XADD" => (5, 0),
        "XRANGE" => (4, 6),
        _ => return None,
    })
}

/// Runs a command `arity` knows (arity checked).
pub async fn execute(local: &Local, name: &str, args: &Args, out: &mut Out) -> io::Result<()> {
    let read: fn(&Local, &Args, &mut Out) = match name {
        "LPUSH" => return lpush(local, args, out).await,
        "RPUSH" => return rpush(local, args, out).await,
        "LPOP" => return lpop(local, args, out).await,
        "RPOP" => return rpop(local, args, out).await,
        "LLEN" => llen,
        "LRANGE" => lrange,
        "SADD" => return sadd(local, args, out).await,
        "SREM" => return srem(local, args, out).await,
        "SPOP" => return spop(local, args, out).await,
        "SCARD" => scard,
        "SISMEMBER" => sismember,
        "SMEMBERS" => smembers,
        "HSET" => return hset(local, args, out).await,
        "HDEL" => return hdel(local, args, out).await,
        "HGET" => hget,
        "HGETALL" => hgetall,
        "HLEN" => hlen,
        "ZADD" => return zadd(local, args, out).await,
        "ZREM" => return zrem(local, args, out).await,
        "ZPOPMIN" => return zpopmin(local, args, out).await,
        "ZCARD" => zcard,
        "ZSCORE" => zscore,
        "ZRANGE" => zrange,
        "XADD" => return xadd(local, args, out).await,
        "XLEN" => xlen,
        "XRANGE" => xrange,
        "TYPE" => type_,
        _ => unreachable!("`arity` lists the commands `execute` runs"),
    };
    read(local, args, out);
    Ok(())
}

/// The collection `$c` (an `Option<&Collection>`) as its `$kind` variant:
/// `None` when absent, a [`WrongType`] return when of another kind.
macro_rules! typed {
    ($c:expr, $kind:ident) => {
        match $c {
            None => None,
            Some(Collection::$kind(inner)) => Some(inner),
            Some(_) => return Err(WrongType),
        }
    };
}

/// Runs a read under the key's lock; a key of another type is the
/// WRONGTYPE error.
fn read(
    local: &Local,
    key: &[u8],
    out: &mut Out,
    f: impl FnOnce(Option<&Collection>, &mut Out) -> Result<(), WrongType>,
) {
    let result = local.store().read(key, |c| f(c, out));
    if let Err(WrongType) | Ok(Err(WrongType)) = result {
        out.error(WRONGTYPE);
    }
}

/// Applies a write planned from the key's collection; replies once logged.
async fn write(
    local: &Local,
    key: &[u8],
    out: &mut Out,
    plan: impl FnOnce(Option<&Collection>) -> Result<Write, Reply>,
) -> io::Result<()> {
    local.update(key, plan).await?.send(out);
    Ok(())
}

/// The same write whatever the key holds.
async fn write_fixed(local: &Local, key: &[u8], out: &mut Out, w: Write) -> io::Result<()> {
    write(local, key, out, |_| Ok(w)).await
}

fn parse_i64(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The optional count of LPOP, RPOP, SPOP and ZPOPMIN; `None` when it is
/// invalid, after replying the error.
fn count(args: &Args, out: &mut Out) -> Option<Option<usize>> {
    match args.get(2).map(|a| parse_i64(a)) {
        None => Some(None),
        Some(Some(n)) if n >= 0 => Some(Some(n as usize)),
        Some(Some(_)) => {
            out.error("ERR value is out of range, must be positive");
            None
        }
        Some(None) => {
            out.error("ERR value is not an integer or out of range");
            None
        }
    }
}

fn wrong_arity(out: &mut Out, name: &str) {
    out.error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ));
}

/// Redis's inclusive index range (negative from the end) over `len` items.
fn index_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then_some((start as usize, stop as usize))
}

fn range_args(args: &Args, out: &mut Out) -> Option<(i64, i64)> {
    match (parse_i64(&args[2]), parse_i64(&args[3])) {
        (Some(start), Some(stop)) => Some((start, stop)),
        _ => {
            out.error("ERR value is not an integer or out of range");
            None
        }
    }
}

async fn push(local: &Local, args: &Args, out: &mut Out, left: bool) -> io::Result<()> {
    let values = args[2..].to_vec();
    write_fixed(local, &args[1], out, Write::Push { left, values }).await
}

#[probe(command, name = "LPUSH", skip_all, err)]
async fn lpush(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    push(local, args, out, true).await
}

#[probe(command, name = "RPUSH", skip_all, err)]
async fn rpush(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    push(local, args, out, false).await
}

async fn pop(local: &Local, args: &Args, out: &mut Out, left: bool) -> io::Result<()> {
    let Some(count) = count(args, out) else {
        return Ok(());
    };
    write_fixed(local, &args[1], out, Write::Pop { left, count }).await
}

#[probe(command, name = "LPOP", skip_all, err)]
async fn lpop(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    pop(local, args, out, true).await
}

#[probe(command, name = "RPOP", skip_all, err)]
async fn rpop(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    pop(local, args, out, false).await
}

#[probe(command, name = "LLEN", skip_all)]
fn llen(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        out.integer(typed!(c, List).map_or(0, VecDeque::len) as i64);
        Ok(())
    });
}

#[probe(command, name = "LRANGE", skip_all)]
fn lrange(local: &Local, args: &Args, out: &mut Out) {
    let Some((start, stop)) = range_args(args, out) else {
        return;
    };
    read(local, &args[1], out, |c, out| {
        let list = typed!(c, List);
        match list.and_then(|l| Some((l, index_range(l.len(), start, stop)?))) {
            None => out.array(0),
            Some((list, (from, to))) => {
                out.array(to - from + 1);
                list.range(from..=to).for_each(|v| out.bulk(v));
            }
        }
        Ok(())
    });
}

#[probe(command, name = "SADD", skip_all, err)]
async fn sadd(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    write_fixed(local, &args[1], out, Write::SAdd(args[2..].to_vec())).await
}

#[probe(command, name = "SREM", skip_all, err)]
async fn srem(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let w = Write::SRem {
        members: args[2..].to_vec(),
        reply: Removed::Count,
    };
    write_fixed(local, &args[1], out, w).await
}

/// Removes `count` (default one) random members. The choice is made here
/// and logged as the members removed, so recovery removes the same ones.
#[probe(command, name = "SPOP", skip_all, err)]
async fn spop(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let Some(count) = count(args, out) else {
        return Ok(());
    };
    write(local, &args[1], out, |c| {
        let members = match c {
            None => Vec::new(),
            Some(Collection::Set(set)) => {
                // `n` consecutive members in (per-process random) hash
                // order, from a random start among the first 64: O(n) per
                // pop, whatever the set's size.
                let n = count.unwrap_or(1).min(set.len());
                let start = (random() as usize) % (set.len() - n + 1).min(64);
                set.iter().skip(start).take(n).cloned().collect()
            }
            Some(_) => return Err(Reply::Error(WRONGTYPE.into())),
        };
        Ok(Write::SRem {
            members,
            reply: if count.is_some() {
                Removed::Members
            } else {
                Removed::Member
            },
        })
    })
    .await
}

/// A fast thread-local pseudo-random number (xorshift), seeded from the
/// clock; only SPOP's choice depends on it.
fn random() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[probe(command, name = "SCARD", skip_all)]
fn scard(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        out.integer(typed!(c, Set).map_or(0, |s| s.len()) as i64);
        Ok(())
    });
}

#[probe(command, name = "SISMEMBER", skip_all)]
fn sismember(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        out.integer(i64::from(
            typed!(c, Set).is_some_and(|s| s.contains(&args[2])),
        ));
        Ok(())
    });
}

#[probe(command, name = "SMEMBERS", skip_all)]
fn smembers(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        let set = typed!(c, Set);
        out.array(set.map_or(0, |s| s.len()));
        set.into_iter().flatten().for_each(|m| out.bulk(m));
        Ok(())
    });
}

#[probe(command, name = "HSET", skip_all, err)]
async fn hset(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    if !args.len().is_multiple_of(2) {
        wrong_arity(out, "hset");
        return Ok(());
    }
    let pairs = args[2..]
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    write_fixed(local, &args[1], out, Write::HSet(pairs)).await
}

#[probe(command, name = "HDEL", skip_all, err)]
async fn hdel(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    write_fixed(local, &args[1], out, Write::HDel(args[2..].to_vec())).await
}

#[probe(command, name = "HGET", skip_all)]
fn hget(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        match typed!(c, Hash).and_then(|h| h.get(&args[2])) {
            Some(value) => out.bulk(value),
            None => out.null(),
        }
        Ok(())
    });
}

#[probe(command, name = "HGETALL", skip_all)]
fn hgetall(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        let hash = typed!(c, Hash);
        out.array(2 * hash.map_or(0, |h| h.len()));
        for (field, value) in hash.into_iter().flatten() {
            out.bulk(field);
            out.bulk(value);
        }
        Ok(())
    });
}

#[probe(command, name = "HLEN", skip_all)]
fn hlen(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        out.integer(typed!(c, Hash).map_or(0, |h| h.len()) as i64);
        Ok(())
    });
}

/// ZADD key score member [score member ...] (no NX/XX/GT/LT/CH/INCR).
#[probe(command, name = "ZADD", skip_all, err)]
async fn zadd(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    if !args.len().is_multiple_of(2) {
        out.error("ERR syntax error");
        return Ok(());
    }
    let pairs: Option<Vec<_>> = args[2..]
        .chunks(2)
        .map(|p| Some((parse_score(&p[0])?, p[1].clone())))
        .collect();
    match pairs {
        Some(pairs) => write_fixed(local, &args[1], out, Write::ZAdd(pairs)).await,
        None => {
            out.error("ERR value is not a valid float");
            Ok(())
        }
    }
}

#[probe(command, name = "ZREM", skip_all, err)]
async fn zrem(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    write_fixed(local, &args[1], out, Write::ZRem(args[2..].to_vec())).await
}

#[probe(command, name = "ZPOPMIN", skip_all, err)]
async fn zpopmin(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let Some(count) = count(args, out) else {
        return Ok(());
    };
    write_fixed(local, &args[1], out, Write::ZPopMin(count)).await
}

#[probe(command, name = "ZCARD", skip_all)]
fn zcard(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        out.integer(typed!(c, ZSet).map_or(0, |z| z.len()) as i64);
        Ok(())
    });
}

#[probe(command, name = "ZSCORE", skip_all)]
fn zscore(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        match typed!(c, ZSet).and_then(|z| z.score(&args[2])) {
            Some(score) => out.bulk(format_score(score).as_bytes()),
            None => out.null(),
        }
        Ok(())
    });
}

/// ZRANGE key start stop [WITHSCORES], by index.
#[probe(command, name = "ZRANGE", skip_all)]
fn zrange(local: &Local, args: &Args, out: &mut Out) {
    let scores = match args.get(4) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case(b"WITHSCORES") => true,
        Some(_) => {
            out.error("ERR syntax error");
            return;
        }
    };
    let Some((start, stop)) = range_args(args, out) else {
        return;
    };
    read(local, &args[1], out, |c, out| {
        let zset = typed!(c, ZSet);
        match zset.and_then(|z| Some((z, index_range(z.len(), start, stop)?))) {
            None => out.array(0),
            Some((zset, (from, to))) => {
                let per = if scores { 2 } else { 1 };
                out.array(per * (to - from + 1));
                for (member, score) in zset.iter().skip(from).take(to - from + 1) {
                    out.bulk(member);
                    if scores {
                        out.bulk(format_score(score).as_bytes());
                    }
                }
            }
        }
        Ok(())
    });
}

/// XADD key <* | ms-seq | ms> field value [field value ...].
#[probe(command, name = "XADD", skip_all, err)]
async fn xadd(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let fields = &args[3..];
    if !fields.len().is_multiple_of(2) {
        wrong_arity(out, "xadd");
        return Ok(());
    }
    let explicit = match args[2].as_slice() {
        b"*" => None,
        id => match parse_id(id, 0) {
            Some((0, 0)) => {
                out.error("ERR The ID specified in XADD must be greater than 0-0");
                return Ok(());
            }
            Some(id) => Some(id),
            None => {
                out.error("ERR Invalid stream ID specified as stream command argument");
                return Ok(());
            }
        },
    };
    write(local, &args[1], out, |c| {
        let last = match c {
            None => (0, 0),
            Some(Collection::Stream(stream)) => stream.last,
            Some(_) => return Err(Reply::Error(WRONGTYPE.into())),
        };
        // `*`: now, or one past the last id if the clock has not passed it.
        let id = explicit.unwrap_or_else(|| match now_ms() {
            ms if ms > last.0 => (ms, 0),
            _ => (last.0, last.1 + 1),
        });
        let fields = fields.to_vec();
        Ok(Write::XAdd { id, fields })
    })
    .await
}

#[probe(command, name = "XLEN", skip_all)]
fn xlen(local: &Local, args: &Args, out: &mut Out) {
    read(local, &args[1], out, |c, out| {
        out.integer(typed!(c, Stream).map_or(0, |s| s.entries.len()) as i64);
        Ok(())
    });
}

/// XRANGE key start end [COUNT n]; `-` and `+` for the ends.
#[probe(command, name = "XRANGE", skip_all)]
fn xrange(local: &Local, args: &Args, out: &mut Out) {
    let bound = |arg: &[u8], low: bool| -> Option<StreamId> {
        match arg {
            b"-" => Some((0, 0)),
            b"+" => Some((u64::MAX, u64::MAX)),
            id => parse_id(id, if low { 0 } else { u64::MAX }),
        }
    };
    let (Some(start), Some(end)) = (bound(&args[2], true), bound(&args[3], false)) else {
        out.error("ERR Invalid stream ID specified as stream command argument");
        return;
    };
    let limit = match &args[4..] {
        [] => usize::MAX,
        [word, n] if word.eq_ignore_ascii_case(b"COUNT") => match parse_i64(n) {
            Some(n) if n >= 0 => n as usize,
            _ => {
                out.error("ERR value is not an integer or out of range");
                return;
            }
        },
        _ => {
            out.error("ERR syntax error");
            return;
        }
    };
    read(local, &args[1], out, |c, out| {
        let entries: Vec<_> = match typed!(c, Stream) {
            Some(stream) if start <= end => stream.entries.range(start..=end).take(limit).collect(),
            _ => Vec::new(),
        };
        out.array(entries.len());
        for (id, fields) in entries {
            out.array(2);
            out.bulk(&format_id(*id));
            out.array(fields.len());
            fields.iter().for_each(|f| out.bulk(f));
        }
        Ok(())
    });
}

#[probe(command, name = "TYPE", skip_all)]
fn type_(local: &Local, args: &Args, out: &mut Out) {
    out.simple(local.store().type_of(&args[1]));
}

#[cfg(test)]
mod tests {
    use super::index_range;

    #[test]
    fn index_ranges_follow_redis() {
        assert_eq!(index_range(10, 0, -1), Some((0, 9)));
        assert_eq!(index_range(10, -3, -1), Some((7, 9)));
        assert_eq!(index_range(10, 0, 99), Some((0, 9)));
        assert_eq!(index_range(10, -100, 2), Some((0, 2)));
        assert_eq!(index_range(10, 5, 2), None);
        assert_eq!(index_range(10, 10, 20), None);
        assert_eq!(index_range(0, 0, -1), None);
    }
}
