//! Where `${VAR}` values come from: the process environment or an explicit map (tests, tools).

use std::collections::HashMap;

/// A source of variable values.
pub trait VarSource: Send + Sync {
    /// The value of `name`, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (`std::env::var`; a value that is not UTF-8 counts as unset).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl VarSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables. Its `Debug` shows the names only, never the values.
#[derive(Clone, Default)]
pub struct VarMap(HashMap<String, String>);

impl VarMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value` (builder style).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for VarMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        VarMap(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl std::fmt::Debug for VarMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("VarMap").field(&names).finish()
    }
}

impl VarSource for VarMap {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl<T: VarSource + ?Sized> VarSource for &T {
    fn var(&self, name: &str) -> Option<String> {
        (**self).var(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_debug_hides_values() {
        let m = VarMap::new().with("DB_PASSWORD", "hunter2");
        assert_eq!(m.var("DB_PASSWORD").as_deref(), Some("hunter2"));
        assert!(m.var("OTHER").is_none());
        let dbg = format!("{m:?}");
        assert!(
            dbg.contains("DB_PASSWORD") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }
}
