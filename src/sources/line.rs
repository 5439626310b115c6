//! Line parsers (being written).
