//! The `[observability]` configuration: defaults, every key, environment
//! overrides, every error message, and TOML round trips.

#![cfg(not(loom))]

use std::net::SocketAddr;
use std::time::Duration;

use ferrite_obs::config::{Config, EbpfConfig, SpanLevel};
use proptest::prelude::*;

fn error(text: &str) -> String {
    match Config::from_server_toml(text) {
        Ok(config) => panic!("{text:?} must be rejected, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn env_error(vars: &[(&str, &str)]) -> String {
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    match Config::default().with_env(vars) {
        Ok(config) => panic!("{vars:?} must be rejected, got {config:?}", vars = "env"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn no_section_means_defaults_and_other_sections_are_the_servers() {
    let config =
        Config::from_server_toml("[server]\nport = 6379\n[storage]\nfsync = \"always\"\n").unwrap();
    assert_eq!(config, Config::default());
    assert!(
        !config.enabled,
        "observability is off unless the flag is set"
    );
    assert_eq!(
        config.endpoint,
        Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        "loopback by default"
    );
}

#[test]
fn every_key_is_read() {
    let config = Config::from_server_toml(
        r#"
        [observability]
        enabled = true
        rollup_interval = "250ms"
        slow_threshold = "500us"
        slowlog_len = 64
        endpoint = "127.0.0.1:7000"
        span_level = "INFO"

        [observability.ebpf]
        enabled = false
        inflight_entries = 8192
        histogram_entries = 128
        slot_tables = 16
        ring_buffer_bytes = 65536
        blocking_threshold = "250us"
        "#,
    )
    .unwrap();
    assert_eq!(
        config,
        Config {
            enabled: true,
            rollup_interval: Duration::from_millis(250),
            slow_threshold: Duration::from_micros(500),
            slowlog_len: 64,
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 7000))),
            span_level: SpanLevel::Info,
            ebpf: EbpfConfig {
                enabled: false,
                inflight_entries: 8192,
                histogram_entries: 128,
                slot_tables: 16,
                ring_buffer_bytes: 65536,
                blocking_threshold: Duration::from_micros(250),
            },
        }
    );
    let off = Config::from_server_toml("[observability]\nendpoint = \"off\"").unwrap();
    assert_eq!(off.endpoint, None, "the endpoint can be turned off");
}

#[test]
fn servers_embed_it_in_their_own_serde_config() {
    #[derive(serde::Deserialize)]
    struct ServerConfig {
        #[expect(dead_code, reason = "only the observability section is under test")]
        port: u16,
        observability: Config,
    }
    let server: ServerConfig =
        toml::from_str("port = 6379\n[observability]\nenabled = true\n").unwrap();
    assert!(server.observability.enabled);
    let bad = toml::from_str::<ServerConfig>("port = 1\n[observability]\nenabeld = true\n");
    let message = bad.err().expect("typo rejected").to_string();
    assert!(message.contains("did you mean `enabled`?"), "{message}");
}

#[test]
fn error_messages_name_the_key_the_value_and_what_is_accepted() {
    let cases: &[(&str, &str)] = &[
        (
            "[observability]\nrollup_intervl = \"1s\"",
            "unknown key `rollup_intervl` in [observability]: did you mean `rollup_interval`?; valid keys: enabled, rollup_interval, slow_threshold, slowlog_len, endpoint, span_level, ebpf",
        ),
        (
            "[observability.ebpf]\nenable = true",
            "unknown key `ebpf.enable` in [observability]: did you mean `ebpf.enabled`?; valid keys: enabled, inflight_entries, histogram_entries, slot_tables, ring_buffer_bytes, blocking_threshold",
        ),
        (
            "[observability]\nfrobnicate = 1",
            "unknown key `frobnicate` in [observability]; valid keys: enabled, rollup_interval, slow_threshold, slowlog_len, endpoint, span_level, ebpf",
        ),
        (
            "[observability]\nenabled = \"yes\"",
            "`observability.enabled` = \"yes\": expected true or false",
        ),
        (
            "[observability]\nrollup_interval = \"fast\"",
            "`observability.rollup_interval` = \"fast\": expected a duration from \"10ms\" to \"1h\", such as \"1s\" (units ns, us, ms, s, m, h)",
        ),
        (
            "[observability]\nrollup_interval = \"1ms\"",
            "`observability.rollup_interval` = \"1ms\": expected a duration from \"10ms\" to \"1h\", such as \"1s\" (units ns, us, ms, s, m, h)",
        ),
        (
            "[observability]\nslow_threshold = 10",
            "`observability.slow_threshold` = 10: expected a duration from \"1us\" to \"1h\", such as \"10ms\" (units ns, us, ms, s, m, h)",
        ),
        (
            "[observability]\nslowlog_len = -1",
            "`observability.slowlog_len` = -1: expected a whole number from 1 to 100000",
        ),
        (
            "[observability]\nslowlog_len = 1.5",
            "`observability.slowlog_len` = 1.5: expected a whole number from 1 to 100000",
        ),
        (
            "[observability]\nendpoint = \"localhost\"",
            "`observability.endpoint` = \"localhost\": expected an address and port such as \"127.0.0.1:9464\", or \"off\"",
        ),
        (
            "[observability]\nspan_level = \"verbose\"",
            "`observability.span_level` = \"verbose\": expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        ),
        (
            "[observability.ebpf]\nring_buffer_bytes = 100000",
            "`observability.ebpf.ring_buffer_bytes` = 100000: expected a power of two from 4096 to 268435456 (256 MiB)",
        ),
        (
            "[observability.ebpf]\ninflight_entries = 10",
            "`observability.ebpf.inflight_entries` = 10: expected a whole number from 1024 to 4194304",
        ),
        (
            "[observability.ebpf]\nhistogram_entries = 1000000",
            "`observability.ebpf.histogram_entries` = 1000000: expected a whole number from 64 to 65536",
        ),
        (
            "[observability.ebpf]\nslot_tables = 0",
            "`observability.ebpf.slot_tables` = 0: expected a whole number from 1 to 4096",
        ),
        (
            "[observability]\nebpf = true",
            "`observability.ebpf` = true: expected a table: [observability.ebpf]",
        ),
        (
            "observability = 3",
            "`observability` = 3: expected a table: [observability]",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&error(text), want, "for {text:?}");
    }
    let toml = error("[observability\nenabled = true");
    assert!(
        toml.starts_with("the configuration is not valid TOML: "),
        "{toml}"
    );
    assert!(toml.contains("line 1"), "the TOML error says where: {toml}");
}

#[test]
fn environment_variables_override_the_file() {
    let file =
        Config::from_server_toml("[observability]\nenabled = false\nslowlog_len = 5").unwrap();
    let vars = [
        ("FERRITE_OBS_ENABLED", "true"),
        ("FERRITE_OBS_SLOW_THRESHOLD", "2ms"),
        ("FERRITE_OBS_ENDPOINT", "off"),
        ("FERRITE_OBS_EBPF_RING_BUFFER_BYTES", "8192"),
        ("PATH", "/usr/bin"),
    ];
    let config = file
        .with_env(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .unwrap();
    assert!(config.enabled);
    assert_eq!(
        config.slowlog_len, 5,
        "keys without a variable keep the file's value"
    );
    assert_eq!(config.slow_threshold, Duration::from_millis(2));
    assert_eq!(config.endpoint, None);
    assert_eq!(config.ebpf.ring_buffer_bytes, 8192);

    assert_eq!(
        env_error(&[("FERRITE_OBS_ENABLED", "yes")]),
        "FERRITE_OBS_ENABLED=\"yes\" (for `observability.enabled`): expected true or false"
    );
    assert_eq!(
        env_error(&[("FERRITE_OBS_EBPF_ENABLE", "true")]),
        "unknown environment variable `FERRITE_OBS_EBPF_ENABLE` (did you mean `FERRITE_OBS_EBPF_ENABLED`?): variables are FERRITE_OBS_ followed by a key in upper case, e.g. FERRITE_OBS_ENABLED or FERRITE_OBS_EBPF_ENABLED"
    );
}

fn config() -> impl Strategy<Value = Config> {
    let duration = |min_ns: u64, max_ns: u64| {
        prop_oneof![
            (min_ns..=max_ns).prop_map(Duration::from_nanos),
            (min_ns.div_ceil(1_000_000)..=max_ns / 1_000_000).prop_map(Duration::from_millis),
        ]
    };
    let level = prop::sample::select(vec![
        SpanLevel::Off,
        SpanLevel::Error,
        SpanLevel::Warn,
        SpanLevel::Info,
        SpanLevel::Debug,
        SpanLevel::Trace,
    ]);
    let endpoint = prop::option::of(
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    );
    let ebpf = (
        any::<bool>(),
        1024u32..=4_194_304,
        64u32..=65_536,
        1u32..=4096,
        12u32..=28,
        duration(10_000, 60_000_000_000),
    )
        .prop_map(
            |(
                enabled,
                inflight_entries,
                histogram_entries,
                slot_tables,
                shift,
                blocking_threshold,
            )| {
                EbpfConfig {
                    enabled,
                    inflight_entries,
                    histogram_entries,
                    slot_tables,
                    ring_buffer_bytes: 1 << shift,
                    blocking_threshold,
                }
            },
        );
    (
        any::<bool>(),
        duration(10_000_000, 3_600_000_000_000),
        duration(1_000, 3_600_000_000_000),
        1usize..=100_000,
        endpoint,
        level,
        ebpf,
    )
        .prop_map(
            |(
                enabled,
                rollup_interval,
                slow_threshold,
                slowlog_len,
                endpoint,
                span_level,
                ebpf,
            )| Config {
                enabled,
                rollup_interval,
                slow_threshold,
                slowlog_len,
                endpoint,
                span_level,
                ebpf,
            },
        )
}

proptest! {
    #[test]
    fn every_valid_config_round_trips_through_toml(config in config()) {
        let text = config.to_toml();
        let back = Config::from_server_toml(&text);
        prop_assert!(back.is_ok(), "{text}\n{:?}", back.err());
        prop_assert_eq!(back.unwrap(), config);
    }
}

#[test]
fn every_key_is_documented_with_its_default() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let defaults = Config::default().to_toml();
    for key in ferrite_obs::config::KEYS {
        let row = doc
            .lines()
            .find(|line| line.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
        // The default as `to_toml` writes it, looked up in the key's table.
        let (table, name) = match key.split_once('.') {
            Some((table, name)) => (format!("[observability.{table}]"), name),
            None => ("[observability]".to_owned(), key),
        };
        let default = defaults
            .lines()
            .skip_while(|line| *line != table)
            .take_while(|line| !line.is_empty())
            .find_map(|line| line.strip_prefix(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("to_toml writes no `{key}`"));
        let documented = row.split('|').nth(2).map(str::trim);
        assert_eq!(
            documented,
            Some(format!("`{default}`").as_str()),
            "docs/configuration.md gives `{key}` another default: {row}"
        );
    }
}
