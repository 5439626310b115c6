//! Keeps docs/config.md true: every key the config structs accept is
//! documented there, and every key documented there is accepted.
//!
//! The keys come from serde itself: [`Probe`] is a deserializer that answers
//! every `deserialize_struct` by visiting each of the struct's fields (serde's
//! derive passes their names, renames applied), every option as `Some`, every
//! sequence and map with one element, so a walk of [`Config`] reaches every
//! nested struct. A field added to any config struct therefore appears here
//! without anyone updating a list.
//!
//! docs/config.md is read as: a heading that names a table in backticks
//! (`` ### `[tracking]` `` or `` ### `[[sources]]` ``) opens that table; a
//! table row whose first cell is a backticked key (`` | `max_tracked` | ``)
//! documents `table.key`. Map keys chosen by the user are written `<name>`
//! in both (`[model.states.<name>]`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::Config;

/// The segment a user-chosen map key takes in a path.
const ANY: &str = "<name>";

type Paths = Rc<RefCell<BTreeSet<String>>>;

/// A deserializer that makes up a value for every request and records the
/// path of every struct field it is asked for.
struct Probe {
    path: String,
    paths: Paths,
}

impl Probe {
    fn at(&self, segment: &str) -> Probe {
        let path = if self.path.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{segment}", self.path)
        };
        Probe {
            path,
            paths: self.paths.clone(),
        }
    }
}

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // Sizes (bytesize) and numbers accept an integer.
        v.visit_u64(1)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(true)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // A valid duration, so humantime fields parse too.
        v.visit_str("1s")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(One {
            probe: Some(self),
            key: false,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_map(One {
            probe: Some(self.at(ANY)),
            key: true,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            probe: self,
            fields: fields.iter(),
            next: None,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let first: StrDeserializer<'_, Error> = variants[0].into_deserializer();
        v.visit_enum(first)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct identifier ignored_any
    }
}

/// The fields of one struct, each recorded and then visited.
struct Fields {
    probe: Probe,
    fields: std::slice::Iter<'static, &'static str>,
    next: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, k: K) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.next = Some(field);
        let name: StrDeserializer<'_, Error> = field.into_deserializer();
        k.deserialize(name).map(Some)
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, s: S) -> Result<S::Value, Error> {
        let probe = self.probe.at(self.next.take().expect("a key first"));
        probe.paths.borrow_mut().insert(probe.path.clone());
        s.deserialize(probe)
    }
}

/// One element of a sequence, or one entry (key `<name>`) of a map.
struct One {
    probe: Option<Probe>,
    key: bool,
}

impl<'de> SeqAccess<'de> for One {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        s: S,
    ) -> Result<Option<S::Value>, Error> {
        self.probe.take().map(|p| s.deserialize(p)).transpose()
    }
}

impl<'de> MapAccess<'de> for One {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, k: K) -> Result<Option<K::Value>, Error> {
        if self.probe.is_none() || !self.key {
            return Ok(None);
        }
        self.key = false;
        let name: StrDeserializer<'_, Error> = ANY.into_deserializer();
        k.deserialize(name).map(Some)
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, s: S) -> Result<S::Value, Error> {
        s.deserialize(self.probe.take().expect("a key first"))
    }
}

/// Every key path the config accepts: `agent.data_dir`, `sources.name`,
/// `model.states.<name>.rank`, ... (arrays of tables add no segment).
pub fn accepted_keys() -> BTreeSet<String> {
    let paths: Paths = Rc::default();
    let probe = Probe {
        path: String::new(),
        paths: paths.clone(),
    };
    Config::deserialize(probe).expect("the probe satisfies every config struct");
    paths.take()
}

/// The key paths docs/config.md documents, and the tables it opens.
pub fn documented_keys(doc: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keys = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut table: Option<String> = None;
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            table = first_backticked(line)
                .filter(|t| t.starts_with('[') && t.ends_with(']'))
                .map(|t| normalise(t.trim_matches(|c| c == '[' || c == ']')));
            if let Some(t) = &table {
                tables.insert(t.clone());
            }
        } else if let (Some(t), Some(row)) = (&table, line.strip_prefix("| `"))
            && let Some(end) = row.find('`')
        {
            keys.insert(format!("{t}.{}", &row[..end]));
        }
    }
    (keys, tables)
}

fn first_backticked(line: &str) -> Option<&str> {
    let start = line.find('`')? + 1;
    let len = line[start..].find('`')?;
    Some(&line[start..start + len])
}

/// `<user>`, `<rule>`... all become `<name>`.
fn normalise(path: &str) -> String {
    path.split('.')
        .map(|s| {
            if s.starts_with('<') && s.ends_with('>') {
                ANY
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The accepted keys docs/config.md does not document (a table counts as
/// documented when it has a heading, or a heading below it), and the keys it
/// documents that the config does not accept.
pub fn compare(doc: &str) -> (Vec<String>, Vec<String>) {
    let accepted = accepted_keys();
    let (keys, tables) = documented_keys(doc);
    let undocumented = accepted
        .iter()
        .filter(|k| {
            !keys.contains(*k)
                && !tables
                    .iter()
                    .any(|t| t == *k || t.starts_with(&format!("{k}.")))
        })
        .cloned()
        .collect();
    let unknown = keys
        .iter()
        .filter(|k| !accepted.contains(*k))
        .cloned()
        .collect();
    (undocumented, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md");
        std::fs::read_to_string(path).expect("docs/config.md exists")
    }

    #[test]
    fn the_probe_reaches_nested_keys_renames_and_map_entries() {
        let keys = accepted_keys();
        for k in [
            "agent.data_dir",
            "sources.type",
            "sources.match",
            "siem.sd_id",
            "http.partners.<name>.redact",
            "model.states.<name>.stuck_after",
            "anomalies.change_freeze.windows.timezone",
            "model.permissions.allow",
        ] {
            assert!(keys.contains(k), "{k} not in {keys:?}");
        }
        assert!(!keys.contains("sources.kind"), "the serde name is used");
    }

    #[test]
    fn every_config_key_is_in_docs_config_md_and_nothing_else_is() {
        let (undocumented, unknown) = compare(&doc());
        assert!(
            undocumented.is_empty(),
            "config keys missing from docs/config.md (add a row `| `key` | type | default | \
             meaning |` under the table's heading): {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "docs/config.md documents keys the config does not accept: {unknown:?}"
        );
    }

    #[test]
    fn every_example_in_docs_config_md_parses() {
        let doc = doc();
        let mut n = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default().to_string();
            if let Err(e) = crate::config::parse_text(text.clone(), None) {
                panic!("docs/config.md example does not parse: {e}\n{text}");
            }
            n += 1;
        }
        assert!(n >= 10, "only {n} examples found");
    }

    /// Every field of a config struct (one with `deny_unknown_fields`) in
    /// src/config/mod.rs carries a `///` doc comment.
    #[test]
    fn every_config_field_has_a_doc_comment() {
        let src = include_str!("mod.rs");
        let lines: Vec<&str> = src.lines().collect();
        let mut in_config_struct = false;
        let mut missing = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("pub struct ") {
                in_config_struct = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
                    .any(|l| l.contains("deny_unknown_fields"));
            } else if line.starts_with('}') {
                in_config_struct = false;
            } else if in_config_struct && line.starts_with("    pub ") {
                let above = lines[..i]
                    .iter()
                    .rev()
                    .find(|l| !l.trim_start().starts_with("#["));
                if !above.is_some_and(|l| l.trim_start().starts_with("///")) {
                    missing.push(line.trim());
                }
            }
        }
        assert!(
            missing.is_empty(),
            "config fields without a doc comment: {missing:?}"
        );
    }

    #[test]
    fn a_key_left_out_of_the_doc_is_found() {
        let doc = doc();
        let without = doc.replace("| `when_full` |", "| when_full |");
        assert_ne!(doc, without, "docs/config.md documents spool.when_full");
        let (before, _) = compare(&doc);
        let (after, _) = compare(&without);
        let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
        assert_eq!(new, vec!["spool.when_full"]);
    }
}
