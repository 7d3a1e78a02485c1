//! Repository hygiene, checked by `cargo xtask tidy` and by this crate's tests: every Rust file
//! of the workspace starts with a `//!` doc line, no stubs or debug prints are left in library
//! code, and every crate's manifest opts into the workspace lints.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every problem found, or `Ok(())`.
pub fn check(root: &Path) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!(
                "{rel}: must start with a `//!` line saying what it holds"
            ));
        }
        let in_src = rel.contains("/src/");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // Spelled with concat! so this file does not match itself.
            for bad in [
                concat!("todo", "!("),
                concat!("unimplemented", "!("),
                concat!("dbg", "!("),
            ] {
                if code.contains(bad) {
                    problems.push(format!("{rel}:{}: `{bad}` left in code", n + 1));
                }
            }
            // Test-support modules (conformance suites) print their "skipped:" lines on purpose.
            if in_src
                && !rel.starts_with("xtask")
                && !rel.contains("conformance")
                && code.contains("println!(")
                && !text.contains("allow(clippy::print_stdout)")
            {
                problems.push(format!(
                    "{rel}:{}: println! in library code (use tracing)",
                    n + 1
                ));
            }
        }
    }
    let Ok(crates) = std::fs::read_dir(root.join("crates")) else {
        return Err(vec!["no crates/ directory".into()]);
    };
    for c in crates.flatten() {
        let manifest = c.path().join("Cargo.toml");
        match std::fs::read_to_string(&manifest) {
            Ok(m) if m.contains("[lints]") && m.contains("workspace = true") => {}
            Ok(_) => problems.push(format!(
                "{}: missing `[lints] workspace = true`",
                manifest.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", manifest.display())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn workspace_is_tidy() {
        let root = super::super::workspace_root();
        if let Err(problems) = super::check(&root) {
            panic!("tidy problems:\n{}", problems.join("\n"));
        }
    }

    #[test]
    fn tidy_catches_a_stub() {
        let dir = std::env::temp_dir().join(format!("dynreg-tidy-{}", std::process::id()));
        let src = dir.join("crates/x/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            dir.join("crates/x/Cargo.toml"),
            "[lints]\nworkspace = true\n",
        )
        .unwrap();
        std::fs::write(src.join("lib.rs"), concat!("fn f() { todo", "!() }\n")).unwrap();
        let problems = super::check(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(problems.iter().any(|p| p.contains("//!")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains(concat!("todo", "!("))),
            "{problems:?}"
        );
    }
}
