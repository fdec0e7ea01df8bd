//! `ferrite-server`: a Redis-compatible key-value server, instrumented with
//! ferrite-obs the way Ferrite is.
//!
//! Thread-per-core: every thread runs a tokio-uring runtime (started with
//! `ferrite_obs::kernel::uring::start`, so its io_uring requests are
//! attributed to commands), accepts on its own `SO_REUSEPORT` listener, and
//! serves its connections; network and storage I/O go through io_uring. The
//! key space is shared ([`store`]).

pub mod collections;
pub mod commands;
pub mod resp;
pub mod store;
pub mod types;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_obs::probes;

use resp::{Out, parse};
use store::{Fsync, Local, Store};

/// The `[server]` section of the configuration file.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Where the logs live.
    pub data_dir: PathBuf,
    /// Serving threads (one io_uring each).
    pub threads: usize,
    /// When log records reach the disk.
    pub fsync: Fsync,
    /// Values longer than this are served from disk.
    pub value_threshold: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 6379)),
            data_dir: PathBuf::from("ferrite-data"),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            fsync: Fsync::EverySec,
            value_threshold: 1024,
        }
    }
}

impl ServerConfig {
    /// Reads the `[server]` section of a whole configuration file; every
    /// bad value is an error naming the key, the value and what is accepted.
    pub fn from_toml(text: &str) -> Result<ServerConfig, String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("the configuration is not valid TOML: {e}"))?;
        let mut config = ServerConfig::default();
        let Some(section) = table.get("server") else {
            return Ok(config);
        };
        let section = section
            .as_table()
            .ok_or("`server` must be a table: [server]")?;
        for (key, value) in section {
            let bad =
                |accepted: &str| format!("`server.{key}` = {}: expected {accepted}", show(value));
            match key.as_str() {
                "bind" => {
                    config.bind = value
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("an address such as \"127.0.0.1:6379\""))?;
                }
                "port" => {
                    let port = value
                        .as_integer()
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or_else(|| bad("a port number from 0 to 65535"))?;
                    config.bind.set_port(port);
                }
                "data_dir" => {
                    config.data_dir = value
                        .as_str()
                        .map(PathBuf::from)
                        .ok_or_else(|| bad("a path"))?;
                }
                "threads" => {
                    config.threads = value
                        .as_integer()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| bad("a whole number from 1 to 256"))?
                        as usize;
                }
                "fsync" => {
                    config.fsync = match value.as_str() {
                        Some("always") => Fsync::Always,
                        Some("everysec") => Fsync::EverySec,
                        Some("no") => Fsync::No,
                        _ => return Err(bad("\"always\", \"everysec\" or \"no\"")),
                    };
                }
                "value_threshold" => {
                    config.value_threshold = value
                        .as_integer()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| bad("a number of bytes"))?
                        as usize;
                }
                other => {
                    return Err(format!(
                        "unknown key `{other}` in [server]; valid keys: bind, port, data_dir, threads, fsync, value_threshold"
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// A TOML value as it was written, for error messages.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => format!("{d:?}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// A listener on `addr` that other threads can bind too (`SO_REUSEPORT`):
/// the kernel spreads connections over the threads.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned by the listener below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: a valid socket and an int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let (storage, len) = socket_addr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for `domain`.
    if unsafe { libc::bind(fd, std::ptr::from_ref(&storage).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a bound socket.
    if unsafe { libc::listen(fd, 1024) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}

fn socket_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough for a sockaddr_in.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is large enough for a sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Runs the server until the process ends: opens (recovering) the store,
/// binds every thread's listener, and calls `ready` with the bound address
/// once all of them listen.
pub fn run(config: &ServerConfig, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let (store, ends) = Store::open(
        &config.data_dir,
        config.threads,
        config.value_threshold,
        config.fsync,
    )?;
    // The first listener fixes the port (port 0 picks one); the others
    // share it.
    let first = reuseport_listener(config.bind)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..config.threads {
        listeners.push(reuseport_listener(addr)?);
    }
    let mut threads = Vec::new();
    for (index, (listener, end)) in listeners.into_iter().zip(ends).enumerate() {
        let store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name(format!("ferrite-{index}"))
            .spawn(move || {
                ferrite_obs::kernel::uring::start(serve_thread(store, index, end, listener))
            })?;
        threads.push(thread);
    }
    ready(addr);
    for thread in threads {
        if let Ok(Err(e)) = thread.join() {
            return Err(e);
        }
    }
    Ok(())
}

async fn serve_thread(
    store: Arc<Store>,
    index: usize,
    end: u64,
    listener: std::net::TcpListener,
) -> std::io::Result<()> {
    let local = Local::open(store, index, end).await?;
    let listener = tokio_uring::net::TcpListener::from_std(listener);
    let syncer = Rc::clone(&local);
    tokio_uring::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = syncer.sync_if_dirty().await {
                eprintln!("ferrite-server: background fsync failed: {e}");
            }
        }
    });
    let mut next_connection = (index as u64) << 48;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: say so, back off, go on.
                eprintln!("ferrite-server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        next_connection += 1;
        let _ = stream.set_nodelay(true);
        tokio_uring::spawn(serve_connection(Rc::clone(&local), stream, next_connection));
    }
}

/// Reads requests, runs them in order, writes the replies (pipelined
/// requests get their replies in one write).
async fn serve_connection(local: Rc<Local>, stream: tokio_uring::net::TcpStream, id: u64) {
    let opened = Instant::now();
    probes::connection_accept(id, -1);
    let mut commands = 0u64;
    let mut input: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Out::default();
    'connection: loop {
        let (read, returned) = stream.read(buf).await;
        buf = returned;
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
        let mut used = 0;
        loop {
            match parse(&input[used..]) {
                Ok(Some((args, len))) => {
                    used += len;
                    commands += 1;
                    if commands::execute(&local, &args, &mut out).await == commands::After::Close {
                        let _ = send(&stream, &mut out).await;
                        break 'connection;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // As Redis: the error, then the connection closes.
                    out.error(&format!("ERR {e}"));
                    let _ = send(&stream, &mut out).await;
                    break 'connection;
                }
            }
        }
        input.drain(..used);
        if send(&stream, &mut out).await.is_err() {
            break;
        }
    }
    probes::connection_close(id, commands, opened.elapsed().as_nanos() as u64);
}

async fn send(stream: &tokio_uring::net::TcpStream, out: &mut Out) -> std::io::Result<()> {
    if out.bytes.is_empty() {
        return Ok(());
    }
    let bytes = std::mem::take(&mut out.bytes);
    let (result, mut bytes) = stream.write_all(bytes).await;
    bytes.clear();
    out.bytes = bytes;
    result
}
