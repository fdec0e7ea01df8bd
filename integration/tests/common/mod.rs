//! What the end-to-end tests share: a `ferrite-server` process, a scratch
//! directory, a minimal RESP client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER: &str = env!("CARGO_BIN_EXE_ferrite-server");

/// A running server, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) kernel: String,
}

impl Server {
    pub(crate) fn start(dir: &Path, fsync: &str) -> Server {
        let config = dir.join("ferrite.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nport = 0\nthreads = 2\nfsync = \"{fsync}\"\nvalue_threshold = 64\ndata_dir = \"{}\"\n\n\
                 [observability]\nenabled = true\nendpoint = \"127.0.0.1:0\"\nrollup_interval = \"20ms\"\nslow_threshold = \"1us\"\nslowlog_len = 16\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(SERVER)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .spawn()
            .expect("ferrite-server starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut port, mut endpoint, mut kernel) = (None, None, String::new());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            let text = line.trim().to_owned();
            line.clear();
            if let Some(rest) = text.strip_prefix("ready ") {
                port = rest.split(' ').next().and_then(|p| p.parse().ok());
            } else if let Some(rest) = text.strip_prefix("metrics: curl -s http://") {
                endpoint = rest.split('/').next().and_then(|a| a.parse().ok());
            } else if let Some(rest) = text.strip_prefix("kernel view: ") {
                kernel = rest.to_owned();
            } else if text.starts_with("bpftrace:") {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Server {
            child,
            port: port.expect("the server printed `ready PORT PID`"),
            endpoint,
            kernel,
        }
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal RESP client: one request, one reply line (or bulk).
pub(crate) struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    pub(crate) fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub(crate) fn send(&mut self, args: &[&[u8]]) {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&request).unwrap();
    }

    /// The reply's first line; for a bulk string, its contents.
    pub(crate) fn reply(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end().to_owned();
        if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) {
            let mut bulk = vec![0u8; len + 2];
            self.stream.read_exact(&mut bulk)?;
            return Ok(String::from_utf8_lossy(&bulk[..len]).into_owned());
        }
        Ok(line)
    }
}
