//! RESP2: requests in (arrays of bulk strings, or inline commands), replies
//! out.
//!
//! The parser is incremental and bounded: it never buffers more than one
//! request's declared size, rejects what Redis rejects with Redis's own
//! error texts, and a protocol error closes the connection, as Redis does.

use std::fmt::Write as _;

/// The largest bulk string accepted (Redis's `proto-max-bulk-len` default is
/// 512 MiB; this server keeps every request in memory, so it is smaller).
pub const MAX_BULK: usize = 64 * 1024 * 1024;
/// The most arguments in one request.
pub const MAX_ARGS: usize = 1024 * 1024;
/// The longest inline command line.
pub const MAX_INLINE: usize = 64 * 1024;

/// A request that cannot be parsed: the connection is answered with this
/// message (`-ERR Protocol error: ...`) and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

/// One parsed request: its arguments, and the bytes it took.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses one request from the front of `buf`: `Ok(None)` when more bytes
/// are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf),
        Some(_) => parse_inline(buf),
    }
}

/// The line starting at `at`, without its `\r\n`, and where the next begins.
fn line(buf: &[u8], at: usize, limit: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[at.min(buf.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = &rest[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, at + end + 1)))
        }
        None if rest.len() > limit => Err(ProtocolError("too big inline request".into())),
        None => Ok(None),
    }
}

fn number(digits: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("invalid {what}")))
}

fn parse_array(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some((header, mut at)) = line(buf, 0, 64)? else {
        return Ok(None);
    };
    let count = number(&header[1..], "multibulk length")?;
    if count > MAX_ARGS as i64 {
        return Err(ProtocolError("invalid multibulk length".into()));
    }
    let count = count.max(0) as usize;
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some((header, next)) = line(buf, at, 64)? else {
            return Ok(None);
        };
        if header.first() != Some(&b'$') {
            let got = header.first().map_or(' ', |&b| b as char);
            return Err(ProtocolError(format!("expected '$', got '{got}'")));
        }
        let len = number(&header[1..], "bulk length")?;
        if len < 0 || len as usize > MAX_BULK {
            return Err(ProtocolError("invalid bulk length".into()));
        }
        let len = len as usize;
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        if &buf[next + len..next + len + 2] != b"\r\n" {
            return Err(ProtocolError("expected CRLF after bulk string".into()));
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some((text, used)) = line(buf, 0, MAX_INLINE)? else {
        return Ok(None);
    };
    let mut args = Vec::new();
    let mut rest = text;
    loop {
        while let [b' ' | b'\t', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            break;
        }
        if rest[0] == b'"' {
            let Some(end) = rest[1..].iter().position(|&b| b == b'"') else {
                return Err(ProtocolError("unbalanced quotes in request".into()));
            };
            args.push(rest[1..=end].to_vec());
            rest = &rest[end + 2..];
        } else {
            let end = rest
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(rest.len());
            args.push(rest[..end].to_vec());
            rest = &rest[end..];
        }
    }
    Ok(Some((args, used)))
}

/// Appends replies to an output buffer.
#[derive(Debug, Default)]
pub struct Out {
    /// The encoded replies.
    pub bytes: Vec<u8>,
}

impl Out {
    /// `+text`.
    pub fn simple(&mut self, text: &str) {
        self.bytes.push(b'+');
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// `-text` (text starts with the error code, `ERR ...`).
    pub fn error(&mut self, text: &str) {
        self.bytes.push(b'-');
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// `:n`.
    pub fn integer(&mut self, n: i64) {
        let _ = write!(self, ":{n}\r\n");
    }

    /// `$len` and the bytes.
    pub fn bulk(&mut self, bytes: &[u8]) {
        let _ = write!(self, "${}\r\n", bytes.len());
        self.bytes.extend_from_slice(bytes);
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// `$-1`.
    pub fn null(&mut self) {
        self.bytes.extend_from_slice(b"$-1\r\n");
    }

    /// `*n`, followed by `n` replies the caller writes.
    pub fn array(&mut self, n: usize) {
        let _ = write!(self, "*{n}\r\n");
    }
}

impl std::fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn arrays_parse_whole_or_not_at_all() {
        let request = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..request.len() {
            assert_eq!(parse(&request[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse(request),
            Ok(Some((args(&["GET", "key"]), request.len())))
        );
    }

    #[test]
    fn inline_commands_split_on_spaces_and_quotes() {
        assert_eq!(
            parse(b"SET k \"a b\"\r\nPING\r\n"),
            Ok(Some((args(&["SET", "k", "a b"]), 13)))
        );
        assert_eq!(parse(b"PING\n"), Ok(Some((args(&["PING"]), 5))));
    }

    #[test]
    fn malformed_requests_are_redis_protocol_errors() {
        for (request, message) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*1\r\n+x\r\n", "expected '$', got '+'"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$1\r\nab\r\n", "expected CRLF after bulk string"),
            (b"SET \"a\r\n", "unbalanced quotes in request"),
        ] {
            assert_eq!(parse(request), Err(ProtocolError(message.into())));
        }
        let long = vec![b'a'; MAX_INLINE + 2];
        assert_eq!(
            parse(&long),
            Err(ProtocolError("too big inline request".into()))
        );
    }
}
