//! Just enough EDN to read Porcupine's kv logs: one flat map per line, such
//! as `{:process 0, :type :invoke, :f :get, :key "3", :value nil}`.
//!
//! Supported: keyword keys; values that are keywords, strings (escapes
//! `\" \\ \n \t \r`), integers and `nil`; commas count as whitespace, as in
//! EDN. Nested collections and other literals are refused with a message,
//! never guessed at.

use std::collections::BTreeMap;

/// A value of the flat map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EdnValue {
    Nil,
    Int(i64),
    Str(String),
    /// A keyword, without its leading `:`.
    Keyword(String),
}

/// Parses one line holding one flat map; keys are returned without `:`.
pub(crate) fn parse_map(text: &str) -> Result<BTreeMap<String, EdnValue>, String> {
    let mut p = Parser { chars: text.char_indices().peekable(), text };
    p.skip_space();
    p.expect('{')?;
    let mut map = BTreeMap::new();
    loop {
        p.skip_space();
        if p.eat('}') {
            break;
        }
        let key = match p.value()? {
            EdnValue::Keyword(k) => k,
            other => return Err(format!("map key {other:?} is not a keyword")),
        };
        p.skip_space();
        let value = p.value()?;
        if map.insert(key.clone(), value).is_some() {
            return Err(format!("duplicate key :{key}"));
        }
    }
    p.skip_space();
    if let Some((at, _)) = p.chars.peek() {
        return Err(format!("unexpected text after the map: {:?}", &text[*at..]));
    }
    Ok(map)
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace() || *c == ',').is_some() {}
    }

    fn eat(&mut self, want: char) -> bool {
        self.chars.next_if(|(_, c)| *c == want).is_some()
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        if self.eat(want) {
            Ok(())
        } else {
            Err(format!("expected {want:?}"))
        }
    }

    /// A bare token: up to whitespace, `,` or a closing brace.
    fn token(&mut self) -> &str {
        let start = self.chars.peek().map_or(self.text.len(), |(at, _)| *at);
        while self.chars.next_if(|(_, c)| !(c.is_whitespace() || matches!(c, ',' | '}' | '{'))).is_some() {}
        let end = self.chars.peek().map_or(self.text.len(), |(at, _)| *at);
        &self.text[start..end]
    }

    fn value(&mut self) -> Result<EdnValue, String> {
        match self.chars.peek().map(|(_, c)| *c) {
            None => Err("unexpected end of line".into()),
            Some('"') => {
                self.chars.next();
                self.string()
            }
            Some(':') => {
                self.chars.next();
                let name = self.token();
                if name.is_empty() {
                    Err("empty keyword".into())
                } else {
                    Ok(EdnValue::Keyword(name.to_string()))
                }
            }
            Some(_) => {
                let token = self.token();
                if token == "nil" {
                    Ok(EdnValue::Nil)
                } else if let Ok(v) = token.parse::<i64>() {
                    Ok(EdnValue::Int(v))
                } else {
                    Err(format!("unsupported value {token:?}"))
                }
            }
        }
    }

    fn string(&mut self) -> Result<EdnValue, String> {
        let mut out = String::new();
        loop {
            match self.chars.next().map(|(_, c)| c) {
                None => return Err("unterminated string".into()),
                Some('"') => return Ok(EdnValue::Str(out)),
                Some('\\') => match self.chars.next().map(|(_, c)| c) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    other => return Err(format!("unsupported string escape {other:?}")),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: a Porcupine kv line parses into its fields, with strings
    // unescaped and commas treated as whitespace.
    #[test]
    fn parses_a_kv_line() {
        let map = parse_map(r#"{:process 12, :type :ok, :f :append, :key "4", :value "x \"0\" 1 y"}"#).unwrap();
        assert_eq!(map["process"], EdnValue::Int(12));
        assert_eq!(map["type"], EdnValue::Keyword("ok".into()));
        assert_eq!(map["f"], EdnValue::Keyword("append".into()));
        assert_eq!(map["key"], EdnValue::Str("4".into()));
        assert_eq!(map["value"], EdnValue::Str(r#"x "0" 1 y"#.into()));
        assert_eq!(parse_map("{:value nil}").unwrap()["value"], EdnValue::Nil);
    }

    // Proves: anything outside the supported subset is refused, not guessed.
    #[test]
    fn refuses_what_it_does_not_support() {
        for bad in [
            "",
            "{:a 1",
            "{:a [1 2]}",
            "{:a \"open}",
            "{\"k\" 1}",
            "{:a 1 :a 2}",
            "{:a 1} trailing",
            "{:a 1.5}",
            "{:a}",
        ] {
            assert!(parse_map(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
