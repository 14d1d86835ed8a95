//! Escaping of user-set strings (task names, commands, node names, check
//! output) before they reach a terminal: a control character in them could
//! otherwise clear the screen, retitle the window or forge a table row.
//! JSON output is not escaped: it stays exact.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1) written as a visible
/// escape: `\n`, `\r`, `\t`, `\x1b`, `\u{9b}`. Plain text is borrowed as is.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(terminal_safe("build ümlaut 7"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_control_character_is_escaped() {
        assert_eq!(terminal_safe("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(terminal_safe("row\nfake"), "row\\nfake");
        assert_eq!(terminal_safe("a\rb\tc"), "a\\rb\\tc");
        assert_eq!(terminal_safe("\x00\x07\x7f"), "\\x00\\x07\\x7f");
        assert_eq!(terminal_safe("\u{9b}2J"), "\\u{9b}2J");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let shown = terminal_safe(&c.to_string()).into_owned();
            assert!(!shown.chars().any(char::is_control), "{c:?} -> {shown:?}");
        }
    }
}
