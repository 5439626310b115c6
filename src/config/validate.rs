//! Semantic validation of a parsed config: every problem at once, each with
//! the file, line and key it concerns.

use super::{Loaded, Problem};

/// Every problem found in `loaded`; empty when the config is usable.
pub fn validate(loaded: &Loaded) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(errs) = crate::model::Model::from_config(&loaded.config.model) {
        for e in errs {
            problems.push(loaded.problem(&e.key, e.message));
        }
    }
    problems
}
