//! Property tests: substitution and resolution never panic and always terminate, whatever
//! the input (reference cycles, deep nesting, malformed placeholders and YAML).

use dynreg_resource_resolver::{
    DomainConfig, Environment, LineIndex, LoadOptions, Missing, ResolveError, ResolveOptions,
    VarMap, YamlPath, substitute_str,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn lookup(name: &str) -> Option<String> {
    match name.len() % 4 {
        0 => None,
        1 => Some(String::new()),
        2 => Some(format!("${{{name}}}")),
        _ => Some(format!("v-{name}")),
    }
}

fn template() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("${".to_owned()),
            Just("}".to_owned()),
            Just(":".to_owned()),
            Just(":-".to_owned()),
            Just(":?".to_owned()),
            Just("$".to_owned()),
            "[A-Z_]{1,5}",
            "[a-z ./]{0,4}",
            "\\PC{0,3}",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn substitution_never_panics_and_is_consistent(s in template()) {
        let kept = substitute_str(&s, &lookup, Missing::Keep).expect("lenient never fails");
        let strict = substitute_str(&s, &lookup, Missing::Error);
        // Strict fails exactly when lenient had to keep a placeholder, and agrees otherwise.
        match strict {
            Ok(r) => {
                prop_assert!(kept.unresolved.is_empty());
                prop_assert_eq!(&r.text, &kept.text);
            }
            Err(u) => prop_assert_eq!(&u.var, &kept.unresolved[0].var),
        }
        if !s.contains("${") {
            prop_assert_eq!(&kept.text, &s);
            prop_assert!(!kept.changed);
        }
        // Values are inserted verbatim and never rescanned.
        for (var, value) in &kept.used {
            prop_assert_eq!(Some(value.clone()), lookup(var));
            prop_assert!(kept.text.contains(value.as_str()));
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn yaml_loading_and_line_index_never_panic(text in "(\\PC|\n| |-|:|#|\\{|\\}|\\$|\\|){0,200}") {
        let idx = LineIndex::build(&text);
        let _ = idx.line_of(&YamlPath::from_keys(["a", "b"]).index(3));
        let opts = LoadOptions::with_vars(VarMap::new()).lenient();
        let _ = Environment::parse(&text, None, &opts);
        let _ = DomainConfig::parse(&text, None);
    }
}

/// A random tree whose leaves may be `$resource` references to `r0..r{n}` of types `t0..t2`.
fn tree(names: usize) -> impl Strategy<Value = Value> {
    let reference = (
        0..names,
        0..3usize,
        any::<bool>(),
        proptest::option::of(0..2usize),
    )
        .prop_map(|(n, t, required, requires)| {
            let mut m = Map::new();
            m.insert("$resource".into(), json!(format!("r{n}")));
            m.insert("type".into(), json!(format!("t{t}")));
            m.insert("$required".into(), json!(required));
            if let Some(c) = requires {
                m.insert("$requires".into(), json!([format!("cap{c}")]));
            }
            m.insert("default_key".into(), json!("d"));
            Value::Object(m)
        });
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
        Just(json!("${MAYBE_SET:x}")),
        reference,
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z$]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn environment(resources: Vec<(usize, Value)>, strict: Option<bool>) -> Environment {
    let mut types: Map<String, Value> = Map::new();
    for (i, (t, mut v)) in resources.into_iter().enumerate() {
        if i % 3 == 0
            && let Value::Object(m) = &mut v
        {
            m.insert("capabilities".into(), json!(["cap0"]));
        }
        types
            .entry(format!("t{}", t % 3))
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(format!("r{i}"), v);
    }
    let mut doc = json!({"name": "prop", "resources": types});
    if let Some(s) = strict {
        doc["settings"] = json!({"strict_resources": s});
    }
    // JSON is YAML: go through the real loader.
    Environment::parse(
        &doc.to_string(),
        None,
        &LoadOptions::with_vars(VarMap::new()),
    )
    .expect("generated environment loads")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn resolution_never_panics_and_terminates(
        resources in proptest::collection::vec((0..3usize, tree(6)), 0..6),
        app in tree(6),
        strict in proptest::option::of(any::<bool>()),
        env_strict in proptest::option::of(any::<bool>()),
    ) {
        let env = environment(resources, env_strict);
        let mut opts = ResolveOptions::with_load(LoadOptions::with_vars(VarMap::new().with("MAYBE_SET", "yes")));
        opts.strict = strict;
        opts.max_nodes = 50_000;
        match DomainConfig::from_value(app).resolve_with(&env, &opts) {
            Ok(r) => prop_assert!(!r.value().to_string().contains("\"$resource\"")),
            Err(e) => {
                // Every error renders and names a location or input.
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn deep_nesting_terminates_with_a_result(depth in 0usize..600, wrap_in_list in any::<bool>()) {
        let env = environment(vec![(0, json!({"backend": "memory"}))], None);
        let mut v = json!({"$resource": "r0", "type": "t0"});
        for i in 0..depth {
            v = if wrap_in_list && i % 2 == 0 { json!([v]) } else { json!({"k": v}) };
        }
        let r = DomainConfig::from_value(v).resolve_with(&env, &ResolveOptions::with_load(LoadOptions::with_vars(VarMap::new())));
        if depth <= 200 {
            prop_assert!(r.is_ok(), "{:?}", r.err());
        } else if depth > 260 {
            let too_deep = matches!(r, Err(ResolveError::TooDeep { .. }));
            prop_assert!(too_deep, "expected TooDeep");
        }
    }

    #[test]
    fn cycles_of_any_length_are_reported(len in 1usize..12) {
        // r0 -> r1 -> ... -> r{len-1} -> r0
        let resources: Vec<(usize, Value)> = (0..len)
            .map(|i| (0, json!({"next": {"$resource": format!("r{}", (i + 1) % len), "type": "t0"}})))
            .collect();
        // `environment` adds capabilities to every third resource; harmless here.
        let env = environment(resources, None);
        let app = json!({"x": {"$resource": "r0", "type": "t0"}});
        let err = DomainConfig::from_value(app)
            .resolve_with(&env, &ResolveOptions::with_load(LoadOptions::with_vars(VarMap::new())))
            .unwrap_err();
        match err {
            ResolveError::ReferenceCycle { chain, .. } => prop_assert_eq!(chain.matches("->").count(), len),
            other => prop_assert!(false, "unexpected {}", other),
        }
    }
}
