//! Repository hygiene, checked by `cargo xtask tidy` and by this crate's tests: every Rust file
//! of the workspace starts with a `//!` doc line, no stubs or debug prints are left in library
//! code, every crate's manifest opts into the workspace lints, every workspace dependency is
//! used by some member, and every crate uses each of its `[dependencies]` in its code (a
//! dependency kept only to select features says so with a `# tidy: features only` comment).

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
            // Test-support modules (conformance suites) print their "skipped:" lines on purpose,
            // and the command-line tool's output is its interface.
            if in_src
                && !rel.starts_with("xtask")
                && !rel.starts_with("crates/cli/")
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
    problems.extend(dependency_problems(root));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The dependency names of one `[section]` of a manifest (lines `name = ...` or
/// `name.workspace = true`), each with whether its line says `tidy: features only`.
fn section_deps(manifest: &str, section: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == section;
            continue;
        }
        if !inside || t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((lhs, _)) = t.split_once('=') else {
            continue;
        };
        let name = lhs.trim().trim_end_matches(".workspace").trim();
        if !name.is_empty() {
            out.push((name.to_owned(), t.contains("tidy: features only")));
        }
    }
    out
}

/// Unused workspace dependencies and crate dependencies their code never names.
fn dependency_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut manifests = Vec::new();
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        for c in crates.flatten() {
            manifests.push(c.path());
        }
    }
    manifests.push(root.join("xtask"));
    let texts: Vec<(PathBuf, String)> = manifests
        .iter()
        .filter_map(|dir| {
            let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            Some((dir.clone(), text))
        })
        .collect();
    if let Ok(ws) = std::fs::read_to_string(root.join("Cargo.toml")) {
        for (name, _) in section_deps(&ws, "[workspace.dependencies]") {
            let used = texts.iter().any(|(_, m)| {
                m.lines().any(|l| {
                    let l = l.trim();
                    l.starts_with(&format!("{name}.workspace"))
                        || (l.starts_with(&format!("{name} ")) && l.contains("workspace = true"))
                })
            });
            if !used {
                problems.push(format!(
                    "Cargo.toml: workspace dependency `{name}` is used by no member"
                ));
            }
        }
    }
    for (dir, manifest) in &texts {
        let mut code = String::new();
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            code.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
        for (name, features_only) in section_deps(manifest, "[dependencies]") {
            // Packages whose library is named differently.
            let ident = match name.as_str() {
                "md-5" => "md5".to_owned(),
                other => other.replace('-', "_"),
            };
            if features_only || code.contains(&format!("{ident}::")) {
                continue;
            }
            let rel = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
            problems.push(format!(
                "{rel}/Cargo.toml: dependency `{name}` is never named in src/ (remove it, or mark a features-only dependency `# tidy: features only`)"
            ));
        }
    }
    problems
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
    fn tidy_catches_an_unused_dependency() {
        let dir = std::env::temp_dir().join(format!("dynreg-tidy-deps-{}", std::process::id()));
        let src = dir.join("crates/x/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace.dependencies]\nserde = \"1\"\nunused-dep = \"1\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("crates/x/Cargo.toml"),
            "[dependencies]\nserde.workspace = true\n\n[lints]\nworkspace = true\n",
        )
        .unwrap();
        std::fs::write(src.join("lib.rs"), "//! x\n").unwrap();
        let problems = super::check(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`unused-dep` is used by no member")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`serde` is never named")),
            "{problems:?}"
        );
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
