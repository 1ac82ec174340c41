//! Element updates between two specs of one table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::spec::FilterSpec;

/// A rendered table split into its skeleton (declarations and chains) and
/// the elements of each set and map.
struct Split {
    skeleton: String,
    /// (`set`|`map`, name) -> elements as rendered (`key` or `key : value`).
    elems: BTreeMap<(String, String), BTreeSet<String>>,
}

fn split(text: &str) -> Split {
    let mut skeleton = String::new();
    let mut elems = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("set ").or_else(|| t.strip_prefix("map ")) {
            if let Some(name) = rest.strip_suffix(" {") {
                let kind = if t.starts_with("set ") { "set" } else { "map" };
                let key = (kind.to_owned(), name.to_owned());
                elems.insert(key.clone(), BTreeSet::new());
                current = Some(key);
            }
        } else if t == "}" {
            current = None;
        }
        if let (Some(key), Some(list)) = (&current, t.strip_prefix("elements = { ")) {
            let list = list.strip_suffix(" }").unwrap_or(list);
            if let Some(set) = elems.get_mut(key) {
                set.extend(list.split(", ").map(str::to_owned));
            }
            continue;
        }
        skeleton.push_str(line);
        skeleton.push('\n');
    }
    Split { skeleton, elems }
}

fn map_key(elem: &str) -> &str {
    elem.split(" : ").next().unwrap_or(elem)
}

/// The nft script that turns table `old` into `new` by adding and deleting
/// set and map elements only, in one transaction; `None` when the tables
/// differ in more than elements (rules, set types), so the whole table must
/// be replaced. An empty script means nothing changed.
pub fn render_update(old: &FilterSpec, new: &FilterSpec, table: &str) -> Option<String> {
    let (a, b) = (
        split(&old.render_table(table)),
        split(&new.render_table(table)),
    );
    if a.skeleton != b.skeleton {
        return None;
    }
    let mut deletes = String::new();
    let mut adds = String::new();
    let empty = BTreeSet::new();
    for ((kind, name), new_elems) in &b.elems {
        let old_elems = a.elems.get(&(kind.clone(), name.clone())).unwrap_or(&empty);
        let gone: Vec<&str> = old_elems
            .difference(new_elems)
            .map(|e| {
                if kind == "map" {
                    map_key(e)
                } else {
                    e.as_str()
                }
            })
            .collect();
        let came: Vec<&str> = new_elems
            .difference(old_elems)
            .map(String::as_str)
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(
                deletes,
                "delete element inet {table} {name} {{ {} }}",
                gone.join(", ")
            );
        }
        if !came.is_empty() {
            let _ = writeln!(
                adds,
                "add element inet {table} {name} {{ {} }}",
                came.join(", ")
            );
        }
    }
    deletes.push_str(&adds);
    Some(deletes)
}

/// What a filter update sent to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterChange {
    /// Nothing: the table already matched.
    #[default]
    Unchanged,
    /// Set and map elements added/deleted in one transaction.
    Elements,
    /// The whole table replaced in one transaction.
    Table,
}
