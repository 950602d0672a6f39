//! A small YAML subset, enough for Kubernetes kubeconfig files.
//!
//! Supported: block mappings and sequences (an item may start a mapping on
//! its dash line; a sequence may sit at its key's indentation), one-line flow
//! collections, plain / 'single' / "double" quoted scalars, `|` and `>` block
//! scalars with chomping and indentation indicators, comments, one leading
//! `---` and a trailing `...`. Input starting with `{` or `[` is JSON.
//!
//! Rejected with an error naming the line: anchors, aliases, tags,
//! directives, `?` keys, multi-document streams, multi-line plain or quoted
//! scalars and flow collections, duplicate keys, tab indentation and nesting
//! deeper than 64 levels.
//!
//! Plain scalars resolve `true`/`false`, `null`/`~`/empty and decimal
//! integers; anything else (floats, `yes`, `0755`) stays a string. Mapping
//! keys are strings, taken verbatim.

use serde_json::{Map, Value};

const MAX_DEPTH: usize = 64;

/// Parse a YAML document (or JSON, which is a YAML subset) into a serde_json::Value.
pub fn parse(text: &str) -> Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'[')) {
        return serde_json::from_str(text)
            .map_err(|e| format!("line {}: invalid JSON: {e}", e.line()));
    }
    let raw: Vec<&str> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let (start, end) = document_bounds(&raw)?;
    let lines = raw
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.trim_start_matches(' ');
            Line {
                num: i + 1,
                indent: raw.len() - text.len(),
                text,
                raw,
            }
        })
        .collect();
    let mut p = Parser {
        lines,
        pos: start,
        end,
    };
    if p.peek()?.is_none() {
        return Ok(Value::Null);
    }
    let value = p.block(-1, 0)?;
    match p.peek()? {
        Some(l) => Err(format!(
            "line {}: unexpected content (check indentation)",
            l.num
        )),
        None => Ok(value),
    }
}

/// The line range of the one document: after a leading `---`, before `...`.
fn document_bounds(raw: &[&str]) -> Result<(usize, usize), String> {
    let (mut start, mut content) = (0, false);
    for (i, r) in raw.iter().enumerate() {
        let err = |what: &str| Err(format!("line {}: {what}", i + 1));
        if let Some(rest) = marker(r, "---") {
            if content || start > 0 {
                return err("multi-document streams are not supported");
            }
            if !is_blank(rest) {
                return err("content on the '---' line is not supported");
            }
            start = i + 1;
        } else if let Some(rest) = marker(r, "...") {
            if !is_blank(rest) {
                return err("content after '...' is not supported");
            }
            if let Some(j) = raw.iter().skip(i + 1).position(|r| !is_blank(r)) {
                let line = i + j + 2;
                return Err(format!(
                    "line {line}: multi-document streams are not supported"
                ));
            }
            return Ok((start, i));
        } else if r.starts_with('%') {
            return err("directives are not supported");
        } else if !is_blank(r) {
            content = true;
        }
    }
    Ok((start, raw.len()))
}

fn marker<'a>(raw: &'a str, m: &str) -> Option<&'a str> {
    let rest = raw.strip_prefix(m)?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

/// Empty, whitespace or a comment.
fn is_blank(s: &str) -> bool {
    let t = s.trim_start_matches([' ', '\t']);
    t.is_empty() || t.starts_with('#')
}

fn is_item(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

#[derive(Clone, Copy)]
struct Line<'a> {
    num: usize,
    indent: usize,
    /// After the indentation; rewritten to the item's content for `- ` lines.
    text: &'a str,
    raw: &'a str,
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    end: usize,
}

impl<'a> Parser<'a> {
    /// Skip blank and comment lines; the next content line, not consumed.
    fn peek(&mut self) -> Result<Option<Line<'a>>, String> {
        while let Some(l) = self.lines.get(self.pos).filter(|_| self.pos < self.end) {
            if !is_blank(l.text) {
                if l.text.starts_with('\t') {
                    return Err(format!(
                        "line {}: tabs are not allowed for indentation",
                        l.num
                    ));
                }
                return Ok(Some(*l));
            }
            self.pos += 1;
        }
        Ok(None)
    }

    /// The node starting at the next content line; block scalars in it must
    /// be indented more than `parent`.
    fn block(&mut self, parent: isize, depth: usize) -> Result<Value, String> {
        let Some(l) = self.peek()? else {
            return Ok(Value::Null);
        };
        if depth > MAX_DEPTH {
            return Err(format!(
                "line {}: nesting deeper than {MAX_DEPTH} levels",
                l.num
            ));
        }
        if is_item(l.text) {
            self.seq(l.indent, depth)
        } else if split_key(l.text, l.num)?.is_some() {
            self.map(l.indent, depth)
        } else if l.text.starts_with(['|', '>']) {
            self.block_scalar(l.text, l.num, parent)
        } else {
            self.pos += 1;
            scalar(l.text, l.num, depth)
        }
    }

    fn seq(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(l) = self.peek()? {
            if l.indent < n || (l.indent == n && !is_item(l.text)) {
                break;
            }
            if l.indent > n {
                return Err(bad_indent(l, n));
            }
            let rest = l.text.get(1..).unwrap_or("").trim_start_matches(' ');
            if is_blank(rest) {
                self.pos += 1;
                items.push(self.nested(n, false, depth)?);
            } else {
                // Re-read the rest of the line as a node at its own column.
                if let Some(cur) = self.lines.get_mut(self.pos) {
                    cur.indent = n + l.text.len() - rest.len();
                    cur.text = rest;
                }
                items.push(self.block(n as isize, depth + 1)?);
            }
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        let mut map = Map::new();
        while let Some(l) = self.peek()? {
            if l.indent < n {
                break;
            }
            if l.indent > n {
                return Err(bad_indent(l, n));
            }
            if is_item(l.text) {
                return Err(format!(
                    "line {}: sequence item where a mapping key was expected (check indentation)",
                    l.num
                ));
            }
            let Some((key, rest)) = split_key(l.text, l.num)? else {
                return Err(format!(
                    "line {}: expected 'key: value' in a mapping",
                    l.num
                ));
            };
            if map.contains_key(&key) {
                return Err(format!("line {}: duplicate key '{key}'", l.num));
            }
            let value = if is_blank(rest) {
                self.pos += 1;
                self.nested(n, true, depth)?
            } else if rest.starts_with(['|', '>']) {
                self.block_scalar(rest, l.num, n as isize)?
            } else {
                self.pos += 1;
                scalar(rest, l.num, depth)?
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    /// The value of a `key:` or `-` with nothing after it: a more indented
    /// block, a sequence at the key's own indentation, or null.
    fn nested(&mut self, n: usize, same_indent_seq: bool, depth: usize) -> Result<Value, String> {
        match self.peek()? {
            Some(m) if m.indent > n || (same_indent_seq && m.indent == n && is_item(m.text)) => {
                self.block(n as isize, depth + 1)
            }
            _ => Ok(Value::Null),
        }
    }

    fn block_scalar(&mut self, header: &str, num: usize, parent: isize) -> Result<Value, String> {
        let folded = header.starts_with('>');
        let (mut chomp, mut explicit) = (' ', None);
        let mut rest = header.get(1..).unwrap_or("");
        loop {
            match rest.chars().next() {
                Some(c @ ('-' | '+')) if chomp == ' ' => chomp = c,
                Some(c @ '1'..='9') if explicit.is_none() => explicit = c.to_digit(10),
                _ => break,
            }
            rest = rest.get(1..).unwrap_or("");
        }
        if !(rest.is_empty() || rest.starts_with([' ', '\t']) && is_blank(rest)) {
            return Err(format!(
                "line {num}: invalid block scalar header '{header}'"
            ));
        }
        self.pos += 1;
        let mut indent = explicit.map(|d| (parent + d as isize).max(0) as usize);
        let mut lines = Vec::new();
        while let Some(l) = self.lines.get(self.pos).filter(|_| self.pos < self.end) {
            let ind = l.raw.len() - l.raw.trim_start_matches(' ').len();
            if l.raw.trim().is_empty() {
                lines.push("");
            } else {
                let need = match indent {
                    Some(need) => need,
                    None if (ind as isize) <= parent => break,
                    None => *indent.insert(ind),
                };
                if ind < need {
                    break;
                }
                lines.push(l.raw.get(need..).unwrap_or(""));
            }
            self.pos += 1;
        }
        let body_len = lines
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |i| i + 1);
        let (body, trailing) = (lines.get(..body_len).unwrap_or(&[]), lines.len() - body_len);
        let mut out = if folded { fold(body) } else { body.join("\n") };
        match chomp {
            '-' => {}
            '+' => out.push_str(&"\n".repeat(trailing + usize::from(body_len > 0))),
            _ if body_len > 0 => out.push('\n'),
            _ => {}
        }
        Ok(Value::String(out))
    }
}

fn bad_indent(l: Line, n: usize) -> String {
    format!(
        "line {}: bad indentation (expected {n} spaces, found {})",
        l.num, l.indent
    )
}

/// `>` folding: single line breaks between normal lines become spaces; breaks
/// around more-indented lines and empty lines are kept.
fn fold(lines: &[&str]) -> String {
    let mut out = String::new();
    let (mut prev_normal, mut blanks, mut first) = (false, 0, true);
    for l in lines {
        if l.is_empty() {
            blanks += 1;
            continue;
        }
        let normal = !l.starts_with([' ', '\t']);
        let breaks = match (first, prev_normal && normal) {
            (true, _) => blanks,
            (false, true) if blanks == 0 => {
                out.push(' ');
                0
            }
            (false, true) => blanks,
            (false, false) => blanks + 1,
        };
        out.push_str(&"\n".repeat(breaks));
        out.push_str(l);
        (prev_normal, blanks, first) = (normal, 0, false);
    }
    out
}

/// `key: rest` on a block line: the key and the text after `:` (trimmed).
fn split_key(t: &str, num: usize) -> Result<Option<(String, &str)>, String> {
    let ws = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    let (key, after) = match t.as_bytes().first() {
        Some(b'"' | b'\'') => {
            let (key, rest) = quoted(t, num)?;
            (key, rest.trim_start_matches([' ', '\t']))
        }
        Some(b'[' | b'{' | b'|' | b'>') | None => return Ok(None),
        _ => {
            indicator(t, num)?;
            let b = t.as_bytes();
            let mut i = 0;
            loop {
                match b.get(i) {
                    None => return Ok(None),
                    Some(b'#') if i > 0 && ws(b.get(i - 1)) => return Ok(None),
                    Some(b':') if b.get(i + 1).is_none() || ws(b.get(i + 1)) => break,
                    _ => i += 1,
                }
            }
            let key = t.get(..i).unwrap_or("").trim_end();
            if key.is_empty() {
                return Err(format!("line {num}: empty mapping key"));
            }
            (key.to_string(), t.get(i..).unwrap_or(""))
        }
    };
    match after.strip_prefix(':') {
        Some(r) if r.is_empty() || ws(r.as_bytes().first()) => {
            Ok(Some((key, r.trim_start_matches([' ', '\t']))))
        }
        _ => Ok(None),
    }
}

/// Errors for indicators that start unsupported constructs.
fn indicator(s: &str, num: usize) -> Result<(), String> {
    let what = match s.as_bytes() {
        [b'&' | b'*', ..] => "anchors/aliases are not supported",
        [b'!', ..] => "tags are not supported",
        [b'%' | b'@' | b'`', ..] => "a plain scalar cannot start with '%', '@' or '`' (quote it)",
        [b'?'] | [b'?', b' ' | b'\t', ..] => "complex mapping keys ('?') are not supported",
        [b'-'] | [b'-', b' ' | b'\t', ..] => "a sequence item is not allowed here",
        [b'|' | b'>', ..] => "a block scalar is not allowed here",
        _ => return Ok(()),
    };
    Err(format!("line {num}: {what}"))
}

/// A one-line value in block context: quoted, flow or plain, plus a comment.
fn scalar(s: &str, num: usize, depth: usize) -> Result<Value, String> {
    let (value, rest) = match s.as_bytes().first() {
        Some(b'"' | b'\'') => {
            let (t, rest) = quoted(s, num)?;
            (Value::String(t), rest)
        }
        Some(b'[' | b'{') => {
            let mut f = Flow { s, pos: 0, num };
            let v = f.value(depth)?;
            (v, f.rest())
        }
        _ => {
            indicator(s, num)?;
            let b = s.as_bytes();
            let end = (1..b.len())
                .find(|&i| b.get(i) == Some(&b'#') && matches!(b.get(i - 1), Some(b' ' | b'\t')))
                .unwrap_or(b.len());
            let t = s.get(..end).unwrap_or("").trim_end();
            if t.contains(": ") || t.contains(":\t") || t.ends_with(':') {
                return Err(format!(
                    "line {num}: ': ' is not allowed in a plain value (quote it)"
                ));
            }
            return Ok(resolve(t));
        }
    };
    let t = rest.trim_start_matches([' ', '\t']);
    if t.is_empty() || (t.starts_with('#') && t.len() < rest.len()) {
        Ok(value)
    } else {
        Err(format!("line {num}: unexpected text after value: '{t}'"))
    }
}

/// Type resolution for plain scalars.
fn resolve(t: &str) -> Value {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            let int = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            if int {
                if let Ok(i) = t.parse::<i64>() {
                    return i.into();
                }
                if let Ok(u) = t.parse::<u64>() {
                    return u.into();
                }
            }
            Value::String(t.to_string())
        }
    }
}

/// A quoted scalar at the start of `s`: its value and the text after it.
fn quoted(s: &str, num: usize) -> Result<(String, &str), String> {
    let err = |what: &str| Err(format!("line {num}: {what}"));
    let double = s.starts_with('"');
    let q = if double { '"' } else { '\'' };
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        if c == q {
            let rest = s.get(i + 1..).unwrap_or("");
            if !double && rest.starts_with('\'') {
                out.push('\'');
                it.next();
                continue;
            }
            return Ok((out, rest));
        }
        if !double || c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = it.next() else { break };
        let code = match e {
            'x' => hex(&mut it, 2),
            'U' => hex(&mut it, 8),
            'u' => match hex(&mut it, 4) {
                Some(hi @ 0xD800..=0xDBFF) => {
                    let lo = match (it.next(), it.next()) {
                        (Some((_, '\\')), Some((_, 'u'))) => hex(&mut it, 4),
                        _ => None,
                    };
                    lo.filter(|lo| (0xDC00..=0xDFFF).contains(lo))
                        .map(|lo| 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                }
                other => other,
            },
            _ => {
                out.push(match e {
                    'n' => '\n',
                    't' | '\t' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'a' => '\x07',
                    'b' => '\x08',
                    'e' => '\x1b',
                    'f' => '\x0c',
                    'v' => '\x0b',
                    '"' | '\\' | '/' | ' ' => e,
                    _ => return err(&format!("invalid escape '\\{e}' in double-quoted string")),
                });
                continue;
            }
        };
        match code.and_then(char::from_u32) {
            Some(c) => out.push(c),
            None => return err(&format!("invalid '\\{e}' escape in double-quoted string")),
        }
    }
    let kind = if double { "double" } else { "single" };
    err(&format!(
        "unterminated {kind}-quoted string (multi-line quoted strings are not supported)"
    ))
}

fn hex(it: &mut impl Iterator<Item = (usize, char)>, n: usize) -> Option<u32> {
    (0..n).try_fold(0u32, |acc, _| Some(acc * 16 + it.next()?.1.to_digit(16)?))
}

/// A flow collection (`[..]`, `{..}`) on one line.
struct Flow<'a> {
    s: &'a str,
    pos: usize,
    num: usize,
}

impl<'a> Flow<'a> {
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("line {}: {what} in flow collection", self.num))
    }
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }
    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start_matches([' ', '\t']).len();
    }
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.pos += usize::from(hit);
        hit
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return self.err(&format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.skip_ws();
        match self.peek() {
            None => {
                self.err("unexpected end of line (multi-line flow collections are not supported)")
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.eat(b']') {
                        break;
                    }
                    let mut item = self.value(depth + 1)?;
                    self.skip_ws();
                    if self.eat(b':') {
                        // A single-pair mapping: `[k: v]`.
                        let key = match item {
                            Value::String(k) => k,
                            Value::Array(_) | Value::Object(_) => {
                                return self.err("complex keys are not supported")
                            }
                            other => other.to_string(),
                        };
                        self.skip_ws();
                        let value = match self.peek() {
                            Some(b',' | b']') => Value::Null,
                            _ => self.value(depth + 1)?,
                        };
                        item = Value::Object(Map::from_iter([(key, value)]));
                    }
                    items.push(item);
                    if !self.sep(b']')? {
                        break;
                    }
                }
                Ok(Value::Array(items))
            }
            Some(b'{') => {
                self.pos += 1;
                let mut map = Map::new();
                loop {
                    self.skip_ws();
                    if self.eat(b'}') {
                        break;
                    }
                    let key = self.key()?;
                    if map.contains_key(&key) {
                        return self.err(&format!("duplicate key '{key}'"));
                    }
                    self.skip_ws();
                    let mut value = Value::Null;
                    if self.eat(b':') {
                        self.skip_ws();
                        if !matches!(self.peek(), Some(b',' | b'}')) {
                            value = self.value(depth + 1)?;
                        }
                    }
                    map.insert(key, value);
                    if !self.sep(b'}')? {
                        break;
                    }
                }
                Ok(Value::Object(map))
            }
            Some(b'"' | b'\'') => Ok(Value::String(self.quoted()?)),
            Some(c @ (b',' | b']' | b'}')) => self.err(&format!("unexpected '{}'", c as char)),
            Some(_) => {
                indicator(self.rest(), self.num)?;
                match self.plain() {
                    "" => self.err("expected a value"),
                    t => Ok(resolve(t)),
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(b'"' | b'\'') => self.quoted(),
            Some(b'[' | b'{') => self.err("complex keys are not supported"),
            _ => {
                indicator(self.rest(), self.num)?;
                match self.plain() {
                    "" => self.err("expected a key"),
                    t => Ok(t.to_string()),
                }
            }
        }
    }

    fn quoted(&mut self) -> Result<String, String> {
        let (t, rest) = quoted(self.rest(), self.num)?;
        self.pos = self.s.len() - rest.len();
        Ok(t)
    }

    /// After an item: true for `,`, false for the closing bracket.
    fn sep(&mut self, close: u8) -> Result<bool, String> {
        self.skip_ws();
        if self.eat(b',') {
            Ok(true)
        } else if self.eat(close) {
            Ok(false)
        } else if self.peek().is_none() {
            self.err("unexpected end of line (multi-line flow collections are not supported)")
        } else {
            self.err(&format!("expected ',' or '{}'", close as char))
        }
    }

    fn plain(&mut self) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        while let Some(&c) = b.get(i) {
            let stop = match c {
                b',' | b'[' | b']' | b'{' | b'}' => true,
                b':' => matches!(b.get(i + 1), None | Some(b' ' | b'\t' | b',' | b']' | b'}')),
                b'#' => i > start && matches!(b.get(i - 1), Some(b' ' | b'\t')),
                _ => false,
            };
            if stop {
                break;
            }
            i += 1;
        }
        self.pos = i;
        self.s.get(start..i).unwrap_or("").trim_end()
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    fn err(text: &str) -> String {
        parse(text).expect_err(text)
    }

    const KIND: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=
    server: https://127.0.0.1:6443
  name: kind-kind
contexts:
- context:
    cluster: kind-kind
    user: kind-kind
  name: kind-kind
current-context: kind-kind
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    client-certificate-data: LS0tLS1CRUdJTg==
    client-key-data: LS0tLS1CRUdJTiBSU0E=
";

    #[test]
    fn kind_kubeconfig() {
        let v = parse(KIND).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM="
        );
        assert_eq!(v["clusters"][0]["name"], "kind-kind");
        assert_eq!(v["contexts"][0]["context"]["user"], "kind-kind");
        assert_eq!(v["preferences"], json!({}));
        assert_eq!(
            v["users"][0]["user"]["client-key-data"],
            "LS0tLS1CRUdJTiBSU0E="
        );
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "apiVersion",
                "clusters",
                "contexts",
                "current-context",
                "kind",
                "preferences",
                "users"
            ]
        );
    }

    #[test]
    fn multus_kubeconfig() {
        let text = "# Kubeconfig file for Multus CNI plugin.
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://[fd00:10:96::1]:443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJU
users:
- name: multus
  user:
    token: \"eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.c2ln\"
contexts:
- name: multus-context
  context:
    cluster: local
    user: multus
current-context: multus-context
";
        let v = parse(text).unwrap();
        let want = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": "https://[fd00:10:96::1]:443",
                "certificate-authority-data": "LS0tLS1CRUdJTiBDRVJU"}}],
            "users": [{"name": "multus", "user": {
                "token": "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.c2ln"}}],
            "contexts": [{"name": "multus-context", "context": {"cluster": "local", "user": "multus"}}],
            "current-context": "multus-context"
        });
        assert_eq!(v, want);
    }

    #[test]
    fn kubeadm_style_indented_sequences_and_paths() {
        let text = "---
# kubelet.conf
apiVersion: v1
clusters:
  - cluster:
      insecure-skip-tls-verify: true   # lab only
      server: https://10.0.0.1:6443
    name: default-cluster
  - name: other
    cluster:
      server: 'https://other:443'
      proxy-url: http://proxy:3128
      tls-server-name: api.example.com
users:
  - name: default-auth
    user:
      client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
      client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
  - name: sa
    user:
      tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token

current-context: default-context
...
";
        let v = parse(text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["insecure-skip-tls-verify"],
            true
        );
        assert_eq!(v["clusters"][0]["name"], "default-cluster");
        assert_eq!(v["clusters"][1]["cluster"]["server"], "https://other:443");
        assert_eq!(
            v["clusters"][1]["cluster"]["proxy-url"],
            "http://proxy:3128"
        );
        assert_eq!(
            v["users"][0]["user"]["client-certificate"],
            "/var/lib/kubelet/pki/kubelet-client-current.pem"
        );
        assert_eq!(
            v["users"][1]["user"]["tokenFile"],
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        );
        assert_eq!(v["current-context"], "default-context");
    }

    #[test]
    fn exec_plugin_user() {
        let text = "users:
- name: eks
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args:
      - --region
      - us-east-1
      - eks
      env: null
      provideClusterInfo: false
    \"quoted key\": 1
    client.authentication.k8s.io/v1: x
";
        let v = parse(text).unwrap();
        let exec = &v["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(exec["args"], json!(["--region", "us-east-1", "eks"]));
        assert_eq!(exec["env"], json!(null));
        assert_eq!(exec["provideClusterInfo"], false);
        assert_eq!(v["users"][0]["user"]["quoted key"], 1);
        assert_eq!(
            v["users"][0]["user"]["client.authentication.k8s.io/v1"],
            "x"
        );
    }

    #[test]
    fn scalars() {
        let text = "a: true\nb: False\nc: TRUE\nd: null\ne: ~\nf:\ng: 42\nh: -7\ni: 0\nj: v1\n\
                    k: 0.0.0.0\nl: 1.5\nm: 0755\nn: yes\no: '1'\np: \"true\"\nq: a#b\nr: x # note\n\
                    s: 18446744073709551615\nt: 99999999999999999999\nu: C:\\dir\n";
        let v = parse(text).unwrap();
        let want = json!({"a": true, "b": false, "c": true, "d": null, "e": null, "f": null,
            "g": 42, "h": -7, "i": 0, "j": "v1", "k": "0.0.0.0", "l": "1.5", "m": "0755",
            "n": "yes", "o": "1", "p": "true", "q": "a#b", "r": "x",
            "s": 18446744073709551615u64, "t": "99999999999999999999", "u": "C:\\dir"});
        assert_eq!(v, want);
        assert_eq!(parse("plain text").unwrap(), "plain text");
        assert_eq!(parse("").unwrap(), json!(null));
        assert_eq!(parse("# only a comment\n\n").unwrap(), json!(null));
    }

    #[test]
    fn quoted_strings() {
        let text = r#"a: "tab\there \"q\" back\\slash \/ nl\n \u00e9 \U0001F600 \ud83d\ude00 \x41"
b: 'it''s # not a comment'
c: "with: colon"   # comment
'single key': ""
"#;
        let v = parse(text).unwrap();
        assert_eq!(v["a"], "tab\there \"q\" back\\slash / nl\n é 😀 😀 A");
        assert_eq!(v["b"], "it's # not a comment");
        assert_eq!(v["c"], "with: colon");
        assert_eq!(v["single key"], "");
    }

    #[test]
    fn block_scalars() {
        let text = "ca: |
  -----BEGIN CERTIFICATE-----
  MIIC
    indented # not a comment

  -----END CERTIFICATE-----

strip: |-
  one
  two
keep: |+
  x

folded: >
  a long
  line

  new para
    kept
  end
folded-strip: >-
  a
  b
explicit: |2
   three spaces
list:
- |
  item
last: done
";
        let v = parse(text).unwrap();
        assert_eq!(
            v["ca"],
            "-----BEGIN CERTIFICATE-----\nMIIC\n  indented # not a comment\n\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(v["strip"], "one\ntwo");
        assert_eq!(v["keep"], "x\n\n");
        assert_eq!(v["folded"], "a long line\nnew para\n  kept\nend\n");
        assert_eq!(v["folded-strip"], "a b");
        assert_eq!(v["explicit"], " three spaces\n");
        assert_eq!(v["list"], json!(["item\n"]));
        assert_eq!(v["last"], "done");
        assert_eq!(parse("a: |\nb: 1").unwrap(), json!({"a": "", "b": 1}));
        assert!(err("a: |x\n  y").contains("line 1: invalid block scalar header"));
    }

    #[test]
    fn flow_collections() {
        let text = "a: []\nb: {}\nc: [a, \"b\", 1, true, null, 'x y']\n\
                    d: {a: 1, b: \"x\", \"c\": [1, {e: f}], g: , h}\n\
                    e: [http://h:80/p, k: v]  # comment\nf: [ ]\n";
        let v = parse(text).unwrap();
        assert_eq!(v["a"], json!([]));
        assert_eq!(v["b"], json!({}));
        assert_eq!(v["c"], json!(["a", "b", 1, true, null, "x y"]));
        assert_eq!(
            v["d"],
            json!({"a": 1, "b": "x", "c": [1, {"e": "f"}], "g": null, "h": null})
        );
        assert_eq!(v["e"], json!(["http://h:80/p", {"k": "v"}]));
        assert_eq!(v["f"], json!([]));
        assert_eq!(
            parse("- [a, [b, [c]]]").unwrap(),
            json!([["a", ["b", ["c"]]]])
        );
        assert!(err("a: [1, 2").contains("multi-line flow collections are not supported"));
        assert!(err("a: [a, b}").contains("expected ',' or ']'"));
        assert!(err("a: {x: 1, x: 2}").contains("duplicate key 'x'"));
        assert!(err("a: [1] x").contains("unexpected text after value"));
    }

    #[test]
    fn nested_structures() {
        let text = "top:
  list:
  - - a
    - b
  -
    k: v
  - key: value
    other:
    - x
    more: 1
  empty:
  after: -1
";
        let want = json!({"top": {"list": [["a", "b"], {"k": "v"}, {"key": "value", "other": ["x"], "more": 1}],
                                  "empty": null, "after": -1}});
        assert_eq!(parse(text).unwrap(), want);
        assert_eq!(
            parse("- a\n- \n-\n- b # c\n").unwrap(),
            json!(["a", null, null, "b"])
        );
        assert_eq!(
            parse("\u{feff}a: 1\r\nb: 2\r\n").unwrap(),
            json!({"a": 1, "b": 2})
        );
    }

    #[test]
    fn json_input() {
        let v = parse("  {\"apiVersion\": \"v1\", \"clusters\": [{\"name\": \"x\"}]}").unwrap();
        assert_eq!(v["clusters"][0]["name"], "x");
        assert_eq!(parse("[1, 2]").unwrap(), json!([1, 2]));
        let e = err("{\n  \"a\": 1,\n  \"b\" 2\n}");
        assert!(e.starts_with("line 3: invalid JSON"), "{e}");
        let deep = "[".repeat(10_000);
        assert!(err(&deep).contains("invalid JSON"));
    }

    #[test]
    fn errors() {
        let cases = [
            ("a: 1\n  b: 2\n", "line 2: bad indentation"),
            (
                "a:\n  b: 1\n c: 2\n",
                "line 3: bad indentation (expected 0 spaces, found 1)",
            ),
            ("  a: 1\nb: 2\n", "line 2: unexpected content"),
            ("a:\n    b: 1\n  c: 2\n", "line 3: bad indentation"),
            ("- a\n  - b\n", "line 2: bad indentation"),
            (
                "a:\n\tb: 1\n",
                "line 2: tabs are not allowed for indentation",
            ),
            ("a:\n  \tb: 1\n", "line 2: tabs are not allowed"),
            (
                "base: &anchor\n  a: 1\n",
                "line 1: anchors/aliases are not supported",
            ),
            (
                "a: 1\nb: *anchor\n",
                "line 2: anchors/aliases are not supported",
            ),
            ("- &x a\n", "line 1: anchors/aliases are not supported"),
            ("<<: *x\n", "line 1: anchors/aliases are not supported"),
            ("a: !!str 1\n", "line 1: tags are not supported"),
            ("a: [*x]\n", "line 1: anchors/aliases are not supported"),
            (
                "a: \"abc\n  def\"\n",
                "line 1: unterminated double-quoted string",
            ),
            ("a: 'abc\n", "line 1: unterminated single-quoted string"),
            ("a: \"\\q\"\n", "line 1: invalid escape"),
            ("a: \"\\ud800\"\n", "line 1: invalid '\\u' escape"),
            ("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a'"),
            (
                "a: 1\n---\nb: 2\n",
                "line 2: multi-document streams are not supported",
            ),
            (
                "a: 1\n...\nb: 2\n",
                "line 3: multi-document streams are not supported",
            ),
            (
                "%YAML 1.2\n---\na: 1\n",
                "line 1: directives are not supported",
            ),
            ("? a\n: b\n", "line 1: complex mapping keys"),
            ("a: b: c\n", "line 1: ': ' is not allowed in a plain value"),
            ("a: - b\n", "line 1: a sequence item is not allowed here"),
            (
                "a: 1\n- b\n",
                "line 2: sequence item where a mapping key was expected",
            ),
            ("a: 1\njunk\n", "line 2: expected 'key: value'"),
            ("a: \"x\" y\n", "line 1: unexpected text after value"),
            (": x\n", "line 1: empty mapping key"),
            ("a: @x\n", "line 1: a plain scalar cannot start with"),
            ("one\ntwo\n", "line 2: unexpected content"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("{}k:\n", " ".repeat(i)));
        }
        assert!(err(&text).contains("nesting deeper than 64 levels"));
        let ok: String = (0..30).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(parse(&ok).is_ok());
        assert!(err(&"- ".repeat(10_000)).contains("nesting deeper than 64 levels"));
        assert!(
            err(&format!("a: {}", "[".repeat(10_000))).contains("nesting deeper than 64 levels")
        );
        assert!(
            err(&format!("a: {}", "{a: ".repeat(10_000))).contains("nesting deeper than 64 levels")
        );
    }

    #[test]
    fn no_panic_on_mutations() {
        let sample = format!(
            "---\n# é comment\n{KIND}extra:\n  q: \"a\\u00e9\\\"b\" # c\n  s: 'x''y'\n  f: [1, {{a: b}}, \"c\"]\n  \
             b: |-\n    line\n     more\n  g: >+\n    x\n\n  l:\n  - - a\n    - b: c\n...\n"
        );
        assert!(parse(&sample).is_ok(), "{:?}", parse(&sample));
        let bytes = sample.as_bytes();
        let mut count = 0;
        for i in 0..=bytes.len() {
            let mut variants = vec![bytes[..i].to_vec()];
            if i < bytes.len() {
                variants.push([&bytes[..i], &bytes[i + 1..]].concat());
                for c in b" :-#\"'|>[]{},&*!\t\n\\?" {
                    variants.push([&bytes[..i], &[*c][..], &bytes[i + 1..]].concat());
                }
            }
            for v in variants {
                if let Ok(s) = String::from_utf8(v) {
                    let _ = parse(&s);
                    count += 1;
                }
            }
        }
        assert!(count > 10_000);
    }
}
