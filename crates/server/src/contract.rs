//! The OpenAPI document as a contract: what the handlers' annotations leave implicit is added here, once, for
//! every operation — the error responses the server can give (each with the error body's schema), and the
//! constraints it enforces on path parameters (the identifier rule, execution ids). Generated clients and
//! schema-driven testers can then rely on the document for every answer the server gives.

use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// The identifier rule enforced on every identifier (Harness's).
pub const IDENTIFIER_PATTERN: &str = "^[a-zA-Z_][0-9a-zA-Z_$]{0,127}$";
/// Execution ids (ULIDs) and their unique prefixes.
pub const EXECUTION_ID_PATTERN: &str = "^[0-9A-Za-z]{1,64}$";

/// A string schema allowing only `values` (for fields kept as strings in the code).
pub fn one_of(values: &[&str]) -> Schema {
    Schema::Object(
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().map(|v| v.to_string()))).build(),
    )
}

fn string_matching(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern))
}

/// An identifier (Harness's rule).
pub fn identifier() -> Schema {
    Schema::Object(string_matching(IDENTIFIER_PATTERN).build())
}

/// A new custom identifier (roles, resource groups): not starting with `_`, which marks built-in ones.
pub fn custom_identifier() -> Schema {
    Schema::Object(string_matching("^[a-zA-Z][0-9a-zA-Z_$]{0,127}$").build())
}

/// An organization or project in a body: an identifier, or empty / absent for none.
pub fn scope_part() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
            .pattern(Some("^([a-zA-Z_][0-9a-zA-Z_$]{0,127})?$"))
            .build(),
    )
}

/// A list of identifiers.
pub fn identifier_list() -> Schema {
    Schema::Array(utoipa::openapi::schema::ArrayBuilder::new().items(RefOr::T(identifier())).build())
}

/// A list of identifiers, or null.
pub fn optional_identifier_list() -> Schema {
    Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Array, Type::Null]))
            .items(RefOr::T(identifier()))
            .build(),
    )
}

/// An integer given in JSON as a number with no fraction (`600` or `600.0`, as JSON Schema counts them).
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize;
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => Ok(Some(f as i64)),
        Some(f) => Err(serde::de::Error::custom(format!("{f} is not a whole number"))),
    }
}

/// A list of permissions.
pub fn permission_list() -> Schema {
    Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new().items(RefOr::T(one_of(crate::rbac::PERMISSIONS))).build(),
    )
}

/// A resource type permissions are about.
pub fn resource_type() -> Schema {
    let mut types: Vec<&str> = crate::rbac::PERMISSIONS.iter().filter_map(|p| p.split(':').next()).collect();
    types.dedup();
    one_of(&types)
}

/// A password: 8 to 1024 bytes.
pub fn password() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::String).min_length(Some(8)).max_length(Some(1024)).build())
}

/// Execution statuses, as the API names them.
pub fn status_schema() -> Schema {
    one_of(&[
        "Queued",
        "Running",
        "Success",
        "Failed",
        "Aborted",
        "Expired",
        "IgnoreFailed",
        "Skipped",
        "ApprovalWaiting",
        "ApprovalRejected",
        "InterventionWaiting",
        "InputWaiting",
        "Paused",
    ])
}

/// Execution modes.
pub fn mode_schema() -> Schema {
    one_of(&["full", "selective", "rerun", "rerun_stage", "retry"])
}

/// Principal kinds.
pub fn principal_kind_schema() -> Schema {
    one_of(&["user", "service_account"])
}

/// Paths that need no token.
const PUBLIC: &[&str] = &["/api/v1/auth/login", "/api/v1/openapi.json", "/healthz", "/readyz", "/metrics"];

/// Adds error responses and parameter constraints to every operation.
pub struct Contract;

fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build(),
            )
            .build(),
    )
}

fn constrain(p: &mut Parameter) {
    if p.parameter_in != ParameterIn::Path {
        return;
    }
    let pattern = match p.name.as_str() {
        "org" | "project" | "pipeline" | "identifier" | "user" => IDENTIFIER_PATTERN,
        "id" => EXECUTION_ID_PATTERN,
        _ => return,
    };
    if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
        o.pattern = Some(pattern.into());
    } else if p.schema.is_none() {
        p.schema = Some(RefOr::T(Schema::Object(
            ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).build(),
        )));
    }
}

fn complete(path: &str, op: &mut Operation) {
    let public = PUBLIC.contains(&path);
    let mut add = |code: &str, why: &str| {
        op.responses.responses.entry(code.to_string()).or_insert_with(|| error(why));
    };
    add("400", "Malformed request: a bad identifier, parameter or body");
    if !public {
        add("401", "No valid token");
        add("403", "A permission is missing (named in the body)");
    }
    add("404", "Not found, or not visible to the caller");
    add("408", "The request took longer than the server allows");
    add("409", "The state does not allow it");
    if op.request_body.is_some() {
        add("413", "The body is larger than the server accepts");
        add("415", "The body's content type is not accepted");
        add("422", "The YAML, selection or inputs are invalid (diagnostics with line and column)");
    }
    add("429", "Too many requests of this kind at once, or too many failed logins");
    add("500", "The server failed");
    add("503", "The server is shutting down or its store is unavailable");
    for p in op.parameters.iter_mut().flatten() {
        constrain(p);
    }
}

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for p in item.parameters.iter_mut().flatten() {
                constrain(p);
            }
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
            ]
            .into_iter()
            .flatten()
            {
                complete(path, op);
            }
        }
    }
}
