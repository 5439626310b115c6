//! Every line format on arbitrary input: `parse` must never panic.
//! Run with `cargo +nightly fuzz run line_parser` from the repository root.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use relstat::config::SourceConfig;
use relstat::model::Model;
use relstat::sources::line::LineParser;

/// One source per format, with dotted paths, a status map, defaults and a
/// strftime time format, so every branch of the mapping is reachable.
const SOURCES: [&str; 3] = [
    r#"
name = "json"
type = "file"
format = "json"
match = 'deploy|time'
[fields]
environment = "deploy.env"
service = "deploy.svc.name"
[status_map]
SUCCESS = "deployed"
[defaults]
site = "dc-west"
"#,
    r#"
name = "logfmt"
type = "file"
format = "logfmt"
time_format = "%d/%b/%Y:%H:%M:%S %z"
[defaults]
environment = "production"
"#,
    r#"
name = "regex"
type = "file"
format = "regex"
time_format = "epoch_s"
pattern = '^(?P<time>\S+) (?P<release>\S+) (?P<environment>\S+) (?P<status>\S+)(?: (?P<actor>.*))?$'
"#,
];

static PARSERS: LazyLock<Vec<LineParser>> = LazyLock::new(|| {
    let model = Model::builtin();
    SOURCES
        .iter()
        .map(|s| {
            let src: SourceConfig = toml::from_str(s).expect("fuzz source config parses");
            LineParser::new(&src, &model, "dc-east").expect("fuzz source config is valid")
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        for parser in PARSERS.iter() {
            let _ = parser.parse(line);
        }
    }
});
