//! `ferrite-server` end to end: started as a process with ferrite-obs turned
//! on by its configuration file, driven by the real `redis-cli` (Debian
//! `redis-tools`) and by a plain RESP client; its replies, its
//! `INFO commandstats`, its `/metrics` (checked by promtool) and `/snapshot`
//! must agree with what was sent, and with the kernel view on, every GET of
//! an on-disk value and every SET must carry exactly its io_uring requests.

#[path = "../../ferrite-obs/tests/support/http.rs"]
mod http_client;
#[path = "../../ferrite-obs/tests/support/mod.rs"]
mod support;

mod common;
#[path = "common/skip.rs"]
mod skip;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Server, temp_dir};

#[test]
fn redis_cli_gets_redis_replies_and_the_figures_agree() {
    let dir = temp_dir("replies");
    let server = Server::start(&dir, "always");
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["ECHO", "hello"]), "hello");
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cli(&["GET", "k"]), "v");
    assert_eq!(server.cli(&["SET", "k", "w", "NX"]), "");
    assert_eq!(server.cli(&["SET", "k", "w", "XX"]), "OK");
    assert_eq!(server.cli(&["GET", "k"]), "w");
    assert_eq!(server.cli(&["GET", "missing"]), "");
    assert_eq!(server.cli(&["INCR", "n"]), "1");
    assert_eq!(server.cli(&["INCR", "n"]), "2");
    assert_eq!(
        server.cli(&["INCR", "k"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(server.cli(&["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(
        server.cli(&["MGET", "a", "nope", "b"]),
        "1\n\n2",
        "nil in the middle"
    );
    assert_eq!(server.cli(&["EXISTS", "a", "b", "nope"]), "2");
    assert_eq!(server.cli(&["DEL", "a", "nope"]), "1");
    assert_eq!(server.cli(&["SET", "t", "x", "EX", "100"]), "OK");
    let ttl: i64 = server.cli(&["TTL", "t"]).parse().unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    assert_eq!(server.cli(&["TTL", "k"]), "-1");
    assert_eq!(server.cli(&["TTL", "nope"]), "-2");
    assert_eq!(server.cli(&["DBSIZE"]), "4", "k, n, b, t");
    assert_eq!(
        server.cli(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        server.cli(&["FROB", "x"]),
        "ERR unknown command 'FROB', with args beginning with: 'x'"
    );
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nyes"
    );

    // A large value lives on disk and reads back whole.
    let big = "z".repeat(5000);
    assert_eq!(server.cli(&["SET", "big", &big]), "OK");
    assert_eq!(server.cli(&["GET", "big"]), big);

    // Counted by name: 5 SETs (one refused by NX), 4 GETs (a GET with no
    // key is refused before it runs).
    let stats = server.cli(&["INFO", "commandstats"]);
    let calls = |command: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no cmdstat_{command} in:\n{stats}"))
    };
    assert_eq!(
        (calls("set"), calls("get"), calls("incr")),
        (5, 4, 3),
        "{stats}"
    );
    assert!(
        server
            .cli(&["INFO", "latencystats"])
            .contains("latency_percentiles_usec_get:p50=")
    );
    // Redis 7's LATENCY HISTOGRAM reply, which redis-cli prints flat: the
    // command, "calls", its count, "histogram_usec", then edge/count pairs
    // whose last count is the call count.
    let histogram = server.cli(&["LATENCY", "HISTOGRAM", "get"]);
    let lines: Vec<&str> = histogram.lines().collect();
    assert_eq!(
        lines[..4],
        ["get", "calls", "4", "histogram_usec"],
        "{histogram}"
    );
    assert_eq!(
        lines.last(),
        Some(&"4"),
        "cumulative up to every call: {histogram}"
    );

    // With a 1 us threshold every command is slow: the log holds the latest.
    let slowlog = server.cli(&["SLOWLOG", "GET", "2"]);
    assert!(slowlog.contains("INFO"), "{slowlog}");
    assert_eq!(server.cli(&["SLOWLOG", "RESET"]), "OK");

    let endpoint = server.endpoint.expect("the endpoint is on");
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = http_client::get(endpoint, "/metrics");
        assert_eq!(status, 200);
        if metrics.contains("ferrite_command_calls_total{command=\"SET\",module=\"integration::server::commands\"} 5") {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "no SET count of 5 in:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    support::promtool_check(&metrics);
    assert_eq!(
        http_client::sample(
            &metrics,
            "ferrite_command_calls_total{command=\"GET\",module=\"integration::server::commands\"}"
        ),
        4.0
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lists, sets, hashes, sorted sets and streams reply as Redis does, refuse
/// a command of another type, and come back the same after a `kill -9` and
/// a restart (SPOP's random choice and XADD's `*` id included).
#[test]
fn collections_reply_as_redis_and_survive_kill_9() {
    let dir = temp_dir("collections");
    let server = Server::start(&dir, "always");
    let expect = |args: &[&str], reply: &str| {
        assert_eq!(server.cli(args), reply, "{args:?}");
    };
    expect(&["RPUSH", "list", "b", "c", "d"], "3");
    expect(&["LPUSH", "list", "a", "z"], "5");
    expect(&["LRANGE", "list", "0", "-1"], "z\na\nb\nc\nd");
    expect(&["LRANGE", "list", "-2", "99"], "c\nd");
    expect(&["LPOP", "list"], "z");
    expect(&["RPOP", "list", "2"], "d\nc");
    expect(&["LLEN", "list"], "2");
    expect(&["LPOP", "nothing"], "");
    expect(&["SADD", "set", "x", "y", "z", "x"], "3");
    expect(&["SISMEMBER", "set", "y"], "1");
    expect(&["SREM", "set", "y", "q"], "1");
    let popped = server.cli(&["SPOP", "set"]);
    assert!(popped == "x" || popped == "z", "{popped}");
    expect(&["SCARD", "set"], "1");
    expect(&["HSET", "hash", "f", "1", "g", "2"], "2");
    expect(&["HSET", "hash", "f", "3"], "0");
    expect(&["HGET", "hash", "f"], "3");
    expect(&["HDEL", "hash", "g", "nope"], "1");
    expect(&["HLEN", "hash"], "1");
    expect(
        &["ZADD", "zset", "2", "b", "1", "a", "3", "c", "-inf", "m"],
        "4",
    );
    expect(&["ZPOPMIN", "zset"], "m\n-inf");
    expect(
        &["ZRANGE", "zset", "0", "-1", "WITHSCORES"],
        "a\n1\nb\n2\nc\n3",
    );
    expect(&["ZSCORE", "zset", "b"], "2");
    expect(&["ZREM", "zset", "c"], "1");
    expect(
        &["ZADD", "zset", "nan", "q"],
        "ERR value is not a valid float",
    );
    let id = server.cli(&["XADD", "stream", "*", "field", "value"]);
    expect(
        &["XADD", "stream", "1-1", "f", "v"],
        "ERR The ID specified in XADD is equal or smaller than the target stream top item",
    );
    expect(&["XLEN", "stream"], "1");
    expect(
        &["XRANGE", "stream", "-", "+"],
        &format!("{id}\nfield\nvalue"),
    );
    expect(
        &["GET", "list"],
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    );
    expect(
        &["LPUSH", "hash", "x"],
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    );
    expect(&["TYPE", "list"], "list");
    expect(&["TYPE", "stream"], "stream");
    expect(&["SET", "emptied", "x"], "OK");
    expect(&["RPUSH", "gone", "x"], "1");
    expect(&["RPOP", "gone"], "x");
    expect(&["EXISTS", "gone"], "0");
    expect(&["EXPIRE", "hash", "1000"], "1");

    let state = |server: &Server| -> Vec<String> {
        [
            &["LRANGE", "list", "0", "-1"][..],
            &["SMEMBERS", "set"],
            &["HGETALL", "hash"],
            &["ZRANGE", "zset", "0", "-1", "WITHSCORES"],
            &["XRANGE", "stream", "-", "+"],
            &["TYPE", "hash"],
            &["EXISTS", "gone"],
            &["DBSIZE"],
        ]
        .iter()
        .map(|args| server.cli(args))
        .collect()
    };
    let before = state(&server);
    let ttl: u64 = server.cli(&["TTL", "hash"]).parse().unwrap();
    assert!(ttl > 990, "{ttl}");
    server.kill();
    let server = Server::start(&dir, "always");
    assert_eq!(
        state(&server),
        before,
        "the same collections after the restart"
    );
    let ttl: u64 = server.cli(&["TTL", "hash"]).parse().unwrap();
    assert!((900..=1000).contains(&ttl), "the expiry survives: {ttl}");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Malformed RESP gets Redis's protocol error, then the connection closes.
#[test]
fn protocol_errors_close_the_connection() {
    let dir = temp_dir("protocol");
    let server = Server::start(&dir, "no");
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"*1\r\n+PING\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "-ERR Protocol error: expected '$', got '+'\r\n");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let dir = temp_dir("crash");
    let server = Server::start(&dir, "always");
    let port = server.port;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = std::sync::Arc::clone(&progress);
    let writer = std::thread::spawn(move || {
        let mut client = Client::connect(port);
        let mut acknowledged = Vec::new();
        for i in 0u32.. {
            let key = format!("key:{i}");
            // Every third value is large enough to be served from disk.
            let value = if i % 3 == 0 {
                format!("{i}:{}", "v".repeat(200))
            } else {
                format!("v{i}")
            };
            client.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
            match client.reply() {
                Ok(reply) if reply == "+OK" => {
                    acknowledged.push((key, value));
                    written.store(acknowledged.len(), std::sync::atomic::Ordering::Relaxed);
                }
                other => {
                    eprintln!("writer stopped at {i}: {other:?}");
                    break; // the server is gone
                }
            }
        }
        acknowledged
    });
    // Killed in the middle of the writes, once they are well under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "the writes never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill(); // SIGKILL: no shutdown, no flush
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged.len() >= 100);

    let server = Server::start(&dir, "always");
    let mut client = Client::connect(server.port);
    for (key, value) in &acknowledged {
        client.send(&[b"GET", key.as_bytes()]);
        assert_eq!(&client.reply().unwrap(), value, "{key} was acknowledged");
    }
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `(command, opcode) -> ops` of the kernel figures in `/snapshot`.
fn kernel_ops(endpoint: SocketAddr) -> std::collections::HashMap<(String, String), u64> {
    let (status, body) = http_client::get(endpoint, "/snapshot");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("/snapshot is JSON");
    json["kernel"]["io"]
        .as_array()
        .map(|io| {
            io.iter()
                .map(|e| {
                    let command = e["command"].as_str().unwrap_or("").to_owned();
                    let opcode = e["opcode_name"].as_str().unwrap_or("").to_owned();
                    ((command, opcode), e["ops"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gets_of_on_disk_values_and_sets_carry_exactly_their_io_uring_requests() {
    let dir = temp_dir("kernel");
    let server = Server::start(&dir, "always");
    if !server.kernel.starts_with("active") {
        let reason = format!("the kernel view is not active ({})", server.kernel);
        skip::skip(
            "gets_of_on_disk_values_and_sets_carry_exactly_their_io_uring_requests",
            &reason,
        );
        return;
    }
    let endpoint = server.endpoint.expect("the endpoint is on");
    let before = kernel_ops(endpoint);
    const N: u64 = 40;
    let mut client = Client::connect(server.port);
    for i in 0..N {
        let big = format!("{i}:{}", "b".repeat(300));
        client.send(&[b"SET", format!("big:{i}").as_bytes(), big.as_bytes()]);
        assert_eq!(client.reply().unwrap(), "+OK");
        client.send(&[b"SET", format!("small:{i}").as_bytes(), b"s"]);
        assert_eq!(client.reply().unwrap(), "+OK");
    }
    for i in 0..N {
        client.send(&[b"GET", format!("big:{i}").as_bytes()]);
        assert!(client.reply().unwrap().starts_with(&format!("{i}:")));
        client.send(&[b"GET", format!("small:{i}").as_bytes()]);
        assert_eq!(client.reply().unwrap(), "s");
    }
    let delta =
        |now: &std::collections::HashMap<(String, String), u64>, command: &str, opcode: &str| {
            let key = (command.to_owned(), opcode.to_owned());
            now.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
        };
    let deadline = Instant::now() + Duration::from_secs(10);
    let now = loop {
        let now = kernel_ops(endpoint);
        if delta(&now, "GET", "read") >= N && delta(&now, "SET", "fsync") >= 2 * N {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "kernel figures never arrived: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Only GETs of on-disk values read; every SET writes and syncs its record.
    assert_eq!(delta(&now, "GET", "read"), N, "{now:?}");
    assert_eq!(delta(&now, "SET", "write"), 2 * N, "{now:?}");
    assert_eq!(delta(&now, "SET", "fsync"), 2 * N, "{now:?}");
    let misattributed: Vec<_> = now
        .iter()
        .filter(|((command, _), _)| command == "GET")
        .filter(|((_, opcode), _)| opcode != "read")
        .collect();
    assert!(
        misattributed.is_empty(),
        "GETs made no other request: {misattributed:?}"
    );
    // The connection's socket reads and writes happen outside commands.
    let unattributed: u64 = now
        .iter()
        .filter(|((command, _), _)| command.is_empty())
        .map(|(_, ops)| ops)
        .sum();
    assert!(
        unattributed >= 4 * N,
        "network requests are unattributed: {now:?}"
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_is_an_error_reply_and_loses_nothing_acknowledged() {
    if !skip::is_root() {
        skip::skip(
            "a_full_disk_is_an_error_reply_and_loses_nothing_acknowledged",
            "mounting a small tmpfs needs root",
        );
        return;
    }
    let dir = temp_dir("full");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "mount -t tmpfs");
    let server = Server::start(&dir, "always");
    let mut client = Client::connect(server.port);
    let value = "f".repeat(4000);
    let mut acknowledged = 0;
    let error = loop {
        client.send(&[
            b"SET",
            format!("k{acknowledged}").as_bytes(),
            value.as_bytes(),
        ]);
        let reply = client.reply().unwrap();
        if reply != "+OK" {
            break reply;
        }
        acknowledged += 1;
        assert!(acknowledged < 1000, "256 KiB never filled up");
    };
    assert!(
        error.starts_with("-IOERR") && error.contains("No space left"),
        "{error}"
    );
    // Everything acknowledged is still there, from disk.
    for i in 0..acknowledged {
        client.send(&[b"GET", format!("k{i}").as_bytes()]);
        assert_eq!(client.reply().unwrap(), value, "k{i}");
    }
    server.kill();
    let _ = Command::new("umount").arg(&data).status();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn thousands_of_idle_and_half_open_connections_stay_cheap() {
    const CONNECTIONS: usize = 2000;
    // Room for them on both sides (the server inherits the limit).
    let limit = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: a valid rlimit for RLIMIT_NOFILE.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        eprintln!("SKIPPED thousands_of_idle...: cannot raise RLIMIT_NOFILE to 8192");
        return;
    }
    let dir = temp_dir("idle");
    let server = Server::start(&dir, "no");
    let pid = server.child.id();
    let before = rss_kib(pid);
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        // Every other one half-open: a request cut in the middle.
        if i % 2 == 0 {
            stream.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk").unwrap();
        }
        connections.push(stream);
    }
    // All accepted and waiting: a new client is still served at once.
    assert_eq!(server.cli(&["PING"]), "PONG");
    let after = rss_kib(pid);
    let per_connection = (after.saturating_sub(before) * 1024) / CONNECTIONS as u64;
    eprintln!(
        "{CONNECTIONS} idle connections: RSS {before} -> {after} KiB, {per_connection} bytes each"
    );
    assert!(
        per_connection < 64 * 1024,
        "{per_connection} bytes per idle connection (RSS {before} -> {after} KiB)"
    );
    drop(connections);
    assert_eq!(server.cli(&["DBSIZE"]), "0", "no half-open request ran");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis-benchmark's whole default suite (no `-t`): every test runs without
/// an error reply and every command it sends is counted by name.
#[test]
fn redis_benchmark_default_tests_run_and_every_command_is_counted() {
    let dir = temp_dir("benchmark");
    let server = Server::start(&dir, "everysec");
    let out = Command::new("redis-benchmark")
        .args(["-p", &server.port.to_string()])
        .args(["-n", "2000", "-c", "8", "-r", "1000", "-q"])
        .output()
        .expect("redis-benchmark runs (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "redis-benchmark: {out:?}");
    assert!(
        !text.to_ascii_lowercase().contains("error"),
        "an error reply: {text}"
    );
    let tests = [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "ZPOPMIN",
        "LPUSH (needed to benchmark LRANGE)",
        "LRANGE_100 (first 100 elements)",
        "LRANGE_300 (first 300 elements)",
        "LRANGE_500 (first 500 elements)",
        "LRANGE_600 (first 600 elements)",
        "MSET (10 keys)",
    ];
    for test in tests {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{test}: ")) && l.contains("requests per second")),
            "{test} did not complete: {text}"
        );
    }
    // 2,000 of each test: PING_INLINE and PING_MBULK both count as PING,
    // LPUSH runs twice, LRANGE four times.
    let stats = server.cli(&["INFO", "commandstats"]);
    let mut expected = vec![("ping", 4000), ("lpush", 4000), ("lrange", 8000)];
    for command in [
        "set", "get", "incr", "rpush", "lpop", "rpop", "sadd", "hset", "spop", "zadd", "zpopmin",
        "mset",
    ] {
        expected.push((command, 2000));
    }
    for (command, calls) in expected {
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
            .unwrap_or_else(|| panic!("no cmdstat_{command}:\n{stats}"));
        assert!(
            line.starts_with(&format!("cmdstat_{command}:calls={calls},"))
                && line.ends_with(",failed_calls=0"),
            "{calls} {command} calls, none failed: {line}"
        );
    }
    let endpoint = server.endpoint.expect("the endpoint is on");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_client::get(endpoint, "/metrics");
        if metrics.contains("ferrite_command_calls_total{command=\"MSET\",module=\"integration::server::commands\"} 2000") {
            assert!(metrics.contains("ferrite_command_calls_total{command=\"SET\",module=\"integration::server::commands\"} 2000"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never counted 2000 MSETs:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
