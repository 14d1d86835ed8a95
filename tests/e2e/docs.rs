//! Docs that cannot silently rot: every `shoal ...` / `shoal-sim ...` command
//! line in README.md and docs/*.md uses only subcommands and flags the binary
//! has, and every `shoal_*` metric named there is exported by a live agent.

use shoal_tests::agents::{wait_for, Party};
use shoal_tests::{repo_root, shoal, shoal_sim};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Crate names and other `shoal_` identifiers that are not metrics.
const NOT_METRICS: &[&str] = &[
    "shoal_protocol",
    "shoal_node",
    "shoal_sim",
    "shoal_tests",
    "shoal_bench",
];

/// Words that may stand before a command they run.
const LAUNCHERS: &[&str] = &["watch", "sudo", "exec", "env", "nohup"];

fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// Code in a markdown text: fenced block lines and inline `spans`.
fn code_fragments(text: &str) -> Vec<String> {
    let mut fragments = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            fragments.push(line.to_string());
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let Some(span) = parts.next() {
            fragments.push(span.to_string());
            parts.next();
        }
    }
    fragments
}

/// The help text and subcommand names of one command path.
struct Help {
    text: String,
    subcommands: BTreeSet<String>,
}

fn help_of(bin: &Path, path: &[String]) -> Help {
    let out = Command::new(bin)
        .args(path)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(
        out.status.success(),
        "`{} {} --help` failed: {}",
        bin.display(),
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut subcommands = BTreeSet::new();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                in_commands = false;
                continue;
            }
            if let Some(name) = line.split_whitespace().next() {
                subcommands.insert(name.to_string());
            }
        }
    }
    Help { text, subcommands }
}

/// One command line found in the docs: the binary's name, the subcommand
/// path and the flags given to it.
#[derive(Debug)]
struct Usage {
    file: String,
    fragment: String,
    bin: &'static str,
    words: Vec<String>,
    flags: Vec<String>,
}

fn clean_token(token: &str) -> &str {
    token.trim_matches(|c: char| "[](){},;`'\"".contains(c))
}

fn usages_in(file: &str, fragment: &str) -> Vec<Usage> {
    let mut usages = Vec::new();
    let code = fragment.split(" #").next().unwrap_or("");
    for piece in code.split(['|', ';', '&', '(', ')', '$']) {
        let tokens: Vec<&str> = piece.split_whitespace().collect();
        // An invocation: a path to the binary anywhere (`target/release/shoal`),
        // or its bare name at the start of a command (after `watch`, `VAR=x`).
        let Some(at) = tokens.iter().enumerate().position(|(i, t)| {
            let t = clean_token(t);
            let path = t.ends_with("/shoal") || t.ends_with("/shoal-sim");
            let bare = (t == "shoal" || t == "shoal-sim")
                && tokens[..i]
                    .iter()
                    .all(|before| LAUNCHERS.contains(before) || before.contains('='));
            path || bare
        }) else {
            continue;
        };
        let bin = if clean_token(tokens[at]).ends_with("shoal-sim") {
            "shoal-sim"
        } else {
            "shoal"
        };
        let mut words = Vec::new();
        let mut flags = Vec::new();
        for token in &tokens[at + 1..] {
            let token = clean_token(token);
            if token == "--" {
                break;
            }
            if let Some(flag) = token.strip_prefix("--") {
                let name = flag.split('=').next().unwrap_or("");
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    flags.push(format!("--{name}"));
                }
            } else if flags.is_empty()
                && !token.is_empty()
                && token.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                words.push(token.to_string());
            }
        }
        usages.push(Usage {
            file: file.to_string(),
            fragment: fragment.trim().to_string(),
            bin,
            words,
            flags,
        });
    }
    usages
}

#[test]
fn every_command_line_in_the_docs_uses_existing_subcommands_and_flags() {
    let bins: BTreeMap<&str, &Path> = [("shoal", shoal()), ("shoal-sim", shoal_sim())].into();
    let mut helps: BTreeMap<(String, Vec<String>), Help> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut checked_flags = 0;
    for path in doc_files() {
        let text = std::fs::read_to_string(&path).expect("read doc");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for fragment in code_fragments(&text) {
            for usage in usages_in(&file, &fragment) {
                let bin = bins[usage.bin];
                // The longest prefix of the words that names subcommands.
                let mut command = Vec::new();
                for word in &usage.words {
                    let key = (usage.bin.to_string(), command.clone());
                    let help = helps.entry(key).or_insert_with(|| help_of(bin, &command));
                    if help.subcommands.contains(word) {
                        command.push(word.clone());
                    } else {
                        break;
                    }
                }
                let key = (usage.bin.to_string(), command.clone());
                let help = helps.entry(key).or_insert_with(|| help_of(bin, &command));
                if command.is_empty() && !help.subcommands.is_empty() {
                    let first = usage.words.first();
                    let only_global = usage
                        .flags
                        .iter()
                        .all(|f| f == "--help" || f == "--version");
                    if first.is_some() || !only_global {
                        problems.push(format!(
                            "{}: `{}`: no such subcommand of {} ({:?})",
                            usage.file, usage.fragment, usage.bin, first
                        ));
                        continue;
                    }
                }
                for flag in &usage.flags {
                    checked_flags += 1;
                    let known = flag == "--help"
                        || flag == "--version"
                        || help
                            .text
                            .split(|c: char| c.is_whitespace() || c == ',')
                            .any(|word| word == flag);
                    if !known {
                        problems.push(format!(
                            "{}: `{}`: `{} {}` has no flag {}",
                            usage.file,
                            usage.fragment,
                            usage.bin,
                            command.join(" "),
                            flag
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked_flags > 50,
        "the docs name only {checked_flags} flags: is the parser broken?"
    );
    assert!(
        problems.is_empty(),
        "docs name what the binaries do not have:\n{}",
        problems.join("\n")
    );
}

fn metric_names_in_docs() -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for path in doc_files() {
        let text = std::fs::read_to_string(&path).expect("read doc");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(found) = text[from..].find("shoal_") {
            let start = from + found;
            from = start + "shoal_".len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| start + n);
            let name = &text[start..end];
            let wildcard = text[end..].starts_with('*') || name.ends_with('_');
            let rust_path = text[end..].starts_with("::");
            if wildcard || rust_path || NOT_METRICS.contains(&name) {
                continue;
            }
            names
                .entry(name.to_string())
                .or_insert_with(|| file.clone());
        }
    }
    names
}

#[test]
fn every_metric_named_in_the_docs_is_exported_by_a_live_agent() {
    let party = Party::new();
    // A gateway trusting one other party, so the per-party federation
    // metrics have a row; the card lists no address, so nothing is dialled.
    let other = Party::named("other");
    let card = Command::new(shoal())
        .args(["fed", "card", "--dir"])
        .arg(other.ca_dir())
        .output()
        .expect("run shoal fed card");
    assert!(card.status.success(), "shoal fed card failed");
    let card_path = other.path().join("other.card.toml");
    std::fs::write(&card_path, &card.stdout).expect("write the card");
    let mut spec = party.spec("n1");
    spec.extra_args = vec![
        "--gateway".into(),
        format!("127.0.0.1:{}", shoal_tests::agents::free_udp_port()),
        "--fed-trust".into(),
        card_path.display().to_string(),
    ];
    let agent = spec.start(&[]);
    let text = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        agent.get("/metrics")
    })
    .expect("the agent serves /metrics");
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .chain(text.lines().filter_map(|line| {
            line.strip_prefix("# TYPE ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        }))
        .collect();
    assert!(
        exported.iter().any(|m| m.starts_with("shoal_")),
        "no shoal_ metric in /metrics at all:\n{text}"
    );
    let named = metric_names_in_docs();
    assert!(
        named.len() > 20,
        "the docs name only {} metrics",
        named.len()
    );
    let missing: Vec<String> = named
        .iter()
        .filter(|(name, _)| {
            let total = format!("{name}_total");
            !exported.contains(*name) && !exported.contains(&total)
        })
        .map(|(name, file)| format!("{file}: {name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics named in the docs but not exported:\n{}",
        missing.join("\n")
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_docs_section_the_code_cites_exists() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["protocol", "node", "sim", "tests", "bench"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut cited = 0;
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("docs/") {
            rest = &rest[at + "docs/".len()..];
            let Some(md) = rest.find(".md") else { break };
            let page = &rest[..md];
            if !page.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                continue;
            }
            let after = &rest[md + ".md".len()..];
            let page_path = root.join("docs").join(format!("{page}.md"));
            let Ok(doc) = std::fs::read_to_string(&page_path) else {
                problems.push(format!("{}: cites missing docs/{page}.md", file.display()));
                continue;
            };
            // "docs/protocol.md §3, §4": every section named after the page.
            let mut sections = after.trim_start();
            while let Some(number) = sections.strip_prefix('§') {
                let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
                cited += 1;
                let heading = format!("§{digits} ");
                if !doc
                    .lines()
                    .any(|line| line.starts_with('#') && line.contains(&heading))
                {
                    problems.push(format!(
                        "{}: cites docs/{page}.md §{digits}, which has no such section",
                        file.display()
                    ));
                }
                sections = number[digits.len()..].trim_start_matches([',', ' ']);
            }
        }
    }
    assert!(
        cited >= 10,
        "only {cited} citations found: is the scan broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
