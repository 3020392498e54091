//! ValidatingAdmissionPolicies, evaluated as a real API server does: the stored
//! `admissionregistration.k8s.io/v1` policies and bindings, their CEL run by the `cel`
//! interpreter over `object`, `oldObject`, `request` and `variables`. So the test API
//! server enforces the very policy text `osroll create agent` emits, not a copy of its
//! rules.
//!
//! Covered: `matchConstraints.resourceRules` and `excludeResourceRules` (operations, API
//! groups and versions, `resource/subresource` with wildcards), `matchConditions`,
//! `variables` (in order, each seeing the earlier ones), `validations` with `message`,
//! `messageExpression` and `reason`, `failurePolicy`, and bindings by `policyName` with
//! `validationActions` (only `Deny` acts). Not covered, and so stricter than a real
//! cluster: label selectors in `matchConstraints` and in a binding's `matchResources`
//! are ignored (the policy applies to every matching request), and `paramRef` (`params`
//! is null).

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use crate::rbac::strs;
use crate::server::error::ApiError;

/// API group of the policies.
pub const GROUP: &str = "admissionregistration.k8s.io";

/// One write as admission sees it.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub operation: &'static str,
    /// API group of the resource ("" for core).
    pub group: &'a str,
    /// API version of the request.
    pub version: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource (`status`) or "".
    pub subresource: &'a str,
    /// Namespace or "".
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The requesting user.
    pub user: &'a str,
    /// The node a pod-bound token names (`authentication.kubernetes.io/node-name`).
    pub node_name: Option<&'a str>,
    /// The object after the write (None for DELETE).
    pub object: Option<&'a Value>,
    /// The object before it (None for CREATE).
    pub old_object: Option<&'a Value>,
}

fn any_or(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether `pattern` of a rule's `resources` names `resource`/`sub`.
fn resource_matches(pattern: &str, resource: &str, sub: &str) -> bool {
    let (r, s) = pattern.split_once('/').unwrap_or((pattern, ""));
    let r_ok = r == "*" || r == resource;
    let s_ok = if pattern.contains('/') {
        s == "*" || s == sub
    } else {
        sub.is_empty()
    };
    r_ok && s_ok
}

/// Whether one `resourceRules` entry matches the write.
pub fn rule_matches(rule: &Value, a: &Attributes<'_>) -> bool {
    any_or(&strs(rule, "operations"), a.operation)
        && any_or(&strs(rule, "apiGroups"), a.group)
        && any_or(&strs(rule, "apiVersions"), a.version)
        && strs(rule, "resources")
            .iter()
            .any(|p| resource_matches(p, a.resource, a.subresource))
}

fn constraints_match(policy: &Value, a: &Attributes<'_>) -> bool {
    let c = &policy["spec"]["matchConstraints"];
    let rules = |k: &str| {
        c.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    rules("resourceRules").iter().any(|r| rule_matches(r, a))
        && !rules("excludeResourceRules")
            .iter()
            .any(|r| rule_matches(r, a))
}

/// The `request` variable.
fn request(a: &Attributes<'_>) -> Value {
    let extra = match a.node_name {
        Some(n) => json!({ osroll_api::manifests::NODE_NAME_CLAIM: [n] }),
        None => json!({}),
    };
    json!({
        "operation": a.operation,
        "name": a.name,
        "namespace": a.namespace,
        "resource": {"group": a.group, "version": a.version, "resource": a.resource},
        "subResource": a.subresource,
        "userInfo": {"username": a.user, "extra": extra},
    })
}

/// Why evaluating an expression did not give a value.
fn eval(ctx: &Context<'_, '_>, expr: &str) -> Result<Cel, String> {
    let program = Program::compile(expr).map_err(|e| format!("compiling {expr:?}: {e}"))?;
    program
        .execute(ctx)
        .map_err(|e| format!("evaluating {expr:?}: {e}"))
}

fn eval_bool(ctx: &Context<'_, '_>, expr: &str) -> Result<bool, String> {
    match eval(ctx, expr)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!("{expr:?} gave {other:?}, not a bool")),
    }
}

/// The root context of one policy's evaluation: the inputs and its `variables`, each
/// variable seeing those before it (one that fails to evaluate stays undefined, so an
/// expression using it fails).
fn context(policy: &Value, a: &Attributes<'_>) -> Context<'static, 'static> {
    let mut ctx = Context::default();
    let as_cel = |v: Option<&Value>| cel::to_value(v.cloned().unwrap_or(Value::Null));
    ctx.add_variable_from_value("object", as_cel(a.object).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("oldObject", as_cel(a.old_object).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("request", as_cel(Some(&request(a))).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("params", Cel::Null);
    let mut vars: HashMap<String, Cel> = HashMap::new();
    ctx.add_variable_from_value("variables", Cel::from(vars.clone()));
    for v in policy["spec"]["variables"].as_array().into_iter().flatten() {
        let (Some(name), Some(expr)) = (v["name"].as_str(), v["expression"].as_str()) else {
            continue;
        };
        if let Ok(value) = eval(&ctx, expr) {
            vars.insert(name.to_string(), value);
            ctx.add_variable_from_value("variables", Cel::from(vars.clone()));
        }
    }
    ctx
}

/// A denial, as the API server words it.
fn denial(policy: &str, binding: &str, reason: &str, message: &str) -> ApiError {
    let (code, reason) = match reason {
        "Forbidden" => (403, "Forbidden"),
        "Unauthorized" => (401, "Unauthorized"),
        "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    };
    ApiError::denied(
        code,
        reason,
        format!(
            "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {message}"
        ),
    )
}

/// One policy under one binding: `Err` with the denial when it refuses the write.
fn check_policy(policy: &Value, binding: &Value, a: &Attributes<'_>) -> Result<(), ApiError> {
    let pname = policy["metadata"]["name"].as_str().unwrap_or_default();
    let bname = binding["metadata"]["name"].as_str().unwrap_or_default();
    let fail_open = policy["spec"]["failurePolicy"].as_str() == Some("Ignore");
    let on_error = |msg: String| {
        if fail_open {
            Ok(())
        } else {
            Err(denial(pname, bname, "Invalid", &msg))
        }
    };
    let ctx = context(policy, a);
    for c in policy["spec"]["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match eval_bool(&ctx, c["expression"].as_str().unwrap_or_default()) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return on_error(e),
        }
    }
    for v in policy["spec"]["validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let expr = v["expression"].as_str().unwrap_or_default();
        match eval_bool(&ctx, expr) {
            Ok(true) => {}
            Ok(false) => {
                let message = validation_message(&ctx, v, expr);
                let reason = v["reason"].as_str().unwrap_or("Invalid");
                return Err(denial(pname, bname, reason, &message));
            }
            Err(e) => return on_error(e),
        }
    }
    Ok(())
}

/// A failed validation's `messageExpression`, else its `message`, else the expression.
fn validation_message(ctx: &Context<'_, '_>, v: &Value, expr: &str) -> String {
    if let Some(m) = v["messageExpression"].as_str()
        && let Ok(Cel::String(s)) = eval(ctx, m)
    {
        return s.to_string();
    }
    match v["message"].as_str() {
        Some(m) => m.to_string(),
        None => format!("failed expression: {expr}"),
    }
}

/// Admit or deny the write `a` under the stored `policies` and `bindings`: the first
/// denying binding (in name order) refuses it.
pub fn admit(
    policies: &[Arc<Value>],
    bindings: &[Arc<Value>],
    a: &Attributes<'_>,
) -> Result<(), ApiError> {
    let mut bindings: Vec<&Arc<Value>> = bindings.iter().collect();
    bindings.sort_by_key(|b| {
        b["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    for b in bindings {
        if !strs(&b["spec"], "validationActions")
            .iter()
            .any(|x| x == "Deny")
        {
            continue;
        }
        let wanted = b["spec"]["policyName"].as_str();
        let Some(policy) = policies
            .iter()
            .find(|p| p["metadata"]["name"].as_str() == wanted)
        else {
            continue;
        };
        if constraints_match(policy, a) {
            check_policy(policy, b, a)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
