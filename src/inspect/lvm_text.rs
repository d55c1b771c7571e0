//! The LVM2 text metadata syntax (lvm2's "config" format): `name = value` and `name { ... }`,
//! values being "strings", integers and [lists]; `#` starts a comment. The text comes from an
//! untrusted image: every step consumes input, nesting and size are bounded (src/limits.rs), and
//! errors are one line.

use crate::limits::{MAX_LVM_TEXT_DEPTH, MAX_LVM_TEXT_NODES};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<Value>),
    Section(Vec<(String, Value)>),
}

impl Value {
    /// The item `key` of a section.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// A non-negative integer item.
    pub fn uint(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }
    pub fn list(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// The subsections of a section, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Value)> {
        let items: &[(String, Value)] = match self {
            Value::Section(items) => items,
            _ => &[],
        };
        items.iter().filter(|(_, v)| matches!(v, Value::Section(_))).map(|(k, v)| (k.as_str(), v))
    }
}

/// Parses a whole metadata text into its top-level section.
pub fn parse(text: &[u8]) -> Result<Value, String> {
    let mut p = Parser { s: text, at: 0, nodes: 0 };
    let items = p.items(0)?;
    p.skip_blank();
    if p.at < p.s.len() {
        return Err(p.fail("unexpected '}'"));
    }
    Ok(Value::Section(items))
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    nodes: usize,
}

impl Parser<'_> {
    fn fail(&self, what: &str) -> String {
        let line = 1 + self.s[..self.at.min(self.s.len())].iter().filter(|&&b| b == b'\n').count();
        format!("LVM metadata line {line}: {what}")
    }

    fn count(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_LVM_TEXT_NODES {
            return Err(self.fail(&format!("more than {MAX_LVM_TEXT_NODES} items")));
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// Skips white space and comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.at += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    /// `name = value` and `name { items }` until '}' or the end.
    fn items(&mut self, depth: usize) -> Result<Vec<(String, Value)>, String> {
        if depth > MAX_LVM_TEXT_DEPTH {
            return Err(self.fail(&format!("sections nested more than {MAX_LVM_TEXT_DEPTH} deep")));
        }
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None | Some(b'}') => return Ok(items),
                _ => {}
            }
            let name = self.name()?;
            self.skip_blank();
            self.count()?;
            match self.peek() {
                Some(b'{') => {
                    self.at += 1;
                    let inner = self.items(depth + 1)?;
                    if self.peek() != Some(b'}') {
                        return Err(self.fail(&format!("section {name} is not closed")));
                    }
                    self.at += 1;
                    items.push((name, Value::Section(inner)));
                }
                Some(b'=') => {
                    self.at += 1;
                    self.skip_blank();
                    let v = self.value(true)?;
                    items.push((name, v));
                }
                _ => return Err(self.fail(&format!("expected '=' or '{{' after {name}"))),
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || b"_-.+/".contains(&c)) {
            self.at += 1;
        }
        if self.at == start {
            return Err(self.fail("expected a name"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn value(&mut self, list_allowed: bool) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') if list_allowed => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        return Ok(Value::List(items));
                    }
                    if !items.is_empty() {
                        if self.peek() != Some(b',') {
                            return Err(self.fail("expected ',' or ']' in a list"));
                        }
                        self.at += 1;
                        self.skip_blank();
                    }
                    self.count()?;
                    items.push(self.value(false)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => Err(self.fail("expected a value")),
        }
    }

    fn string(&mut self) -> Result<Value, String> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.fail("string not closed")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    self.at += 1;
                    let c = self.peek().ok_or_else(|| self.fail("string not closed"))?;
                    out.push(c);
                    self.at += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// An integer; a float (lvm2 writes none in volume group metadata) keeps its integer part.
    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let int_end = self.at;
        if self.peek() == Some(b'.') {
            self.at += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
        }
        std::str::from_utf8(&self.s[start..int_end])
            .ok()
            .and_then(|t| t.parse().ok())
            .map(Value::Int)
            .ok_or_else(|| self.fail("bad number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_values_and_lists() {
        let t = b"vg0 {\n id = \"a-b\" # comment\n seqno = 3\n status = [\"READ\", \"WRITE\"]\n pv { x = -1 }\n}\n";
        let v = parse(t).unwrap();
        let (name, vg) = v.sections().next().unwrap();
        assert_eq!(name, "vg0");
        assert_eq!(vg.str("id"), Some("a-b"));
        assert_eq!(vg.uint("seqno"), Some(3));
        assert_eq!(vg.list("status").unwrap().len(), 2);
        assert_eq!(vg.get("pv").unwrap().get("x"), Some(&Value::Int(-1)));
    }

    #[test]
    fn refuses_bad_text_in_one_line() {
        for t in [&b"a {"[..], b"a = ", b"a = \"x", b"}", b"a = [1 2]", b"= 3", b"a = 99999999999999999999"] {
            let e = parse(t).unwrap_err();
            assert!(e.starts_with("LVM metadata line") && !e.contains('\n'), "{e}");
        }
        let deep = "a {".repeat(100);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("nested"));
    }
}
