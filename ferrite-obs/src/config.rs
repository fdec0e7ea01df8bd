//! The `[observability]` section of a server's configuration.
//!
//! ```toml
//! [observability]
//! enabled = true              # the flag Ferrite flips; default false
//! rollup_interval = "1s"      # how often figures are folded into a snapshot
//! slow_threshold = "10ms"     # commands slower than this go to the slow log
//! slowlog_len = 128           # entries kept in the slow log
//! endpoint = "127.0.0.1:9464" # loopback HTTP endpoint, or "off"
//! span_level = "debug"        # most verbose level of #[probe] spans, or "off"
//!
//! [observability.ebpf]
//! enabled = true
//! inflight_entries = 65536    # in-flight io_uring requests tracked
//! histogram_entries = 4096    # (command, opcode) latency histograms
//! slot_tables = 64            # threads that can tag io_uring requests at once
//! ring_buffer_bytes = 262144  # outlier events; a power of two
//! blocking_threshold = "1ms"  # a command poll switched out sleeping longer is logged
//! ```
//!
//! Every key is optional. `Config` implements `serde::Deserialize`, so a
//! server embeds it in its own configuration whatever the format; every bad
//! value is an error naming the key, the value and what is accepted, and an
//! unknown key is rejected with the nearest valid name. Environment variables
//! override the file: `FERRITE_OBS_ENABLED=true`, `FERRITE_OBS_EBPF_ENABLED=false`,
//! one per key ([`Config::with_env`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};

use suggest::nearest;

/// "Did you mean ...?" for configuration keys, as `#[probe]` has for its
/// options: one implementation, in the macros crate.
mod suggest {
    ferrite_obs_macros::__suggest!();
}

/// The observability settings of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Turns ferrite-obs on. Off, the runtime does and costs nothing.
    pub enabled: bool,
    /// How often the collector folds the figures into a snapshot.
    pub rollup_interval: Duration,
    /// Commands slower than this are kept in the slow-command log.
    pub slow_threshold: Duration,
    /// How many entries the slow-command log keeps.
    pub slowlog_len: usize,
    /// Address of the HTTP endpoint; `None` turns it off.
    pub endpoint: Option<SocketAddr>,
    /// The most verbose level at which `#[probe]` spans are created.
    pub span_level: SpanLevel,
    /// The kernel view.
    pub ebpf: EbpfConfig,
}

/// Settings of the eBPF programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfConfig {
    /// Loads the eBPF programs (where the kernel and privileges allow).
    pub enabled: bool,
    /// In-flight io_uring requests tracked: the size of the direct-mapped
    /// table (rounded up to a power of two); the LRU map behind it, for
    /// requests whose table entry is taken, gets a quarter (at least 1,024).
    pub inflight_entries: u32,
    /// Entries of the per-(command, opcode) latency histogram map.
    pub histogram_entries: u32,
    /// Threads that can tag io_uring requests at once: each takes a 32 KiB
    /// slot table of an array that the kernel view allocates whole when it
    /// loads (2 MiB for 64) and maps into the process. A thread that finds
    /// none left is counted, and its requests are unattributed.
    pub slot_tables: u32,
    /// Size of the ring buffer for outlier events, a power of two.
    pub ring_buffer_bytes: u32,
    /// A command's poll that sleeps (blocks its thread) longer than this is
    /// counted and logged: blocking calls inside async code.
    pub blocking_threshold: Duration,
}

/// The level filter for `#[probe]` spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpanLevel {
    /// No spans.
    Off,
    /// `error` spans only.
    Error,
    /// `warn` and above.
    Warn,
    /// `info` and above.
    Info,
    /// `debug` and above (the default of `#[probe]` spans).
    Debug,
    /// Every span.
    Trace,
}

impl SpanLevel {
    const NAMES: [(&'static str, SpanLevel); 6] = [
        ("off", SpanLevel::Off),
        ("error", SpanLevel::Error),
        ("warn", SpanLevel::Warn),
        ("info", SpanLevel::Info),
        ("debug", SpanLevel::Debug),
        ("trace", SpanLevel::Trace),
    ];

    /// The level's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, level)| *level == self)
            .map_or("off", |(name, _)| name)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            rollup_interval: Duration::from_secs(1),
            slow_threshold: Duration::from_millis(10),
            slowlog_len: 128,
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            span_level: SpanLevel::Debug,
            ebpf: EbpfConfig::default(),
        }
    }
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            enabled: true,
            inflight_entries: 65_536,
            histogram_entries: 4_096,
            slot_tables: 64,
            ring_buffer_bytes: 256 * 1024,
            blocking_threshold: Duration::from_millis(1),
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file, key path `observability.KEY`.
    File,
    /// An environment variable.
    Env(String),
}

/// A configuration that cannot be used, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid TOML.
    #[error("the configuration is not valid TOML: {source}")]
    Toml {
        /// The parser's error, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// A key that does not exist.
    #[error("unknown key `{key}` in [observability]{}; valid keys: {valid}", suggestion.as_ref().map(|s| format!(": did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// The key as written, with its section path (`ebpf.enable`).
        key: String,
        /// The nearest valid key, if one is close.
        suggestion: Option<String>,
        /// Every valid key of that section.
        valid: String,
    },
    /// A value out of range or of the wrong type.
    #[error("{}: expected {expected}", describe(origin, key, value))]
    InvalidValue {
        /// The key, with its section path.
        key: String,
        /// The value as written.
        value: String,
        /// What the key accepts.
        expected: &'static str,
        /// The file or the environment variable that set it.
        origin: Origin,
    },
    /// An environment variable that names no key.
    #[error("unknown environment variable `{var}`{}: variables are FERRITE_OBS_ followed by a key in upper case, e.g. FERRITE_OBS_ENABLED or FERRITE_OBS_EBPF_ENABLED", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownEnv {
        /// The variable's name.
        var: String,
        /// The nearest valid variable, if one is close.
        suggestion: Option<String>,
    },
}

fn describe(origin: &Origin, key: &str, value: &str) -> String {
    let path = if key.is_empty() {
        "observability".to_owned()
    } else {
        format!("observability.{key}")
    };
    match origin {
        Origin::File => format!("`{path}` = {value}"),
        Origin::Env(var) => format!("{var}={value} (for `{path}`)"),
    }
}

/// A configuration value before validation, from any serde format.
#[derive(Clone, Debug, PartialEq)]
enum Raw {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Table(BTreeMap<String, Raw>),
    Other(&'static str),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Bool(b) => write!(f, "{b}"),
            Raw::Int(i) => write!(f, "{i}"),
            Raw::Float(x) => write!(f, "{x}"),
            Raw::Str(s) => write!(f, "{s:?}"),
            Raw::Table(_) => f.write_str("a table"),
            Raw::Other(what) => f.write_str(what),
        }
    }
}

impl<'de> de::Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a configuration value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_owned()))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Other("nothing"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Raw::Other("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, Raw>()? {
                    table.insert(key, value);
                }
                Ok(Raw::Table(table))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

/// Every key of the section, with its section path: the keys that
/// documentation must cover.
pub const KEYS: [&str; 12] = [
    "enabled",
    "rollup_interval",
    "slow_threshold",
    "slowlog_len",
    "endpoint",
    "span_level",
    "ebpf.enabled",
    "ebpf.inflight_entries",
    "ebpf.histogram_entries",
    "ebpf.slot_tables",
    "ebpf.ring_buffer_bytes",
    "ebpf.blocking_threshold",
];

impl Config {
    /// Reads the `[observability]` section of a whole server configuration
    /// file; other sections are left to the server. No section: defaults.
    pub fn from_server_toml(text: &str) -> Result<Config, ConfigError> {
        let mut file: BTreeMap<String, Raw> =
            toml::from_str(text).map_err(|source| ConfigError::Toml { source })?;
        match file.remove("observability") {
            None => Ok(Config::default()),
            Some(Raw::Table(section)) => Config::from_table(&section),
            Some(other) => Err(invalid(
                "",
                &other,
                "a table: [observability]",
                &Origin::File,
            )),
        }
    }

    fn from_table(section: &BTreeMap<String, Raw>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (key, value) in section {
            config.set(key, value, &Origin::File)?;
        }
        Ok(config)
    }

    /// Applies one key (its section path, e.g. `ebpf.enabled`).
    fn set(&mut self, key: &str, raw: &Raw, origin: &Origin) -> Result<(), ConfigError> {
        let value = Value { key, raw, origin };
        match key {
            "enabled" => self.enabled = value.boolean()?,
            "rollup_interval" => {
                self.rollup_interval = value.duration(
                    Duration::from_millis(10)..=Duration::from_secs(3600),
                    "a duration from \"10ms\" to \"1h\", such as \"1s\" (units ns, us, ms, s, m, h)",
                )?;
            }
            "slow_threshold" => {
                self.slow_threshold = value.duration(
                    Duration::from_micros(1)..=Duration::from_secs(3600),
                    "a duration from \"1us\" to \"1h\", such as \"10ms\" (units ns, us, ms, s, m, h)",
                )?;
            }
            "slowlog_len" => {
                self.slowlog_len =
                    value.integer(1..=100_000, "a whole number from 1 to 100000")? as usize;
            }
            "endpoint" => self.endpoint = value.endpoint()?,
            "span_level" => self.span_level = value.span_level()?,
            "ebpf" => match raw {
                Raw::Table(table) => {
                    for (sub, raw) in table {
                        self.set(&format!("ebpf.{sub}"), raw, origin)?;
                    }
                }
                _ => return Err(value.invalid("a table: [observability.ebpf]")),
            },
            "ebpf.enabled" => self.ebpf.enabled = value.boolean()?,
            "ebpf.inflight_entries" => {
                self.ebpf.inflight_entries =
                    value.integer(1024..=4_194_304, "a whole number from 1024 to 4194304")? as u32;
            }
            "ebpf.histogram_entries" => {
                self.ebpf.histogram_entries =
                    value.integer(64..=65_536, "a whole number from 64 to 65536")? as u32;
            }
            "ebpf.slot_tables" => {
                self.ebpf.slot_tables =
                    value.integer(1..=4096, "a whole number from 1 to 4096")? as u32;
            }
            "ebpf.ring_buffer_bytes" => {
                const EXPECTED: &str = "a power of two from 4096 to 268435456 (256 MiB)";
                let bytes = value.integer(4096..=268_435_456, EXPECTED)?;
                if !bytes.is_power_of_two() {
                    return Err(value.invalid(EXPECTED));
                }
                self.ebpf.ring_buffer_bytes = bytes as u32;
            }
            "ebpf.blocking_threshold" => {
                self.ebpf.blocking_threshold = value.duration(
                    Duration::from_micros(10)..=Duration::from_secs(60),
                    "a duration from \"10us\" to \"1m\", such as \"1ms\" (units ns, us, ms, s, m, h)",
                )?;
            }
            unknown => return Err(unknown_key(unknown)),
        }
        Ok(())
    }

    /// Applies the `FERRITE_OBS_*` environment variables of this process on
    /// top of `self`.
    pub fn with_process_env(self) -> Result<Config, ConfigError> {
        self.with_env(std::env::vars())
    }

    /// Applies `FERRITE_OBS_*` variables from `vars` on top of `self`; other
    /// variables are ignored. `FERRITE_OBS_ENDPOINT=off` turns the endpoint
    /// off; values are written as in the file, without quotes.
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        for (var, value) in vars {
            let Some(name) = var.strip_prefix("FERRITE_OBS_") else {
                continue;
            };
            let key = KEYS
                .iter()
                .find(|key| env_name(key) == name)
                .ok_or_else(|| ConfigError::UnknownEnv {
                    var: var.clone(),
                    suggestion: nearest(
                        name,
                        &KEYS
                            .map(env_name)
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>(),
                    )
                    .map(|near| format!("FERRITE_OBS_{near}")),
                })?;
            let raw = env_value(&value);
            self.set(key, &raw, &Origin::Env(var.clone()))?;
        }
        Ok(self)
    }

    /// The section as TOML, `[observability]` header included; reading it back
    /// gives the same configuration.
    pub fn to_toml(&self) -> String {
        let endpoint = self
            .endpoint
            .map_or_else(|| "off".to_string(), |addr| addr.to_string());
        format!(
            "[observability]\n\
             enabled = {}\n\
             rollup_interval = \"{}\"\n\
             slow_threshold = \"{}\"\n\
             slowlog_len = {}\n\
             endpoint = \"{}\"\n\
             span_level = \"{}\"\n\
             \n\
             [observability.ebpf]\n\
             enabled = {}\n\
             inflight_entries = {}\n\
             histogram_entries = {}\n\
             slot_tables = {}\n\
             ring_buffer_bytes = {}\n\
             blocking_threshold = \"{}\"\n",
            self.enabled,
            format_duration(self.rollup_interval),
            format_duration(self.slow_threshold),
            self.slowlog_len,
            endpoint,
            self.span_level.as_str(),
            self.ebpf.enabled,
            self.ebpf.inflight_entries,
            self.ebpf.histogram_entries,
            self.ebpf.slot_tables,
            self.ebpf.ring_buffer_bytes,
            format_duration(self.ebpf.blocking_threshold),
        )
    }
}

impl<'de> de::Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Raw::deserialize(deserializer)? {
            Raw::Table(section) => Config::from_table(&section).map_err(de::Error::custom),
            other => Err(de::Error::custom(invalid(
                "",
                &other,
                "a table: [observability]",
                &Origin::File,
            ))),
        }
    }
}

/// `ebpf.ring_buffer_bytes` -> `EBPF_RING_BUFFER_BYTES`.
fn env_name(key: &str) -> String {
    key.replace('.', "_").to_ascii_uppercase()
}

/// An environment value as the file would hold it: booleans and whole
/// numbers are typed, everything else is a string.
fn env_value(value: &str) -> Raw {
    match value {
        "true" => Raw::Bool(true),
        "false" => Raw::Bool(false),
        _ => value
            .parse::<i128>()
            .map_or_else(|_| Raw::Str(value.to_owned()), Raw::Int),
    }
}

fn invalid(key: &str, value: &Raw, expected: &'static str, origin: &Origin) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_string(),
        expected,
        origin: origin.clone(),
    }
}

fn unknown_key(key: &str) -> ConfigError {
    // The keys of the key's own table, from `KEYS`.
    let (section, name, valid): (&str, &str, Vec<&str>) = match key.strip_prefix("ebpf.") {
        Some(name) => (
            "ebpf.",
            name,
            KEYS.iter()
                .filter_map(|k| k.strip_prefix("ebpf."))
                .collect(),
        ),
        None => (
            "",
            key,
            KEYS.iter()
                .filter(|k| !k.contains('.'))
                .copied()
                .chain(["ebpf"])
                .collect(),
        ),
    };
    ConfigError::UnknownKey {
        key: key.to_owned(),
        suggestion: nearest(name, &valid).map(|near| format!("{section}{near}")),
        valid: valid.join(", "),
    }
}

/// A raw value with what error messages need: its key and where it came from.
struct Value<'a> {
    key: &'a str,
    raw: &'a Raw,
    origin: &'a Origin,
}

impl Value<'_> {
    fn invalid(&self, expected: &'static str) -> ConfigError {
        invalid(self.key, self.raw, expected, self.origin)
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.raw {
            Raw::Bool(b) => Ok(*b),
            _ => Err(self.invalid("true or false")),
        }
    }

    fn integer(
        &self,
        range: std::ops::RangeInclusive<u64>,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        match self.raw {
            Raw::Int(i) => u64::try_from(*i)
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| self.invalid(expected)),
            _ => Err(self.invalid(expected)),
        }
    }

    fn duration(
        &self,
        range: std::ops::RangeInclusive<Duration>,
        expected: &'static str,
    ) -> Result<Duration, ConfigError> {
        match self.raw {
            Raw::Str(text) => parse_duration(text)
                .filter(|d| range.contains(d))
                .ok_or_else(|| self.invalid(expected)),
            _ => Err(self.invalid(expected)),
        }
    }

    fn endpoint(&self) -> Result<Option<SocketAddr>, ConfigError> {
        const EXPECTED: &str = "an address and port such as \"127.0.0.1:9464\", or \"off\"";
        match self.raw {
            Raw::Str(s) if s == "off" => Ok(None),
            Raw::Bool(false) => Ok(None),
            Raw::Str(s) => s.parse().map(Some).map_err(|_| self.invalid(EXPECTED)),
            _ => Err(self.invalid(EXPECTED)),
        }
    }

    fn span_level(&self) -> Result<SpanLevel, ConfigError> {
        const EXPECTED: &str =
            "one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\"";
        match self.raw {
            Raw::Str(s) => SpanLevel::NAMES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(s))
                .map(|(_, level)| *level)
                .ok_or_else(|| self.invalid(EXPECTED)),
            _ => Err(self.invalid(EXPECTED)),
        }
    }
}

/// `"250ms"`, `"1s"`, `"1500us"`: a whole number and a unit.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let nanos_per: u64 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    n.checked_mul(nanos_per).map(Duration::from_nanos)
}

/// The largest unit that writes `d` exactly.
fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, per) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos > 0 && nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}
