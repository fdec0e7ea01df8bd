//! Command dispatch. Every command is a `#[probe(command)]` function of its
//! own, so ferrite-obs counts and times each one by name, gives every call a
//! command id, and attributes the io_uring requests it makes (log writes,
//! fsyncs, reads of on-disk values) to it.

use std::fmt::Write as _;
use std::io;

use ferrite_obs::probe;

use super::collections;
use super::resp::Out;
use super::store::{Local, now_ms};
use super::types::WRONGTYPE;

/// What a connection must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Go on reading.
    Continue,
    /// Send what was written, then close (QUIT).
    Close,
}

type Args = [Vec<u8>];

/// Runs one request, writing its reply to `out`.
pub async fn execute(local: &Local, args: &Args, out: &mut Out) -> After {
    let Some(name) = args.first() else {
        return After::Continue;
    };
    // Upper-cased on the stack: every command name fits in 16 bytes, and a
    // longer one (or one that is not UTF-8) matches none.
    let mut upper = [0u8; 16];
    let name = match upper.get_mut(..name.len()) {
        Some(buf) => {
            buf.copy_from_slice(name);
            buf.make_ascii_uppercase();
            std::str::from_utf8(buf).unwrap_or("")
        }
        None => "",
    };
    // (minimum arity, maximum arity or 0 for any), as Redis counts them:
    // with the command name.
    let (min, max) = match name {
        "PING" => (1, 2),
        "ECHO" | "GET" | "INCR" | "DECR" | "TTL" | "PTTL" => (2, 2),
        "SET" => (3, 0),
        "DEL" | "EXISTS" | "MGET" => (2, 0),
        "MSET" => (3, 0),
        "INCRBY" | "EXPIRE" => (3, 3),
        "DBSIZE" => (1, 1),
        "FLUSHALL" | "FLUSHDB" => (1, 2),
        "CONFIG" | "SLOWLOG" | "LATENCY" => (2, 0),
        "INFO" => (1, 0),
        "SELECT" => (2, 2),
        "QUIT" => (1, 0),
        other if let Some(arity) = collections::arity(other) => arity,
        _ => {
            let mut message = format!(
                "ERR unknown command '{}', with args beginning with: ",
                printable(&args[0])
            );
            for arg in args.iter().skip(1).take(16) {
                let _ = write!(message, "'{}' ", printable(arg));
            }
            out.error(&message);
            return After::Continue;
        }
    };
    if args.len() < min || (max != 0 && args.len() > max) {
        out.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_ascii_lowercase()
        ));
        return After::Continue;
    }
    let result = match name {
        "PING" => {
            ping(args, out);
            Ok(())
        }
        "ECHO" => {
            out.bulk(&args[1]);
            Ok(())
        }
        "GET" => get(local, args, out).await,
        "SET" => set(local, args, out).await,
        "DEL" => del(local, args, out).await,
        "EXISTS" => {
            exists(local, args, out);
            Ok(())
        }
        "INCR" => incr(local, &args[1], 1, out).await,
        "DECR" => incr(local, &args[1], -1, out).await,
        "INCRBY" => match parse_i64(&args[2]) {
            Some(by) => incr(local, &args[1], by, out).await,
            None => {
                out.error("ERR value is not an integer or out of range");
                Ok(())
            }
        },
        "MGET" => mget(local, args, out).await,
        "MSET" => mset(local, args, out).await,
        "EXPIRE" => expire(local, args, out).await,
        "TTL" | "PTTL" => {
            ttl(local, &args[1], name == "PTTL", out);
            Ok(())
        }
        "DBSIZE" => {
            out.integer(local.store().len() as i64);
            Ok(())
        }
        "FLUSHALL" | "FLUSHDB" => flushall(local, out).await,
        "CONFIG" => {
            config(args, out);
            Ok(())
        }
        "INFO" => {
            info(local, args, out);
            Ok(())
        }
        "SLOWLOG" => {
            slowlog(args, out);
            Ok(())
        }
        "LATENCY" => {
            latency(args, out);
            Ok(())
        }
        "SELECT" => {
            if args[1] == b"0" {
                out.simple("OK");
            } else {
                out.error("ERR DB index is out of range");
            }
            Ok(())
        }
        "QUIT" => {
            out.simple("OK");
            return After::Close;
        }
        other => collections::execute(local, other, args, out).await,
    };
    if let Err(e) = result {
        // An I/O error is the reply: the write was not acknowledged.
        out.error(&format!("IOERR {e}"));
    }
    After::Continue
}

fn printable(arg: &[u8]) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(128)]).into_owned()
}

fn parse_i64(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

#[probe(command, name = "PING", skip_all)]
fn ping(args: &Args, out: &mut Out) {
    match args.get(1) {
        Some(message) => out.bulk(message),
        None => out.simple("PONG"),
    }
}

#[probe(command, name = "GET", skip_all, err)]
async fn get(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    match local.get(&args[1]).await? {
        Ok(Some(value)) => out.bulk(&value),
        Ok(None) => out.null(),
        Err(_) => out.error(WRONGTYPE),
    }
    Ok(())
}

#[probe(command, name = "SET", skip_all, err)]
async fn set(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let (mut nx, mut xx, mut expires_at) = (false, false, 0u64);
    let mut options = args[3..].iter();
    while let Some(option) = options.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            unit @ (b"EX" | b"PX") if expires_at == 0 => {
                let n = options.next().and_then(|n| parse_i64(n));
                let Some(n) = n else {
                    out.error("ERR syntax error");
                    return Ok(());
                };
                let ms = if unit == b"EX" {
                    n.checked_mul(1000)
                } else {
                    Some(n)
                };
                match ms {
                    Some(ms) if ms > 0 => expires_at = now_ms().saturating_add(ms as u64),
                    _ => {
                        out.error("ERR invalid expire time in 'set' command");
                        return Ok(());
                    }
                }
            }
            _ => {
                out.error("ERR syntax error");
                return Ok(());
            }
        }
    }
    let exists = local.store().exists(&args[1]);
    if (nx && exists) || (xx && !exists) {
        out.null();
        return Ok(());
    }
    local.set(&args[1], &args[2], expires_at).await?;
    out.simple("OK");
    Ok(())
}

#[probe(command, name = "DEL", skip_all, err)]
async fn del(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let mut removed = 0;
    for key in &args[1..] {
        removed += i64::from(local.del(key).await?);
    }
    out.integer(removed);
    Ok(())
}

#[probe(command, name = "EXISTS", skip_all)]
fn exists(local: &Local, args: &Args, out: &mut Out) {
    let n = args[1..].iter().filter(|k| local.store().exists(k)).count();
    out.integer(n as i64);
}

#[probe(command, name = "INCR", skip_all, err)]
async fn incr(local: &Local, key: &[u8], by: i64, out: &mut Out) -> io::Result<()> {
    match local.incr(key, by).await? {
        Ok(n) => out.integer(n),
        Err(message) => out.error(message),
    }
    Ok(())
}

#[probe(command, name = "MGET", skip_all, err)]
async fn mget(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    out.array(args.len() - 1);
    for key in &args[1..] {
        // A key holding a collection is nil here, as in Redis.
        match local.get(key).await? {
            Ok(Some(value)) => out.bulk(&value),
            Ok(None) | Err(_) => out.null(),
        }
    }
    Ok(())
}

#[probe(command, name = "MSET", skip_all, err)]
async fn mset(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    if args.len().is_multiple_of(2) {
        out.error("ERR wrong number of arguments for 'mset' command");
        return Ok(());
    }
    for pair in args[1..].chunks(2) {
        local.set(&pair[0], &pair[1], 0).await?;
    }
    out.simple("OK");
    Ok(())
}

#[probe(command, name = "EXPIRE", skip_all, err)]
async fn expire(local: &Local, args: &Args, out: &mut Out) -> io::Result<()> {
    let Some(seconds) = parse_i64(&args[2]) else {
        out.error("ERR value is not an integer or out of range");
        return Ok(());
    };
    let key = &args[1];
    if seconds <= 0 {
        out.integer(i64::from(local.del(key).await?));
        return Ok(());
    }
    let at = now_ms().saturating_add((seconds as u64).saturating_mul(1000));
    out.integer(i64::from(local.expire(key, at).await?));
    Ok(())
}

#[probe(command, name = "TTL", skip_all)]
fn ttl(local: &Local, key: &[u8], millis: bool, out: &mut Out) {
    match local.store().ttl_ms(key) {
        None => out.integer(-2),
        Some(None) => out.integer(-1),
        Some(Some(ms)) if millis => out.integer(ms as i64),
        Some(Some(ms)) => out.integer(ms.div_ceil(1000) as i64),
    }
}

#[probe(command, name = "FLUSHALL", skip_all, err)]
async fn flushall(local: &Local, out: &mut Out) -> io::Result<()> {
    local.flush().await?;
    out.simple("OK");
    Ok(())
}

/// CONFIG GET of what clients (redis-benchmark among them) ask at start.
#[probe(command, name = "CONFIG", skip_all)]
fn config(args: &Args, out: &mut Out) {
    if !args[1].eq_ignore_ascii_case(b"GET") || args.len() != 3 {
        out.error("ERR CONFIG subcommand must be GET parameter (the others are not supported)");
        return;
    }
    let pattern = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
    let known = [("save", ""), ("appendonly", "yes"), ("databases", "1")];
    let matching: Vec<_> = known
        .iter()
        .filter(|(name, _)| pattern == "*" || pattern == *name)
        .collect();
    out.array(matching.len() * 2);
    for (name, value) in matching {
        out.bulk(name.as_bytes());
        out.bulk(value.as_bytes());
    }
}

/// INFO, with `commandstats` and `latencystats` from ferrite-obs.
#[probe(command, name = "INFO", skip_all)]
fn info(local: &Local, args: &Args, out: &mut Out) {
    let wanted = |section: &str| {
        args.len() == 1
            || args[1..].iter().any(|a| {
                a.eq_ignore_ascii_case(section.as_bytes())
                    || a.eq_ignore_ascii_case(b"all")
                    || a.eq_ignore_ascii_case(b"everything")
            })
    };
    let mut text = String::new();
    if wanted("server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:7.0.0\r\nferrite_version:{}\r\nprocess_id:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
    }
    if wanted("keyspace") {
        let keys = local.store().len();
        text.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(text, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }
        text.push_str("\r\n");
    }
    let commands = ferrite_obs::commands();
    if wanted("commandstats") {
        text.push_str("# Commandstats\r\n");
        for c in commands.iter().filter(|c| c.calls > 0) {
            let usec = c.latency.sum() / 1000;
            let _ = write!(
                text,
                "cmdstat_{}:calls={},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
                c.name.to_ascii_lowercase(),
                c.calls,
                usec as f64 / c.calls as f64,
                c.errors,
            );
        }
        text.push_str("\r\n");
    }
    if wanted("latencystats") {
        text.push_str("# Latencystats\r\n");
        for c in commands.iter().filter(|c| c.calls > 0) {
            let us = |q: f64| c.latency.quantile(q).map_or(0.0, |ns| ns as f64 / 1000.0);
            let _ = write!(
                text,
                "latency_percentiles_usec_{}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                c.name.to_ascii_lowercase(),
                us(0.5),
                us(0.99),
                us(0.999),
            );
        }
        text.push_str("\r\n");
    }
    out.bulk(text.as_bytes());
}

/// SLOWLOG GET [count] | LEN | RESET, fed by ferrite-obs's slow-command log.
#[probe(command, name = "SLOWLOG", skip_all)]
fn slowlog(args: &Args, out: &mut Out) {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"LEN" => out.integer(ferrite_obs::slowlog::read().entries.len() as i64),
        b"RESET" => {
            ferrite_obs::slowlog::reset();
            out.simple("OK");
        }
        b"GET" => {
            let count = match args.get(2).map(|a| parse_i64(a)) {
                None => 10,
                Some(Some(n)) if n >= -1 => {
                    if n == -1 {
                        usize::MAX
                    } else {
                        n as usize
                    }
                }
                Some(_) => {
                    out.error("ERR count should be greater than or equal to -1");
                    return;
                }
            };
            let log = ferrite_obs::slowlog::read();
            let entries: Vec<_> = log.entries.iter().take(count).collect();
            out.array(entries.len());
            for entry in entries {
                let started = entry
                    .started_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                out.array(6);
                out.integer(entry.id as i64);
                out.integer(started as i64);
                out.integer(entry.duration.as_micros() as i64);
                out.array(1);
                out.bulk(entry.command.as_bytes());
                out.bulk(b"");
                out.bulk(b"");
            }
        }
        _ => out.error(
            "ERR unknown subcommand for 'slowlog'. Try SLOWLOG GET, SLOWLOG LEN or SLOWLOG RESET.",
        ),
    }
}

/// LATENCY HISTOGRAM [command ...], in Redis 7's reply format (a map,
/// flattened for RESP2): per command its calls and a cumulative histogram
/// over power-of-two microsecond buckets, from ferrite-obs's histograms.
#[probe(command, name = "LATENCY", skip_all)]
fn latency(args: &Args, out: &mut Out) {
    if !args[1].eq_ignore_ascii_case(b"HISTOGRAM") {
        out.error("ERR LATENCY subcommand must be HISTOGRAM (the others are not supported)");
        return;
    }
    let wanted: Vec<String> = args[2..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let commands: Vec<_> = ferrite_obs::commands()
        .into_iter()
        .filter(|c| c.calls > 0)
        .filter(|c| wanted.is_empty() || wanted.contains(&c.name.to_ascii_lowercase()))
        .collect();
    out.array(commands.len() * 2);
    for command in commands {
        // Each bucket's count goes to the power-of-two microsecond edge
        // that covers its upper bound; the reply is cumulative.
        let mut edges: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
        for (_, high, count) in command.latency.buckets() {
            let usec = high.div_ceil(1000).max(1).next_power_of_two();
            *edges.entry(usec).or_default() += count;
        }
        out.bulk(command.name.to_ascii_lowercase().as_bytes());
        out.array(4);
        out.bulk(b"calls");
        out.integer(command.calls as i64);
        out.bulk(b"histogram_usec");
        out.array(edges.len() * 2);
        let mut cumulative = 0u64;
        for (usec, count) in edges {
            cumulative += count;
            out.integer(usec as i64);
            out.integer(cumulative as i64);
        }
    }
}
