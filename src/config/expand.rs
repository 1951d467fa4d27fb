//! `${VAR}` and `${VAR:-default}` in the config's string values, replaced
//! from the environment before the config is read (`$${` stands for a
//! literal `${`). Only string values are looked at, never comments or
//! keys: their places come from the TOML parser. Each string that names a
//! variable is written back as a new string of the same value, on as many
//! lines as it took, so every later error still names the line and key of
//! the file as written.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, Table, Value};

use super::ConfigError;

/// `src` with the variables of its string values replaced; `src` itself
/// when it names none, or does not parse (the reader then says why).
pub(super) fn expand<'a>(
    src: &'a str,
    path: &Path,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, ConfigError> {
    if !src.contains("${") {
        return Ok(Cow::Borrowed(src));
    }
    let Ok(doc) = ImDocument::parse(src) else {
        return Ok(Cow::Borrowed(src));
    };
    let mut strings = Vec::new();
    table_strings(doc.as_table(), &mut strings);
    let mut out = String::with_capacity(src.len());
    let mut copied = 0;
    strings.sort_by_key(|(span, _)| span.start);
    for (span, value) in strings {
        if !value.contains("${") {
            continue;
        }
        let expanded = substitute(&value, &var)
            .map_err(|message| ConfigError::at(path, src, span.clone(), message))?;
        out.push_str(&src[copied..span.start]);
        let lines = src[span.clone()].matches('\n').count();
        out.push_str(&string_literal(&expanded, lines));
        copied = span.end;
    }
    if copied == 0 {
        return Ok(Cow::Borrowed(src));
    }
    out.push_str(&src[copied..]);
    Ok(Cow::Owned(out))
}

/// Every string value under `table`, with where it stands in the source.
fn table_strings(table: &Table, out: &mut Vec<(Range<usize>, String)>) {
    for (_, item) in table.iter() {
        match item {
            Item::Value(value) => value_strings(value, out),
            Item::Table(table) => table_strings(table, out),
            Item::ArrayOfTables(tables) => tables.iter().for_each(|t| table_strings(t, out)),
            Item::None => {}
        }
    }
}

fn value_strings(value: &Value, out: &mut Vec<(Range<usize>, String)>) {
    match value {
        Value::String(s) => {
            if let Some(span) = s.span() {
                out.push((span, s.value().clone()));
            }
        }
        Value::Array(values) => values.iter().for_each(|v| value_strings(v, out)),
        Value::InlineTable(table) => table.iter().for_each(|(_, v)| value_strings(v, out)),
        _ => {}
    }
}

/// `text` with each `${VAR}` or `${VAR:-default}` replaced; why not, when a
/// variable without a default is not set or a reference is not closed.
fn substitute(text: &str, var: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let reference = &rest[at + 2..];
        let Some(end) = reference.find('}') else {
            return Err(format!("`${{` without its `}}` in `{text}`"));
        };
        let (name, default) = match reference[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&reference[..end], None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`${{{name}}}` is not a variable name (letters, digits and `_`)"
            ));
        }
        // As the shell's `:-`: the default stands for a variable unset or empty.
        match (var(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "the environment variable `{name}` is not set (`${{{name}:-default}}` gives a default)"
                ))
            }
        }
        rest = &reference[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A TOML basic string holding `value`, on `lines + 1` lines: a multi-line
/// string whose line-ending backslash drops the newlines that keep the
/// lines of the file where they were.
fn string_literal(value: &str, lines: usize) -> String {
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    if lines == 0 {
        format!("\"{escaped}\"")
    } else {
        format!("\"\"\"{escaped}\\{}\"\"\"", "\n".repeat(lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("redis.internal".into()),
            "QUOTED" => Some("a\"b\\c\nd".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn expanded(src: &str) -> Result<String, String> {
        expand(src, Path::new("t.toml"), env)
            .map(Cow::into_owned)
            .map_err(|e| e.to_string())
    }

    fn value_of(src: &str, key: &str) -> String {
        let table: toml::Table = toml::from_str(&expanded(src).unwrap()).unwrap();
        table[key].as_str().unwrap().to_owned()
    }

    #[test]
    fn variables_and_defaults_are_replaced_in_string_values_only() {
        let src = "# ${NOT_IN_A_COMMENT}\nurl = \"redis://${HOST}:${PORT:-6379}/0\"\n";
        assert_eq!(value_of(src, "url"), "redis://redis.internal:6379/0");
        assert_eq!(value_of("v = '${EMPTY:-fallback}'\n", "v"), "fallback");
        assert_eq!(value_of("v = \"$${HOST}\"\n", "v"), "${HOST}");
        assert_eq!(value_of("v = \"${QUOTED}\"\n", "v"), "a\"b\\c\nd");
        let untouched = "a = 1\n# ${X}\n";
        assert!(matches!(
            expand(untouched, Path::new("t.toml"), env).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_string_keeps_its_lines_so_errors_name_the_file_as_written() {
        let src = "a = \"\"\"x\n${HOST}\ny\"\"\"\nb = \"${HOST}\"\n[t]\nc = [\"${HOST}\", { d = \"${HOST}\" }]\n";
        let out = expanded(src).unwrap();
        assert_eq!(out.lines().count(), src.lines().count());
        let table: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(table["a"].as_str(), Some("x\nredis.internal\ny"));
        assert_eq!(table["t"]["c"][1]["d"].as_str(), Some("redis.internal"));
        assert_eq!(out.lines().nth(4), Some("[t]"));
    }

    #[test]
    fn a_missing_variable_or_a_broken_reference_names_line_and_key() {
        let e = expanded("[store]\nurl = \"${REDIS_URL}\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:2: store.url: "), "{e}");
        assert!(e.contains("`REDIS_URL` is not set"), "{e}");
        let e = expanded("[server]\n\nlisten = \"${HOST\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:3: server.listen: "), "{e}");
        let e = expanded("v = \"${A B}\"\n").unwrap_err();
        assert!(e.contains("not a variable name"), "{e}");
    }

    #[test]
    fn string_values_take_environment_variables() {
        // Names only this test uses: the environment is the process's.
        std::env::set_var("ASYNCGATE_TEST_EXPAND_HOST", "127.0.0.9");
        let parse = |text: &str| {
            crate::config::Config::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
        };
        let config = parse(
            "[server]\nlisten = \"${ASYNCGATE_TEST_EXPAND_HOST}:${ASYNCGATE_TEST_EXPAND_PORT:-8088}\"\n",
        )
        .unwrap();
        assert_eq!(config.listen().to_string(), "127.0.0.9:8088");
        let e = parse("[server]\nlisten = \"${ASYNCGATE_TEST_EXPAND_UNSET}\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:2: server.listen: "), "{e}");
        assert!(
            e.contains("`ASYNCGATE_TEST_EXPAND_UNSET` is not set"),
            "{e}"
        );
    }
}
