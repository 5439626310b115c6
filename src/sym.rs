//! Interned strings for what the tracker keeps per key: the key's service,
//! environment and site ([`crate::event::Key`]), statuses (the current one,
//! the ones passed, flapping's), the last reporter's actor and source. They
//! repeat across every key — a handful of state ids, services, sites,
//! actors and sources for 10,000 releases — so a key holds a [`Sym`] (one
//! shared, reference-counted copy, 16 bytes) instead of its own `String`
//! (24 bytes and an allocation each; issue 23, the compact key state). The
//! rollup index and the effects handed to the sinks hold the same copies.
//!
//! A `Sym` is a string in every respect that shows: it compares, orders,
//! hashes, prints and (de)serializes as its text, so the stored and served
//! forms are those of the `String` it replaces, and nothing depends on the
//! order strings were first seen in (nor on the status model's order).
//!
//! The interner is process-wide and bounded: it holds at most
//! [`MAX_INTERNED`] strings of at most [`MAX_LEN`] bytes. When full, it
//! drops the strings no key holds any more; a string it cannot take (too
//! long, or the table full of live ones: hostile actors) still becomes a
//! `Sym`, only not a shared one.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most strings the interner holds.
pub const MAX_INTERNED: usize = 4096;
/// The longest string the interner takes (longer ones are not shared).
pub const MAX_LEN: usize = 128;

/// An immutable, shared string (see the module doc).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sym(Arc<str>);

struct Interner {
    set: HashSet<Arc<str>>,
    /// The most strings it holds.
    cap: usize,
    /// Inserts refused since the last sweep: a full table of live strings
    /// is swept again only after as many refusals as it holds.
    refused: usize,
}

fn interner() -> &'static Mutex<Interner> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    INTERNER.get_or_init(|| Mutex::new(Interner::new(MAX_INTERNED)))
}

impl Interner {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            cap,
            refused: 0,
        }
    }

    fn get(&mut self, s: &str) -> Sym {
        if s.len() > MAX_LEN {
            return Sym(Arc::from(s));
        }
        if let Some(a) = self.set.get(s) {
            return Sym(Arc::clone(a));
        }
        if self.set.len() >= self.cap {
            if self.refused < self.cap {
                self.refused += 1;
                return Sym(Arc::from(s));
            }
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.refused = 0;
            if self.set.len() >= self.cap {
                return Sym(Arc::from(s));
            }
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(Arc::clone(&a));
        Sym(a)
    }
}

impl Sym {
    /// The shared copy of `s` (made on first sight).
    pub fn new(s: &str) -> Self {
        // A poisoned lock only means another thread panicked while holding
        // it; the set itself is always consistent.
        interner().lock().unwrap_or_else(|e| e.into_inner()).get(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared copy itself, for holders typed `Arc<str>` (the rollup
    /// summaries the metrics keep): one more reference, not a copy.
    pub fn to_arc(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// Whether `a` and `b` are one shared copy (tests).
    pub fn ptr_eq(a: &Sym, b: &Sym) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Default for Sym {
    fn default() -> Self {
        Self::new("")
    }
}

impl Deref for Sym {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Self {
        Self::new(s)
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Self {
        Self::new(&s)
    }
}

impl From<Sym> for String {
    fn from(s: Sym) -> Self {
        s.0.to_string()
    }
}

impl PartialEq<str> for Sym {
    fn eq(&self, o: &str) -> bool {
        &*self.0 == o
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, o: &&str) -> bool {
        &*self.0 == *o
    }
}

impl PartialEq<String> for Sym {
    fn eq(&self, o: &String) -> bool {
        *self.0 == **o
    }
}

impl PartialEq<Sym> for str {
    fn eq(&self, o: &Sym) -> bool {
        self == &*o.0
    }
}

impl PartialEq<Sym> for &str {
    fn eq(&self, o: &Sym) -> bool {
        *self == &*o.0
    }
}

impl PartialEq<Sym> for String {
    fn eq(&self, o: &Sym) -> bool {
        **self == *o.0
    }
}

impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Sym;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sym, E> {
                Ok(Sym::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let a = Sym::new("in_progress");
        let b = Sym::from(String::from("in_progress"));
        assert!(Sym::ptr_eq(&a, &b));
        assert_eq!(a, b);
        assert_eq!(a, "in_progress");
        assert_eq!("in_progress", a);
        assert_eq!(a.as_str(), "in_progress");
        assert_ne!(a, Sym::new("deployed"));
    }

    #[test]
    fn it_orders_hashes_and_prints_as_its_text() {
        let mut v = [Sym::new("b"), Sym::new("a"), Sym::new("c")];
        v.sort();
        assert_eq!(v.map(|s| s.to_string()), ["a", "b", "c"]);
        assert_eq!(format!("{:?}", Sym::new("x\"y")), format!("{:?}", "x\"y"));
        let m: std::collections::BTreeMap<Sym, u8> = [(Sym::new("deployed"), 1)].into();
        assert_eq!(m.get("deployed"), Some(&1));
        let h: HashSet<Sym> = [Sym::new("deployed")].into();
        assert!(h.contains("deployed"));
    }

    #[test]
    fn serde_is_the_strings() {
        let v = vec![Sym::new("a\u{e9}"), Sym::new("")];
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(j, serde_json::to_string(&["a\u{e9}", ""]).unwrap());
        let back: Vec<Sym> = serde_json::from_str(&j).unwrap();
        assert_eq!(back, v);
        assert!(Sym::ptr_eq(&back[0], &v[0]));
        // An escaped string (not borrowable from the input) reads too.
        let esc: Sym = serde_json::from_str(r#""a\nb""#).unwrap();
        assert_eq!(esc, "a\nb");
    }

    #[test]
    fn long_strings_are_not_shared_but_equal() {
        let long = "x".repeat(MAX_LEN + 1);
        let a = Sym::new(&long);
        let b = Sym::new(&long);
        assert_eq!(a, b);
        assert!(!Sym::ptr_eq(&a, &b));
    }

    #[test]
    fn the_table_is_bounded_and_sweeps_unused_strings() {
        // (Its own table: the process-wide one is shared by parallel tests.)
        const CAP: usize = 64;
        let mut i = Interner::new(CAP);
        // Hostile actors: many distinct strings, none kept. The table never
        // outgrows its cap, and each string still reads back.
        for k in 0..CAP * 10 {
            let s = format!("actor-{k}");
            assert_eq!(i.get(&s), s.as_str());
            assert!(i.set.len() <= CAP);
        }
        // Full of dead strings: a new string is shared again within as many
        // refusals as the table holds (then it is swept)...
        let mut kept = None;
        for _ in 0..=CAP {
            let a = i.get("kept");
            if Sym::ptr_eq(&a, &i.get("kept")) {
                kept = Some(a);
                break;
            }
        }
        let kept = kept.expect("shared after a sweep");
        // ... and a string a key holds survives the sweeps that follow.
        for k in 0..CAP * 10 {
            drop(i.get(&format!("more-{k}")));
            assert!(i.set.len() <= CAP);
        }
        assert!(Sym::ptr_eq(&kept, &i.get("kept")));
        // Live strings only: the table stays full and new ones are not shared.
        let live: Vec<Sym> = (0..CAP * 3).map(|k| i.get(&format!("live-{k}"))).collect();
        assert!(i.set.len() <= CAP);
        assert_eq!(live[CAP * 3 - 1], format!("live-{}", CAP * 3 - 1).as_str());
    }
}
