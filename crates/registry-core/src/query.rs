//! List queries: status, metadata filter, sort, limit and offset, with one in-process evaluator
//! that backends without server-side evaluation share.

use std::borrow::Borrow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};
use crate::model::{Registration, Status};

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Ascending; missing values last.
    #[default]
    Asc,
    /// Descending; missing values first (the original's behaviour).
    Desc,
}

impl SortOrder {
    /// `"asc"` or `"desc"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
}

/// A sort key: `bot_id`, `status`, `created_at`, `updated_at`, `last_accessed_at`, `revision`
/// or `metadata.<key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortSpec {
    /// The field.
    pub field: String,
    /// The direction.
    pub order: SortOrder,
}

impl SortSpec {
    /// Ascending by `field`.
    pub fn asc(field: impl Into<String>) -> Self {
        SortSpec {
            field: field.into(),
            order: SortOrder::Asc,
        }
    }

    /// Descending by `field`.
    pub fn desc(field: impl Into<String>) -> Self {
        SortSpec {
            field: field.into(),
            order: SortOrder::Desc,
        }
    }

    /// Parses the wire form `field[:asc|desc]`.
    pub fn parse(entry: &str) -> Result<SortSpec> {
        let (field, order) = match entry.split_once(':') {
            Some((f, o)) => (f, o),
            None => (entry, "asc"),
        };
        if field.is_empty() {
            return Err(RegistryError::InvalidQuery {
                reason: format!("sort entry '{entry}' has an empty field"),
            });
        }
        let order = match order.to_ascii_lowercase().as_str() {
            "asc" => SortOrder::Asc,
            "desc" => SortOrder::Desc,
            other => {
                return Err(RegistryError::InvalidQuery {
                    reason: format!(
                        "sort entry '{entry}' has invalid order '{other}'; must be 'asc' or 'desc'"
                    ),
                });
            }
        };
        let spec = SortSpec {
            field: field.to_owned(),
            order,
        };
        spec.key()?;
        Ok(spec)
    }

    fn key(&self) -> Result<SortKey<'_>> {
        Ok(match self.field.as_str() {
            "bot_id" => SortKey::BotId,
            "status" => SortKey::Status,
            "created_at" => SortKey::CreatedAt,
            "updated_at" => SortKey::UpdatedAt,
            "last_accessed_at" => SortKey::LastAccessedAt,
            "revision" => SortKey::Revision,
            f => match f.strip_prefix("metadata.") {
                Some(k) if !k.is_empty() => SortKey::Metadata(k),
                _ => {
                    return Err(RegistryError::InvalidQuery {
                        reason: format!(
                            "unknown sort field {f:?}; use bot_id, status, created_at, updated_at, \
                             last_accessed_at, revision or metadata.<key>"
                        ),
                    });
                }
            },
        })
    }
}

enum SortKey<'a> {
    BotId,
    Status,
    CreatedAt,
    UpdatedAt,
    LastAccessedAt,
    Revision,
    Metadata(&'a str),
}

/// A list query. The default lists every registration of every status, ordered by `bot_id`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    /// Only this status (`None`: every status).
    pub status: Option<Status>,
    /// Every key must be present in the registration's metadata with an equal value
    /// (`None` or empty: no filter).
    pub filter_metadata: Option<Map<String, Value>>,
    /// Sort keys, most significant first. Without any, results are ordered by `bot_id`.
    pub sort: Vec<SortSpec>,
    /// At most this many results (after `offset`).
    pub limit: Option<usize>,
    /// Skip this many results first.
    pub offset: Option<usize>,
}

impl ListQuery {
    /// Every registration.
    pub fn all() -> Self {
        Self::default()
    }

    /// Registrations of one status.
    pub fn with_status(status: impl Into<Status>) -> Self {
        ListQuery {
            status: Some(status.into()),
            ..Self::default()
        }
    }

    /// Adds a metadata equality filter.
    pub fn filter(mut self, key: impl Into<String>, value: Value) -> Self {
        self.filter_metadata
            .get_or_insert_with(Map::new)
            .insert(key.into(), value);
        self
    }

    /// Adds a sort key.
    pub fn sort_by(mut self, spec: SortSpec) -> Self {
        self.sort.push(spec);
        self
    }

    /// Sets the limit.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the offset.
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Whether the query needs no in-process evaluation: no sort and no metadata filter, so a
    /// database can filter by status and page in `bot_id` order by itself.
    pub fn is_plain(&self) -> bool {
        self.sort.is_empty() && self.filter_metadata.as_ref().is_none_or(Map::is_empty)
    }

    /// For `count_where` on backends that cannot evaluate metadata filters: the list query to
    /// count when `filter_metadata` is non-empty, `None` when a plain count will do.
    pub fn counting(
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Option<ListQuery> {
        filter_metadata
            .filter(|f| !f.is_empty())
            .map(|f| ListQuery {
                status: status.cloned(),
                filter_metadata: Some(f.clone()),
                ..ListQuery::default()
            })
    }

    /// Checks the sort fields; backends call this before any I/O.
    pub fn validate(&self) -> Result<()> {
        for s in &self.sort {
            s.key()?;
        }
        Ok(())
    }

    /// Whether a registration passes the status and metadata filters.
    pub fn matches(&self, reg: &Registration) -> bool {
        if self.status.as_ref().is_some_and(|s| &reg.status != s) {
            return false;
        }
        matches_metadata(reg, self.filter_metadata.as_ref())
    }

    /// Filters, sorts and paginates `regs` in process: the reference semantics every backend
    /// must give.
    pub fn apply<R: Borrow<Registration>>(&self, mut regs: Vec<R>) -> Result<Vec<R>> {
        self.validate()?;
        regs.retain(|r| self.matches(r.borrow()));
        self.sort_and_paginate(regs)
    }

    /// Sorts (stable; by `bot_id` when no sort is given) and paginates already filtered rows.
    pub fn sort_and_paginate<R: Borrow<Registration>>(&self, mut regs: Vec<R>) -> Result<Vec<R>> {
        let keys: Vec<(SortKey<'_>, SortOrder)> = self
            .sort
            .iter()
            .map(|s| s.key().map(|k| (k, s.order)))
            .collect::<Result<_>>()?;
        regs.sort_by(|a, b| {
            let (a, b) = (a.borrow(), b.borrow());
            for (key, order) in &keys {
                let ord = compare_field(key, a, b, *order);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            a.bot_id.cmp(&b.bot_id)
        });
        Ok(paginate(regs, self.offset, self.limit))
    }
}

/// Applies `offset` then `limit` (`limit = 0` gives nothing).
pub fn paginate<T>(items: Vec<T>, offset: Option<usize>, limit: Option<usize>) -> Vec<T> {
    let offset = offset.unwrap_or(0);
    let iter = items.into_iter().skip(offset);
    match limit {
        Some(l) => iter.take(l).collect(),
        None => iter.collect(),
    }
}

/// Whether `reg.metadata` has every key of `filter` with an equal value.
pub fn matches_metadata(reg: &Registration, filter: Option<&Map<String, Value>>) -> bool {
    filter.is_none_or(|f| f.iter().all(|(k, v)| reg.metadata.get(k) == Some(v)))
}

fn compare_field(
    key: &SortKey<'_>,
    a: &Registration,
    b: &Registration,
    order: SortOrder,
) -> Ordering {
    let ord = match key {
        SortKey::BotId => a.bot_id.cmp(&b.bot_id),
        SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
        SortKey::CreatedAt => a.created_at.cmp(&b.created_at),
        SortKey::UpdatedAt => a.updated_at.cmp(&b.updated_at),
        SortKey::LastAccessedAt => a.last_accessed_at.cmp(&b.last_accessed_at),
        SortKey::Revision => a.revision.cmp(&b.revision),
        SortKey::Metadata(k) => {
            let (va, vb) = (a.metadata.get(*k), b.metadata.get(*k));
            // Missing (or null) values sort last ascending and first descending, as in the original.
            match (present(va), present(vb)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => {
                    return if order == SortOrder::Asc {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    };
                }
                (Some(_), None) => {
                    return if order == SortOrder::Asc {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                }
                (Some(x), Some(y)) => compare_json(x, y),
            }
        }
    };
    if order == SortOrder::Desc {
        ord.reverse()
    } else {
        ord
    }
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// A total order over JSON values: booleans < numbers < strings < arrays < objects; within a
/// type, the natural order (mixed types never fail, unlike the original's TypeError).
pub fn compare_json(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x.total_cmp(&y)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare_json(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(_), Value::Object(_)) => {
            crate::hash::canonical_json(a).cmp(&crate::hash::canonical_json(b))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}
