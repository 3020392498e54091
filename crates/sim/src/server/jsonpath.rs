//! The JSONPath subset printer columns use: `.a.b`, `.a[0].b`, `.a[*].b` and
//! `.a[?(@.type=="Ready")].status`. Like the API server, a column shows the first match.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let inner = &r[..close];
            rest = &r[close + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = f.split_once("==")?;
                steps.push(Step::Filter(
                    k.trim().to_string(),
                    v.trim().trim_matches(['"', '\'']).to_string(),
                ));
            } else {
                let quoted = inner.trim_matches(['"', '\'']);
                steps.push(Step::Field(quoted.to_string()));
            }
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The first value `path` selects in `obj`, if any.
pub fn first(obj: &Value, path: &str) -> Option<Value> {
    let steps = parse(path)?;
    let mut cur: Vec<&Value> = vec![obj];
    for s in &steps {
        let mut next = Vec::new();
        for v in cur {
            match s {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => next.extend(v.as_array().into_iter().flatten()),
                Step::Filter(k, want) => {
                    next.extend(v.as_array().into_iter().flatten().filter(|e| {
                        e.get(k.as_str()).is_some_and(|x| match x {
                            Value::String(s) => s == want,
                            other => {
                                serde_json::from_str::<Value>(want).ok().as_ref() == Some(other)
                            }
                        })
                    }))
                }
            }
        }
        cur = next;
    }
    cur.into_iter().find(|v| !v.is_null()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_fields_indices_and_filters() {
        let o = json!({"spec": {"version": "v2"}, "status": {"conditions": [
            {"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(first(&o, ".spec.version"), Some(json!("v2")));
        assert_eq!(
            first(&o, ".status.conditions[1].type"),
            Some(json!("Ready"))
        );
        assert_eq!(
            first(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(json!("True"))
        );
        assert_eq!(
            first(&o, ".status.conditions[*].type"),
            Some(json!("Progressing"))
        );
        assert_eq!(first(&o, ".status.resolvedVersion"), None);
        assert_eq!(first(&o, "{.spec.version}"), Some(json!("v2")));
    }
}
