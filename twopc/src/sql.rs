//! Values formatted into SQL text, for a branch sent as one simple query
//! ([`crate::branch::Branch::run_in_one_trip`]), which takes no bind parameters.

/// `value` as a PostgreSQL string literal, escaped as libpq's `PQescapeLiteral` does: quotes
/// doubled, and when there is a backslash, backslashes doubled in an `E'...'` literal, so the
/// text means the same whatever `standard_conforming_strings` is. `None` for a value holding
/// NUL, which no PostgreSQL text can.
pub fn literal(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    let mut quoted = String::with_capacity(value.len() + 4);
    if value.contains('\\') {
        quoted.push('E');
    }
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' => quoted.push_str("\\\\"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    Some(quoted)
}

/// `values` as a `text[]` expression of [`literal`]s; `None` if one holds NUL.
pub fn text_array<S: AsRef<str>>(values: &[S]) -> Option<String> {
    let literals: Option<Vec<String>> = values.iter().map(|v| literal(v.as_ref())).collect();
    Some(format!("array[{}]::text[]", literals?.join(", ")))
}

/// `values` as a `bigint[]` expression.
pub fn bigint_array(values: &[i64]) -> String {
    let values: Vec<String> = values.iter().map(i64::to_string).collect();
    format!("array[{}]::bigint[]", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_backslashes_switch_to_an_escape_literal() {
        assert_eq!(literal("abc").as_deref(), Some("'abc'"));
        assert_eq!(literal("").as_deref(), Some("''"));
        assert_eq!(literal("it's").as_deref(), Some("'it''s'"));
        assert_eq!(literal(r"a\b").as_deref(), Some(r"E'a\\b'"));
        assert_eq!(literal(r"\'").as_deref(), Some(r"E'\\'''"));
        assert_eq!(literal("a\0b"), None);
    }

    #[test]
    fn arrays_are_typed() {
        assert_eq!(
            text_array(&["a", "b'"]).as_deref(),
            Some("array['a', 'b''']::text[]")
        );
        assert_eq!(text_array::<&str>(&[]).as_deref(), Some("array[]::text[]"));
        assert_eq!(bigint_array(&[1, -2]), "array[1, -2]::bigint[]");
        assert_eq!(text_array(&["a\0"]), None);
    }
}
