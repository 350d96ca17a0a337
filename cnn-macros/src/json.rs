//! A small JSON reader for safetensors headers, so the macro crate needs no extra dependency.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    /// A non-negative integer written without fraction or exponent, kept exact.
    Uint(u64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at byte {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Json::Object(entries));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        return self.err("expected `:`");
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("}") {
                        return Ok(Json::Object(entries));
                    }
                    return self.err("expected `,` or `}`");
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("]") {
                        return Ok(Json::Array(items));
                    }
                    return self.err("expected `,` or `]`");
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        while self.i < self.s.len()
            && matches!(
                self.s[self.i],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        if text.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Json::Uint(u));
            }
        }
        match text.parse::<f64>() {
            Ok(f) => Ok(Json::Number(f)),
            Err(_) => Err(format!("invalid number `{text}` at byte {start}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if !self.eat("\"") {
            return self.err("expected a string");
        }
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self
                                .s
                                .get(self.i..self.i + 4)
                                .and_then(|h| std::str::from_utf8(h).ok());
                            let Some(code) = hex.and_then(|h| u32::from_str_radix(h, 16).ok())
                            else {
                                return self.err("bad \\u escape");
                            };
                            self.i += 4;
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_safetensors_header() {
        let h = r#"{"__metadata__":{"format":"pt"},"0.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
        let v = parse(h).unwrap();
        let w = v.get("0.weight").unwrap();
        assert_eq!(w.get("dtype"), Some(&Json::String("F32".into())));
        assert_eq!(
            w.get("shape"),
            Some(&Json::Array(vec![Json::Uint(2), Json::Uint(3)]))
        );
    }

    /// Each malformed text is an error saying what is wrong, never a panic.
    #[test]
    fn rejects_junk_without_panicking() {
        for (s, why) in [
            ("", "unexpected end"),
            ("{", "expected a string"),
            ("{\"a\"", "expected `:`"),
            ("{\"a\":}", "unexpected character"),
            ("{\"a\":1", "expected `,` or `}`"),
            ("[1,", "unexpected end"),
            ("[1 2]", "expected `,` or `]`"),
            ("\"\\u12", "bad \\u escape"),
            ("\"\\q\"", "bad escape"),
            ("\"abc", "unterminated string"),
            ("\"\\", "unterminated escape"),
            ("{\"a\":1}x", "trailing characters"),
            ("nul", "unexpected character"),
            ("-", "invalid number"),
            ("1.2.3", "invalid number"),
        ] {
            let err = parse(s).expect_err(s);
            assert!(err.contains(why), "{s:?}: {err}");
        }
        let err = parse(&"[".repeat(10_000)).unwrap_err();
        assert!(err.contains("nesting too deep"), "{err}");
        // 64 levels are fine, 65 are not.
        let nest = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
        assert!(parse(&nest(MAX_DEPTH + 1)).is_ok());
        assert!(parse(&nest(MAX_DEPTH + 2)).is_err());
    }

    /// What a header can hold, read exactly: integers kept as integers (beyond f64's 2^53),
    /// other numbers as f64 (an overflowing exponent is infinite, as Python reads it), escapes.
    #[test]
    fn reads_values_exactly() {
        let v = parse(
            r#" { "n": 18446744073709551615, "f": -1.5e3, "big": 1e999999, "t": true,
                "s": "a\"\\\/\n\t\r\b\f\u00e9", "z": null, "e": [], "o": {} } "#,
        )
        .unwrap();
        assert_eq!(v.get("n"), Some(&Json::Uint(u64::MAX)));
        assert_eq!(v.get("f"), Some(&Json::Number(-1500.0)));
        assert_eq!(v.get("big"), Some(&Json::Number(f64::INFINITY)));
        assert_eq!(v.get("t"), Some(&Json::Bool(true)));
        assert_eq!(
            v.get("s"),
            Some(&Json::String("a\"\\/\n\t\r\u{8}\u{c}é".into()))
        );
        assert_eq!(v.get("z"), Some(&Json::Null));
        assert_eq!(v.get("e"), Some(&Json::Array(vec![])));
        assert_eq!(v.get("o"), Some(&Json::Object(vec![])));
        assert_eq!(v.get("missing"), None);
        assert_eq!(Json::Null.get("n"), None);
        assert_eq!(
            parse("18446744073709551616"),
            Ok(Json::Number(1.8446744073709552e19))
        );
        assert_eq!(parse("false"), Ok(Json::Bool(false)));
    }
}
