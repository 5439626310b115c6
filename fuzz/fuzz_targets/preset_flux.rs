//! The `flux` preset on arbitrary bodies: `parse` must never panic.
//! Run with `cargo +nightly fuzz run preset_flux` from the repository root.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use relstat::config::SourceConfig;
use relstat::model::Model;
use relstat::sources::presets::PresetParser;

static PARSER: LazyLock<PresetParser> = LazyLock::new(|| {
    let src: SourceConfig = toml::from_str(
        "name = \"flux\"\ntype = \"webhook\"\npreset = \"flux\"\nsecret_file = \"/s\"\n         [fields]\nversion = \"a.0.b\"\n[defaults]\nenvironment = \"production\"\n",
    )
    .expect("valid source");
    PresetParser::new(&src, &Model::builtin(), "site").expect("valid preset")
});

fuzz_target!(|data: &[u8]| {
    // The first byte picks an event-type header, as GitHub and GitLab send.
    let events = [None, Some("deployment_status"), Some("workflow_run"), Some("Pipeline Hook")];
    let (event, body) = match data.split_first() {
        Some((b, rest)) => (events[usize::from(*b) % events.len()], rest),
        None => (None, data),
    };
    assert!(!PARSER.parse(event, body, 0).is_empty());
});
