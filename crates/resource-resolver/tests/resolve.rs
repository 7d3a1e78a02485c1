//! `$resource` resolution rules (the original), through the
//! public API.

use dynreg_resource_resolver::{
    DomainConfig, Environment, LoadOptions, ResolveError, ResolveOptions, VarMap,
};
use serde_json::json;

const ENV: &str = "\
name: staging
resources:
  databases:
    conversations:
      backend: postgres
      table: conversations
    registry:
      backend: sqlite
      path: ${DATA_DIR:./data}/registry.sqlite3
    primary:
      backend: postgres
      password: ${DB_PASSWORD}
  vector_stores:
    main:
      backend: pgvector
      capabilities: [similarity, metadata_filter]
      database:
        $resource: conversations
        type: databases
    bare:
      backend: faiss
  loops:
    a: {next: {$resource: b, type: loops}}
    b: {next: {$resource: a, type: loops}}
    self: {me: {$resource: self, type: loops}}
";

fn vars() -> VarMap {
    VarMap::new()
        .with("DB_PASSWORD", "Tr0ub4dor&3")
        .with("DATA_DIR", "/srv/data")
}

fn env() -> Environment {
    Environment::parse(
        ENV,
        Some("envs/staging.yaml".into()),
        &LoadOptions::with_vars(vars()),
    )
    .unwrap()
}

fn opts() -> ResolveOptions {
    ResolveOptions::with_load(LoadOptions::with_vars(vars()))
}

fn resolve(app: &str) -> Result<serde_json::Value, ResolveError> {
    resolve_with(app, opts())
}

fn resolve_with(app: &str, o: ResolveOptions) -> Result<serde_json::Value, ResolveError> {
    DomainConfig::parse(app, Some("domains/app.yaml".into()))?
        .resolve_with(&env(), &o)
        .map(|r| r.into_value())
}

#[test]
fn environment_values_win_over_inline_defaults() {
    let v =
        resolve("db:\n  $resource: conversations\n  type: databases\n  pool_size: 5\n  table: x\n")
            .unwrap();
    assert_eq!(
        v["db"],
        json!({"backend": "postgres", "table": "conversations", "pool_size": 5})
    );
}

#[test]
fn nested_references_inside_resources_are_resolved() {
    let v = resolve("vs: {$resource: main, type: vector_stores}\n").unwrap();
    assert_eq!(
        v["vs"]["database"],
        json!({"backend": "postgres", "table": "conversations"})
    );
    let v = resolve("list:\n  - {$resource: registry, type: databases}\n  - plain\n").unwrap();
    assert_eq!(v["list"][0]["path"], json!("/srv/data/registry.sqlite3"));
    assert_eq!(v["list"][1], json!("plain"));
}

#[test]
fn type_defaults_to_default() {
    let env = Environment::parse(
        "resources:\n  default:\n    thing: {x: 1}\n",
        None,
        &LoadOptions::with_vars(VarMap::new()),
    )
    .unwrap();
    let r = DomainConfig::parse("t: {$resource: thing}\n", None)
        .unwrap()
        .resolve_with(&env, &opts())
        .unwrap();
    assert_eq!(r.get("t"), Some(&json!({"x": 1})));
}

#[test]
fn missing_resource_strict_is_an_error_with_location() {
    let err = resolve("a:\n  b:\n    $resource: nope\n    type: databases\n").unwrap_err();
    match &err {
        ResolveError::ResourceNotFound {
            kind,
            name,
            environment,
            at,
            ..
        } => {
            assert_eq!(
                (kind.as_str(), name.as_str(), environment.as_str()),
                ("databases", "nope", "staging")
            );
            assert_eq!(at.path, "a.b");
            assert_eq!(at.line, Some(2));
            assert_eq!(
                at.file.as_deref(),
                Some(std::path::Path::new("domains/app.yaml"))
            );
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn missing_resource_lenient_uses_inline_defaults() {
    let app = "a: {$resource: nope, type: databases, backend: memory}\n";
    let v = resolve_with(app, opts().strict(Some(false))).unwrap();
    assert_eq!(v["a"], json!({"backend": "memory"}));
    let v = resolve("a: {$resource: nope, type: databases, $required: false, backend: memory}\n")
        .unwrap();
    assert_eq!(v["a"], json!({"backend": "memory"}));
    let v = resolve("a: {$resource: nope, $required: 'FALSE'}\n").unwrap();
    assert_eq!(v["a"], json!({}));
}

#[test]
fn strictness_precedence() {
    // $required beats the option; $requires implies required; the environment setting is used
    // when the option defers.
    let app = "a: {$resource: nope, $required: true}\n";
    assert!(matches!(
        resolve_with(app, opts().strict(Some(false))),
        Err(ResolveError::ResourceNotFound { .. })
    ));
    let app = "a: {$resource: nope, $requires: [x]}\n";
    assert!(matches!(
        resolve_with(app, opts().strict(Some(false))),
        Err(ResolveError::ResourceNotFound { .. })
    ));
    let lenient_env = Environment::parse(
        "settings: {strict_resources: 'false'}\n",
        None,
        &LoadOptions::with_vars(VarMap::new()),
    )
    .unwrap();
    let app = DomainConfig::parse("a: {$resource: nope, k: 1}\n", None).unwrap();
    assert_eq!(
        app.resolve_with(&lenient_env, &opts()).unwrap().get("a"),
        Some(&json!({"k": 1}))
    );
    assert!(
        app.resolve_with(&lenient_env, &opts().strict(Some(true)))
            .is_err()
    );
    // Neither given: strict.
    assert!(matches!(
        resolve("a: {$resource: nope}\n"),
        Err(ResolveError::ResourceNotFound { .. })
    ));
}

#[test]
fn cycles_are_detected_and_reported_with_the_chain() {
    for (app, chain) in [
        (
            "x: {$resource: a, type: loops}\n",
            "loops/a -> loops/b -> loops/a",
        ),
        (
            "x: {$resource: self, type: loops}\n",
            "loops/self -> loops/self",
        ),
    ] {
        match resolve(app).unwrap_err() {
            ResolveError::ReferenceCycle { chain: c, at } => {
                assert_eq!(c, chain);
                assert!(at.path.starts_with("resources.loops."), "{}", at.path);
                assert_eq!(
                    at.file.as_deref(),
                    Some(std::path::Path::new("envs/staging.yaml"))
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The same resource twice side by side is not a cycle.
    let v = resolve("p: {$resource: conversations, type: databases}\nq: {$resource: conversations, type: databases}\n").unwrap();
    assert_eq!(v["p"], v["q"]);
}

#[test]
fn requires_checks_capabilities_and_fails_when_none_are_declared() {
    let ok = resolve("vs: {$resource: main, type: vector_stores, $requires: [similarity]}\n");
    assert!(ok.is_ok());
    match resolve("vs: {$resource: main, type: vector_stores, $requires: [similarity, hybrid]}\n")
        .unwrap_err()
    {
        ResolveError::MissingCapabilities {
            missing,
            declares_none,
            ..
        } => {
            assert_eq!(missing, ["hybrid"]);
            assert!(!declares_none);
        }
        other => panic!("unexpected {other}"),
    }
    match resolve("vs: {$resource: bare, type: vector_stores, $requires: [similarity]}\n")
        .unwrap_err()
    {
        ResolveError::MissingCapabilities {
            missing,
            declares_none,
            ..
        } => {
            assert_eq!(missing, ["similarity"]);
            assert!(declares_none);
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn malformed_reference_blocks_are_errors() {
    for (app, needle) in [
        ("a: {$resource: main, $require: [x]}\n", "unknown marker"),
        (
            "a: {$resource: main, type: vector_stores, $requires: similarity}\n",
            "list",
        ),
        ("a: {$resource: main, $required: maybe}\n", "$required"),
        ("a: {$resource: [1]}\n", "$resource"),
        ("a: {$resource: x, type: 3}\n", "type"),
        (
            "a: {$resourc: main, $required: false}\n",
            "without $resource",
        ),
        ("a: {b: {$requires: [x]}}\n", "without $resource"),
    ] {
        let err = resolve(app).unwrap_err();
        assert!(
            matches!(err, ResolveError::InvalidReference { .. }),
            "{app}: {err}"
        );
        assert!(err.to_string().contains(needle), "{app}: {err}");
        assert!(err.to_string().contains("domains/app.yaml:1"), "{err}");
    }
}

#[test]
fn app_placeholders_are_substituted_only_where_they_survive() {
    // `table` is overridden by the environment, so its unset variable is never needed.
    let v = resolve("db: {$resource: conversations, type: databases, table: '${UNSET_TABLE}', extra: '${DATA_DIR}/x'}\n")
        .unwrap();
    assert_eq!(v["db"]["table"], json!("conversations"));
    assert_eq!(v["db"]["extra"], json!("/srv/data/x"));
    let err = resolve("top: '${UNSET_TOP}'\n").unwrap_err();
    assert!(
        matches!(&err, ResolveError::MissingVariable { var, .. } if var == "UNSET_TOP"),
        "{err}"
    );
    // Marker values are substituted too.
    let v = resolve("db: {$resource: '${WHICH:conversations}', type: databases}\n").unwrap();
    assert_eq!(v["db"]["backend"], json!("postgres"));
}

#[test]
fn lenient_substitution_of_the_app_config_is_reported() {
    let mut o = opts();
    o.load = LoadOptions::with_vars(vars()).lenient();
    let r = DomainConfig::parse("a: '${NOT_SET}'\n", None)
        .unwrap()
        .resolve_with(&env(), &o)
        .unwrap();
    assert_eq!(r.get("a"), Some(&json!("${NOT_SET}")));
    assert!(!r.is_complete());
    assert_eq!(r.unresolved_vars()[0].var, "NOT_SET");
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let secret = "Tr0ub4dor&3";
    let r = DomainConfig::parse("db: {$resource: primary, type: databases}\n", None)
        .unwrap()
        .resolve_with(&env(), &opts())
        .unwrap();
    assert_eq!(r.get("db.password"), Some(&json!(secret)));
    let dbg = format!("{r:?} {:?}", env());
    assert!(
        !dbg.contains(secret) && dbg.contains("${DB_PASSWORD}"),
        "{dbg}"
    );
    // An error whose text would include the value.
    let env = Environment::parse(
        "resources:\n  databases:\n    x: {$resource: '${DB_PASSWORD}', type: databases}\n",
        None,
        &LoadOptions::with_vars(vars()),
    )
    .unwrap();
    let err = DomainConfig::parse("a: {$resource: x, type: databases}\n", None)
        .unwrap()
        .resolve_with(&env, &opts())
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(secret) && text.contains("${DB_PASSWORD}"),
        "{text}"
    );
}

#[test]
fn portability_findings_name_yaml_paths_and_lines() {
    let app = "\
bot:
  storage:
    path: /home/alice/bots
  llm:
    url: http://localhost:8080/v1
  ok: ${DATA_PATH:/default/path}
  also_ok: ./data/vectors
";
    let d = DomainConfig::parse(app, Some("domains/bad.yaml".into())).unwrap();
    let f = d.portability_findings();
    let summary: Vec<(String, Option<usize>, String)> = f
        .iter()
        .map(|x| (x.at.path.clone(), x.at.line, x.matched.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "bot.storage.path".to_owned(),
                Some(3),
                "/home/alice".to_owned()
            ),
            (
                "bot.llm.url".to_owned(),
                Some(5),
                "localhost:8080".to_owned()
            ),
        ]
    );
    let err = d.resolve_with(&env(), &opts()).unwrap_err();
    assert!(matches!(err, ResolveError::NotPortable { .. }));
    let text = err.to_string();
    assert!(
        text.contains("domains/bad.yaml:3, at bot.storage.path"),
        "{text}"
    );
    // Opting out of the check resolves it.
    let mut o = opts();
    o.check_portability = false;
    assert!(d.resolve_with(&env(), &o).is_ok());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let mut v = json!({"$resource": "conversations", "type": "databases"});
    for _ in 0..400 {
        v = json!({ "n": v });
    }
    let err = DomainConfig::from_value(v)
        .resolve_with(&env(), &opts())
        .unwrap_err();
    assert!(matches!(err, ResolveError::TooDeep { .. }), "{err}");
}

#[test]
fn reference_fan_out_is_bounded() {
    // Each level references the previous one 8 times: 8^8 nodes if expanded.
    let mut yaml = String::from("resources:\n  bomb:\n    l0: {leaf: 1}\n");
    for i in 1..=8 {
        let refs: Vec<String> = (0..8)
            .map(|j| format!("r{j}: {{$resource: l{}, type: bomb}}", i - 1))
            .collect();
        yaml.push_str(&format!("    l{i}: {{{}}}\n", refs.join(", ")));
    }
    let env = Environment::parse(&yaml, None, &LoadOptions::with_vars(VarMap::new())).unwrap();
    let mut o = opts();
    o.max_nodes = 20_000;
    let err = DomainConfig::parse("x: {$resource: l8, type: bomb}\n", None)
        .unwrap()
        .resolve_with(&env, &o)
        .unwrap_err();
    assert!(matches!(err, ResolveError::TooLarge { .. }), "{err}");
}
