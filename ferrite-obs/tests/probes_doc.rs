//! `docs/probes.md` is the reference of the USDT probes: every probe has a
//! row there, and every row names a probe that exists.

#![cfg(not(loom))]

use ferrite_obs::probes::Probe;

fn reference() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/probes.md"))
        .expect("docs/probes.md")
}

#[test]
fn every_probe_is_documented_with_its_arguments() {
    let doc = reference();
    for probe in Probe::ALL {
        let row = doc
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", probe.name())))
            .unwrap_or_else(|| panic!("docs/probes.md has no row for `{}`", probe.name()));
        assert!(
            row.contains("`arg0`"),
            "the row of `{}` documents its arguments: {row}",
            probe.name()
        );
    }
}

#[test]
fn every_documented_probe_exists() {
    let doc = reference();
    let names: Vec<&str> = Probe::ALL.iter().map(|p| p.name()).collect();
    let documented = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next());
    for name in documented {
        assert!(
            names.contains(&name),
            "docs/probes.md documents `{name}`, which no probe is"
        );
    }
}
