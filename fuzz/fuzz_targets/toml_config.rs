//! The TOML configuration on arbitrary text: parsing, the semantic checks
//! and warnings `relstat check-config` runs, then, for a config they pass,
//! the status model and each file and webhook source's parser as the agent
//! builds them at start. A bad config is a list of problems, never a panic.
//! Run with `cargo fuzz run -s none toml_config` from fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relstat::check;
use relstat::config::{SourceType, parse_text};
use relstat::model::Model;
use relstat::sources::line::LineParser;
use relstat::sources::presets::PresetParser;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = parse_text(text.to_string(), None) else {
        return;
    };
    let problems = check::validate(&loaded);
    let _ = check::warnings(&loaded);
    if !problems.is_empty() {
        return;
    }
    let cfg = &loaded.config;
    let Ok(model) = Model::from_config(&cfg.model) else {
        return;
    };
    for src in &cfg.sources {
        match src.kind {
            SourceType::File => {
                let _ = LineParser::new(src, &model, &cfg.agent.site);
            }
            SourceType::Webhook | SourceType::Poll => {
                let _ = PresetParser::new(src, &model, &cfg.agent.site);
            }
            SourceType::Kubernetes => {}
        }
    }
});
