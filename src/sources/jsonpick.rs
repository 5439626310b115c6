//! The NDJSON fast path: one pass over a line that is a JSON object, keeping
//! the raw text of the members a source reads and checking the rest.
//!
//! [`super::line`] read every line through serde_json (a `RawValue` per
//! needed member, `IgnoredAny` for the others, a key deserialised per
//! member); this reader does the same walk over the bytes, without the
//! visitor machinery, and gives up (`None`) on anything it does not take:
//! a line it finds invalid, a key with an escape or nesting deeper than
//! [`MAX_DEPTH`]. The caller then reads the line through serde_json, which
//! gives the result or the error message, so both paths agree by
//! construction wherever this one answers (the property tests in
//! `line.rs` check it).
//!
//! What it accepts is serde_json's grammar as `ignore_value` checks it:
//! RFC 8259 with JSON's four whitespace bytes, no control byte inside a
//! string, escapes `\" \\ \/ \b \f \n \r \t \uXXXX` (any code unit: a lone
//! surrogate in a skipped or raw value passes, as it does there). A key
//! that repeats keeps its last value, as before.

/// Nesting deeper than this (in skipped or raw values) is left to
/// serde_json, which has no limit for skipped values: a bit per level.
pub(super) const MAX_DEPTH: u32 = 64;

/// The raw text of each member of the object `line` whose key is one of
/// `keys` (exactly as serde_json's `RawValue` holds it: from the value's
/// first byte to its last), in the slot of its key; the last one wins when
/// a key repeats. `None` when the line is not an object this reader takes
/// (then `slots` holds garbage). `line` has no surrounding whitespace.
pub(super) fn pick<'a, K: AsRef<str>>(
    line: &'a str,
    keys: &[K],
    slots: &mut [Option<&'a str>],
) -> Option<()> {
    let mut s = Scan {
        b: line.as_bytes(),
        i: 0,
    };
    s.eat(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key = s.key()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let start = s.i;
            s.value()?;
            // Length and first byte first: most keys differ there, and the
            // slice compare calls memcmp.
            if let Some(slot) = keys.iter().position(|x| {
                let x = x.as_ref().as_bytes();
                x.len() == key.len() && x.first() == key.first() && same(x, key)
            }) {
                // `value` consumed whole ASCII tokens or strings of the
                // `&str`: `start..i` lies on character boundaries.
                slots[slot] = Some(line.get(start..s.i)?);
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == s.b.len()).then_some(())
}

/// Equal byte strings of equal length: keys are short, and a plain slice
/// compare calls memcmp (5% of the parse profile).
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut a = a.chunks_exact(8);
    let mut b = b.chunks_exact(8);
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_ne_bytes(w)
    };
    for (x, y) in (&mut a).zip(&mut b) {
        if word(x) != word(y) {
            return false;
        }
    }
    a.remainder().iter().zip(b.remainder()).all(|(x, y)| x == y)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// An object key without escapes, as bytes. Keys with escapes go to
    /// serde_json, which unescapes them (and refuses lone surrogates).
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        if self.string_body()? {
            return None;
        }
        Some(&self.b[start..self.i - 1])
    }

    /// The rest of a string after its opening quote, through the closing
    /// one; `Some(true)` if it had an escape.
    fn string_body(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control byte
            }
        }
    }

    /// Skips string bytes that are neither `"`, `\\` nor a control byte,
    /// eight at a time: the lowest flagged byte of a word is exactly the
    /// first such byte (a borrow only runs upwards from a true hit).
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let b = self.b;
        let mut i = self.i;
        while let Some(chunk) = b.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let v = u64::from_le_bytes(w);
            let special = v.wrapping_sub(ONES * 0x20) & !v & HIGH
                | has_zero(v ^ (ONES * u64::from(b'"')))
                | has_zero(v ^ (ONES * u64::from(b'\\')));
            if special != 0 {
                self.i = i + (special.trailing_zeros() / 8) as usize;
                return;
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            if c < 0x20 || c == b'"' || c == b'\\' {
                break;
            }
            i += 1;
        }
        self.i = i;
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A number as serde_json's `ignore_integer` reads it: `-`, then `0` or
    /// a digit run not starting with `0`, an optional fraction with at
    /// least one digit, an optional exponent with at least one digit.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit1()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn digit1(&mut self) -> Option<()> {
        if !self.next()?.is_ascii_digit() {
            return None;
        }
        self.digits();
        Some(())
    }

    /// One value, nested ones included, without recursion: the open
    /// arrays and objects are a bit stack (1 = object).
    fn value(&mut self) -> Option<()> {
        let mut stack: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value is expected here (whitespace already skipped).
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    self.string_body()?;
                }
                c @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    stack = stack << 1 | u64::from(c == b'{');
                    depth += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        stack >>= 1;
                        depth -= 1;
                    } else {
                        if c == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: close enclosing containers or move to the next
            // element.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                let object = stack & 1 == 1;
                match self.next()? {
                    b',' => {
                        self.ws();
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// A nested object's key (escapes allowed: it is only checked), its
    /// colon and the whitespace up to its value.
    fn member_key(&mut self) -> Option<()> {
        self.eat(b'"')?;
        self.string_body()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }
}
