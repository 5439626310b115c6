//! The audit chain's canonical form of a row, written straight from the
//! row's `Serialize` impl into one reused buffer: the bytes
//! `canonical_value(&serde_json::to_value(row))` gives (object members
//! sorted by key, null members left out, no whitespace), without building
//! the `serde_json::Value` tree (an allocation per field) on the hot path of
//! every committed history row.
//!
//! Each object's members are written into the buffer as they come, with
//! their key and byte range noted; when the object ends its members are
//! sorted and rewritten in place. Scalars go through serde_json's own
//! writer (its escaping, itoa and ryu), so they are the bytes the `Value`
//! route prints. Anything this serializer does not reproduce exactly (a
//! raw value, a map key that is not a string, a char or an integer) is an
//! error, and [`Canonical::write`] then takes the `Value` route: the result
//! is the same either way, only slower.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// serde_json's struct name for `RawValue` (`to_value` parses its content).
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// Why the direct route gave up (the `Value` route is taken instead).
#[derive(Debug)]
pub struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

fn unsupported<T>(what: &str) -> Result<T, Unsupported> {
    Err(Unsupported(what.to_string()))
}

/// An object member's key: a field name, or a map key kept in `keys`.
#[derive(Clone, Copy)]
enum KeyRef {
    Static(&'static str),
    Owned(usize, usize),
}

/// An object member: its key and the byte range of its value in `out`.
#[derive(Clone, Copy)]
struct Member {
    key: KeyRef,
    start: usize,
    end: usize,
}

fn key_of(keys: &str, k: KeyRef) -> &str {
    match k {
        KeyRef::Static(s) => s,
        KeyRef::Owned(a, b) => &keys[a..b],
    }
}

/// Where an object started: its first byte in `out` and its first member
/// and key.
#[derive(Clone, Copy)]
struct Mark {
    base: usize,
    members: usize,
    keys: usize,
}

/// The buffers of the canonical form, reused from row to row.
#[derive(Default)]
pub struct Canonical {
    out: Vec<u8>,
    /// The members of the objects being written, innermost last.
    members: Vec<Member>,
    /// Their map keys (struct fields are `&'static str`).
    keys: String,
    /// Where an object is rebuilt in sorted order before it replaces its
    /// members in `out`.
    scratch: Vec<u8>,
}

impl Canonical {
    /// The canonical form of `v`: valid until the next call.
    pub fn write<T: Serialize + ?Sized>(&mut self, v: &T) -> &[u8] {
        if self.direct(v).is_err() {
            self.out = super::canonical_via_value(v);
        }
        &self.out
    }

    /// The direct route alone.
    fn direct<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<&[u8], Unsupported> {
        self.out.clear();
        self.members.clear();
        self.keys.clear();
        v.serialize(&mut *self)?;
        Ok(&self.out)
    }

    fn scalar<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        serde_json::to_writer(&mut self.out, v).map_err(|e| Unsupported(e.to_string()))
    }

    fn begin(&mut self) -> Mark {
        Mark {
            base: self.out.len(),
            members: self.members.len(),
            keys: self.keys.len(),
        }
    }

    fn member<T: Serialize + ?Sized>(&mut self, key: KeyRef, v: &T) -> Result<(), Unsupported> {
        let start = self.out.len();
        v.serialize(&mut *self)?;
        self.members.push(Member {
            key,
            start,
            end: self.out.len(),
        });
        Ok(())
    }

    /// Rewrites the members written since `mark` as one object: sorted by
    /// key (a repeated key keeps its last value, as a map does), null
    /// members left out.
    fn end(&mut self, mark: Mark) {
        let Canonical {
            out,
            members,
            keys,
            scratch,
        } = self;
        let ms = &mut members[mark.members..];
        ms.sort_by(|a, b| key_of(keys, a.key).cmp(key_of(keys, b.key)));
        scratch.clear();
        scratch.push(b'{');
        let mut first = true;
        for (i, m) in ms.iter().enumerate() {
            let key = key_of(keys, m.key);
            if ms.get(i + 1).is_some_and(|n| key_of(keys, n.key) == key) {
                continue;
            }
            let value = &out[m.start..m.end];
            if value == b"null" {
                continue;
            }
            if !first {
                scratch.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *scratch, key).expect("writing to a Vec");
            scratch.push(b':');
            scratch.extend_from_slice(value);
        }
        scratch.push(b'}');
        out.truncate(mark.base);
        out.extend_from_slice(scratch);
        members.truncate(mark.members);
        keys.truncate(mark.keys);
    }
}

impl<'a> ser::Serializer for &'a mut Canonical {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Variant<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Variant<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    // `to_value` keeps a 128-bit integer that fits 64 bits and fails on
    // the others (the failure is reproduced by the `Value` route).
    fn serialize_i128(self, v: i128) -> Result<(), Unsupported> {
        match (u64::try_from(v), i64::try_from(v)) {
            (Ok(u), _) => self.scalar(&u),
            (_, Ok(i)) => self.scalar(&i),
            _ => unsupported("i128 out of range"),
        }
    }
    fn serialize_u128(self, v: u128) -> Result<(), Unsupported> {
        match u64::try_from(v) {
            Ok(u) => self.scalar(&u),
            Err(_) => unsupported("u128 out of range"),
        }
    }
    // Floats as the `Value` holds them (an f32 widened to f64; not finite:
    // null), printed by serde_json.
    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        self.scalar(&serde_json::Value::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        self.scalar(&serde_json::Value::from(v))
    }
    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        self.scalar(&v)
    }
    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.scalar(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        // `to_value` makes an array of numbers
        self.scalar(v)
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Unsupported> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.scalar(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        let mark = self.begin();
        self.member(KeyRef::Static(variant), v)?;
        self.end(mark);
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, Unsupported> {
        self.out.push(b'[');
        Ok(Seq {
            c: self,
            first: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Variant<'a>, Unsupported> {
        let outer = self.begin();
        self.out.push(b'[');
        Ok(Variant {
            start: self.out.len() - 1,
            c: self,
            outer,
            inner: None,
            variant,
            first: true,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Object<'a>, Unsupported> {
        Ok(Object {
            mark: self.begin(),
            c: self,
            key: None,
        })
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Object<'a>, Unsupported> {
        if name == RAW_VALUE {
            return unsupported("a raw value");
        }
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Variant<'a>, Unsupported> {
        let outer = self.begin();
        let inner = self.begin();
        Ok(Variant {
            start: inner.base,
            c: self,
            outer,
            inner: Some(inner),
            variant,
            first: true,
        })
    }
}

/// An array: its elements as they come (nulls kept, as the `Value` route
/// prints them).
pub struct Seq<'a> {
    c: &'a mut Canonical,
    first: bool,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        if !self.first {
            self.c.out.push(b',');
        }
        self.first = false;
        v.serialize(&mut *self.c)
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        self.element(v)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.c.out.push(b']');
        Ok(())
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        self.element(v)
    }
    fn end(self) -> Result<(), Unsupported> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        self.element(v)
    }
    fn end(self) -> Result<(), Unsupported> {
        ser::SerializeSeq::end(self)
    }
}

/// An object (a struct or a map).
pub struct Object<'a> {
    c: &'a mut Canonical,
    mark: Mark,
    /// The key of the member whose value comes next (a map).
    key: Option<KeyRef>,
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        let start = self.c.keys.len();
        key.serialize(MapKey(&mut self.c.keys))?;
        self.key = Some(KeyRef::Owned(start, self.c.keys.len()));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        let Some(key) = self.key.take() else {
            return unsupported("a map value without a key");
        };
        self.c.member(key, v)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.c.end(self.mark);
        Ok(())
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        self.c.member(KeyRef::Static(key), v)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.c.end(self.mark);
        Ok(())
    }
}

/// A tuple or struct variant: `{"variant": [..]}` or `{"variant": {..}}`.
pub struct Variant<'a> {
    c: &'a mut Canonical,
    outer: Mark,
    /// The struct variant's fields (None: a tuple variant's array).
    inner: Option<Mark>,
    /// Where the variant's value starts in `out`.
    start: usize,
    variant: &'static str,
    first: bool,
}

impl Variant<'_> {
    fn finish(self) -> Result<(), Unsupported> {
        match self.inner {
            Some(inner) => self.c.end(inner),
            None => self.c.out.push(b']'),
        }
        self.c.members.push(Member {
            key: KeyRef::Static(self.variant),
            start: self.start,
            end: self.c.out.len(),
        });
        self.c.end(self.outer);
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Variant<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        if !self.first {
            self.c.out.push(b',');
        }
        self.first = false;
        v.serialize(&mut *self.c)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Variant<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        self.c.member(KeyRef::Static(key), v)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

/// A map key, as `to_value` takes one: a string, a char, an integer
/// (printed), a unit variant's name; anything else is left to the `Value`
/// route.
struct MapKey<'a>(&'a mut String);

impl MapKey<'_> {
    fn int(self, v: impl itoa_like::Int) -> Result<(), Unsupported> {
        v.push(self.0);
        Ok(())
    }
}

/// Integers printed as serde_json prints a map key made of one.
mod itoa_like {
    pub trait Int {
        fn push(self, s: &mut String);
    }
    macro_rules! int {
        ($($t:ty)*) => {$(
            impl Int for $t {
                fn push(self, s: &mut String) {
                    use std::fmt::Write;
                    let _ = write!(s, "{self}");
                }
            }
        )*};
    }
    int!(i8 i16 i32 i64 u8 u16 u32 u64);
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Impossible<(), Unsupported>;
    type SerializeStruct = Impossible<(), Unsupported>;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.0.push_str(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        self.0.push(v);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unsupported> {
        self.int(v)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        v.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result<(), Unsupported> {
        unsupported("a bool map key")
    }
    fn serialize_f32(self, _: f32) -> Result<(), Unsupported> {
        unsupported("a float map key")
    }
    fn serialize_f64(self, _: f64) -> Result<(), Unsupported> {
        unsupported("a float map key")
    }
    fn serialize_i128(self, _: i128) -> Result<(), Unsupported> {
        unsupported("a 128-bit map key")
    }
    fn serialize_u128(self, _: u128) -> Result<(), Unsupported> {
        unsupported("a 128-bit map key")
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Unsupported> {
        unsupported("a bytes map key")
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        unsupported("a null map key")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Unsupported> {
        unsupported("an optional map key")
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        unsupported("a unit map key")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        unsupported("a unit map key")
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        unsupported("a variant map key")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        unsupported("an array map key")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        unsupported("a tuple map key")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        unsupported("a tuple map key")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        unsupported("a variant map key")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        unsupported("a map map key")
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        unsupported("a struct map key")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        unsupported("a variant map key")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::super::{canonical, canonical_value, canonical_via_value};
    use super::*;
    use crate::detect::Decision;
    use crate::track::codec::tests::{history, text};

    /// Any JSON document (a `Value` serializes as maps, arrays and
    /// scalars: the direct route's generic paths).
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The chain's hashes depend on these bytes: the direct route must
        /// give the `Value` route's (which wrote every hash before it), and
        /// an exported row read back must give them again.
        #[test]
        fn a_history_row_is_the_same_bytes_both_ways(rec in history()) {
            let direct = canonical(&rec);
            prop_assert_eq!(&direct, &canonical_via_value(&rec));
            // (not by the fallback)
            let mut c = Canonical::default();
            prop_assert_eq!(c.direct(&rec).unwrap(), direct.as_slice());
            let back: Value = serde_json::from_slice(&direct).unwrap();
            prop_assert_eq!(canonical_value(&back), direct);
        }

        /// One `Canonical` over many rows (its buffers reused) gives each
        /// row's bytes.
        #[test]
        fn reused_buffers_give_each_rows_bytes(recs in proptest::collection::vec(history(), 1..5)) {
            let mut c = Canonical::default();
            for rec in &recs {
                let reference = canonical_via_value(rec);
                prop_assert_eq!(c.direct(rec).unwrap(), reference.as_slice());
            }
        }

        #[test]
        fn any_json_document_is_the_same_bytes_both_ways(v in json()) {
            let reference = canonical_via_value(&v);
            prop_assert_eq!(Canonical::default().direct(&v).unwrap().to_vec(), reference);
        }
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        New(Option<String>),
        Newer(u8),
        Tuple(u8, Option<i8>, ()),
        Struct { b: Option<u8>, a: String },
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Meters(f32);

    type Nested = Vec<Option<Vec<BTreeMap<String, Option<u8>>>>>;

    #[derive(Serialize)]
    struct Wide {
        z: Vec<Shape>,
        shapes: BTreeMap<String, Shape>,
        by_number: BTreeMap<i32, Option<String>>,
        by_variant: BTreeMap<Decision, u8>,
        c: char,
        t: (u8, Option<()>, Unit),
        f: f32,
        m: Meters,
        g: Vec<f64>,
        big: i128,
        ubig: u128,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        none: Option<u8>,
        nested: Nested,
    }

    fn wide() -> Wide {
        Wide {
            z: vec![
                Shape::Unit,
                Shape::New(None),
                Shape::New(Some("x".into())),
                Shape::Newer(3),
                Shape::Tuple(1, None, ()),
                Shape::Struct {
                    b: None,
                    a: "é\"".into(),
                },
                Shape::Struct {
                    b: Some(2),
                    a: String::new(),
                },
            ],
            shapes: [("b".into(), Shape::Unit), ("a".into(), Shape::New(None))].into(),
            by_number: [
                (10, Some("ten".into())),
                (-2, None),
                (9, Some("nine".into())),
            ]
            .into(),
            by_variant: [(Decision::Revoked, 1), (Decision::Approved, 2)].into(),
            c: '\u{1}',
            t: (7, None, Unit),
            f: 0.1,
            m: Meters(f32::NAN),
            g: vec![1.5, f64::INFINITY, -0.0, 1e300, 3.0],
            big: -5,
            ubig: 1 << 70,
            skipped: None,
            none: None,
            nested: vec![
                None,
                Some(vec![[("k".into(), None), ("j".into(), Some(1))].into()]),
            ],
        }
    }

    /// serde's other shapes (variants, tuples, units, floats, non-string
    /// map keys, 128-bit integers) as `to_value` represents them.
    #[test]
    fn other_shapes_are_the_same_bytes_both_ways() {
        let mut w = wide();
        assert_eq!(
            Canonical::default().write(&w),
            canonical_via_value(&w).as_slice()
        );
        // a u128 over 64 bits fails `to_value`: the whole form is null
        assert_eq!(Canonical::default().write(&w), b"null");
        w.ubig = 12;
        let direct = Canonical::default().direct(&w).unwrap().to_vec();
        assert_eq!(direct, canonical_via_value(&w));
        let s = String::from_utf8(direct).unwrap();
        assert!(s.contains(r#"{"Struct":{"a":"é\""}}"#), "{s}");
        // sorted as strings; the None member left out
        assert!(s.contains(r#""by_number":{"10":"ten","9":"nine"}"#), "{s}");
        assert!(
            s.contains(r#""New":"x""#) && s.contains(r#"{},{"New""#),
            "{s}"
        );
        assert!(s.contains(r#""g":[1.5,null,-0.0,1e+300,3.0]"#), "{s}");
        assert!(
            s.contains(r#""t":[7,null,null]"#) && !s.contains("\"none\""),
            "{s}"
        );
        assert!(s.contains(r#""Tuple":[1,null,null]"#), "{s}");
        // a map key the direct route leaves to the `Value` route
        let by_bool: BTreeMap<bool, Option<u8>> = [(true, Some(1)), (false, None)].into();
        assert!(Canonical::default().direct(&by_bool).is_err());
        assert_eq!(
            Canonical::default().write(&by_bool),
            canonical_via_value(&by_bool).as_slice()
        );
    }
}
