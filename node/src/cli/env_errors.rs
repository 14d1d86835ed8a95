//! Clap names the flag whose value it could not parse, even when the value
//! came from a `SHOAL_*` variable; a user who never typed `--slots` then
//! looks for it in vain. This adds which variable held the value.

use clap::error::{ContextKind, ContextValue};
use clap::Command;

/// The environment variable behind a value error, if the bad value is that
/// variable's: `(variable, value)`.
pub fn variable_behind(
    error: &clap::Error,
    command: &Command,
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = error.get(ContextKind::InvalidValue)? else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let mut pending = vec![command];
    while let Some(cmd) = pending.pop() {
        for candidate in cmd.get_arguments() {
            let (Some(name), Some(var)) = (candidate.get_long(), candidate.get_env()) else {
                continue;
            };
            let var = var.to_string_lossy();
            if name == long && lookup(&var).as_deref() == Some(value.as_str()) {
                return Some((var.into_owned(), value.clone()));
            }
        }
        pending.extend(cmd.get_subcommands());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn parse_with_env(args: &[&str], env: &[(&str, &str)]) -> Option<(String, String)> {
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        // Clap reads the process environment; the lookup stands in for it
        // here so tests need not set process-wide variables.
        let err = crate::cli::Cli::try_parse_from(args).expect_err("must not parse");
        variable_behind(&err, &crate::cli::Cli::command(), lookup)
    }

    #[test]
    fn a_bad_value_from_a_variable_is_traced_to_the_variable() {
        assert_eq!(
            parse_with_env(
                &["shoal", "agent", "--slots", "abc"],
                &[("SHOAL_SLOTS", "abc")]
            ),
            Some(("SHOAL_SLOTS".to_string(), "abc".to_string()))
        );
    }

    #[test]
    fn a_bad_value_typed_as_a_flag_is_not_blamed_on_a_variable() {
        assert_eq!(
            parse_with_env(
                &["shoal", "agent", "--slots", "abc"],
                &[("SHOAL_SLOTS", "4")]
            ),
            None
        );
        assert_eq!(
            parse_with_env(&["shoal", "agent", "--slots", "abc"], &[]),
            None
        );
    }
}
